"""Declarative reconciler between HubSpot lists and Mailchimp audiences.

The package is split so the pure core (model, rules, plan) can be reasoned about alone.
"""

__version__ = "0.1.0"
