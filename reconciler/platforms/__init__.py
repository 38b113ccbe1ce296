"""Platform adapters: HTTP clients for HubSpot and Mailchimp that speak the vendors' wire format.

They reduce vendor JSON to plain values (reconciler.model and small result dataclasses), so the
pure core never sees HTTP, and they own every retry, rate limit and error mapping.
"""
