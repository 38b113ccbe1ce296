"""HubSpot rate limits of the sandbox: the rolling ten-second window per token, search's 5/s, the daily cap.

Separate from the routes because it is time-based bookkeeping with its own lock, and because its
headers and 429 bodies must match the reference (§3) even when nothing else about a request does.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

from .http import SandboxOptions

DEFAULT_DAILY = 250_000  # Free/Starter daily limit, reported in headers when no daily limit is set


class HubSpotLimiter:
    def __init__(self, options: SandboxOptions, portal_id: int) -> None:
        self.enforce = options.rate_limits
        self.limit = options.hubspot_limit
        self.window = options.hubspot_window_seconds
        self.search_per_second = options.hubspot_search_per_second
        self.daily_limit = options.hubspot_daily_limit
        self.retry_after = bool(options.variants.get("hubspot_429_retry_after", False))
        self.portal_id = portal_id
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._search: deque[float] = deque()
        self._day = ""
        self._daily_used = 0

    def admit(self, token: str, search: bool) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """(429 body or None, headers). Refused requests do not use up the window."""
        now = time.monotonic()
        with self._lock:
            day = datetime.now(timezone.utc).strftime("%Y-%m-%d")  # reset at midnight (UTC here)
            if day != self._day:
                self._day, self._daily_used = day, 0
            window = self._windows.setdefault(token, deque())
            while window and window[0] <= now - self.window:
                window.popleft()
            while self._search and self._search[0] <= now - 1.0:
                self._search.popleft()
            daily = self.daily_limit or DEFAULT_DAILY
            if self.enforce and self.daily_limit is not None and self._daily_used >= self.daily_limit:
                return self._refusal("DAILY", "You have reached your daily limit."), self._headers(window, daily, search)
            if search:
                # Exempt from the ten-secondly window; limited per account per second; no rate-limit headers.
                if self.enforce and len(self._search) >= self.search_per_second:
                    return self._refusal("SECONDLY", "You have reached your secondly limit."), {}
                self._search.append(now)
                self._daily_used += 1
                return None, {}
            if self.enforce and len(window) >= self.limit:
                headers = self._headers(window, daily, search)
                if self.retry_after:
                    headers["Retry-After"] = str(max(1, math.ceil(window[0] + self.window - now)))
                body = self._refusal("TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit.")
                body["groupName"] = f"publicapi:private-app-api-calls-ten-secondly:{self.portal_id}"
                return body, headers
            window.append(now)
            self._daily_used += 1
            return None, self._headers(window, daily, search)

    def new_day(self) -> None:
        """Start the daily count again, as midnight in the portal's time zone does."""
        with self._lock:
            self._daily_used = 0

    def _headers(self, window: deque[float], daily: int, search: bool) -> dict[str, str]:
        if search:
            return {}
        now = time.monotonic()
        secondly = max(1, self.limit // 10)
        last_second = sum(1 for t in window if t > now - 1.0)
        return {
            "X-HubSpot-RateLimit-Daily": str(daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, daily - self._daily_used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.window * 1000)),
            "X-HubSpot-RateLimit-Max": str(self.limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.limit - len(window))),
            # Deprecated by HubSpot (no longer enforced) but still sent.
            "X-HubSpot-RateLimit-Secondly": str(secondly),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(max(0, secondly - last_second)),
        }

    @staticmethod
    def _refusal(policy: str, message: str) -> dict[str, Any]:
        # Documented 429 shape: errorType instead of category; correlationId is added by the caller.
        return {"status": "error", "message": message, "errorType": "RATE_LIMIT", "policyName": policy}
