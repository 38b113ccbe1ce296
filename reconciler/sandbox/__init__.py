"""The sandbox: a local, faithful emulator of the HubSpot and Mailchimp endpoints the product uses (SPEC §7).

It imports nothing from the rest of the reconciler, so it cannot share a mapping bug with the
clients it checks. Start it in-process with `Sandbox(seed).start()` or run `reconcile-sandbox`.
"""

from .http import SandboxOptions
from .server import Sandbox

__all__ = ["Sandbox", "SandboxOptions"]
