"""HTTP plumbing shared by the HubSpot and Mailchimp clients: pooling, rate limits, retries, errors.

Separate from the vendor clients so that both retry and report errors the same way, and so that
this policy is tested once, over real HTTP, against the sandbox's fault injection.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import os
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping, Protocol

import requests
import requests.auth
from requests.adapters import HTTPAdapter

from reconciler.errors import DailyLimitReached, PermanentVendorError, TransientVendorError

log = logging.getLogger("reconciler.platforms")

# 423 (HubSpot record lock, 2 s), 477 (HubSpot migration, with Retry-After), 5xx and the CDN's
# 52x are worth a retry; every other 4xx says the request itself is wrong.
RETRY_STATUSES = frozenset({423, 429, 477, 500, 502, 503, 504, 520, 521, 522, 523, 524, 525, 526})
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter (AWS architecture blog's "full jitter")."""

    max_attempts: int = 6
    base_delay: float = 0.5  # seconds; attempt n waits uniform(0, min(max_delay, base * 2**n))
    max_delay: float = 30.0
    max_wait: float = 120.0  # the longest Retry-After or rate-limit wait honoured; longer gives up

    def backoff(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.max_delay, self.base_delay * (2 ** attempt)))


class Limiter(Protocol):
    """Admission control around every request attempt: `acquire` before sending, `release` after."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def pause(self, seconds: float) -> None: ...


class NoLimit:
    def acquire(self) -> None:
        return None

    def release(self) -> None:
        return None

    def pause(self, seconds: float) -> None:
        return None


class RollingWindowLimiter:
    """At most `requests_per_window` requests in any rolling window of `window` seconds, all threads.

    A request occupies a slot from the moment it is sent until `window` seconds after its response
    arrived. The vendor counts it at some instant between those two, so a request sent when the
    slot frees cannot meet it inside the vendor's window, whatever the latency: a run at the limit
    gets no 429s without giving up a slot. `pad` (a share of the window) absorbs a vendor clock
    that runs slightly fast; `margin` slots can be kept spare for other users of the same app.
    """

    def __init__(self, requests_per_window: int, window: float, *, margin: int = 0, pad: float = 0.01) -> None:
        self.capacity = max(1, int(requests_per_window) - margin)
        self.window = float(window) * (1.0 + pad)
        self._done: deque[float] = deque()
        self._in_flight = 0
        self._paused_until = 0.0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                wait: float | None = self._paused_until - now
                if now >= self._paused_until:
                    while self._done and self._done[0] <= now - self.window:
                        self._done.popleft()
                    if self._in_flight + len(self._done) < self.capacity:
                        self._in_flight += 1
                        return
                    # Full: wait for the oldest finished request to leave the window, or for a
                    # request in flight to finish (then its slot has a known expiry).
                    wait = self._done[0] + self.window - now if self._done else None
                self._cond.wait(timeout=wait)

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._done.append(time.monotonic())
            self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """Hold every thread back (after a 429 the vendor's window is full, whatever we counted)."""
        with self._cond:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)


class ConcurrencyLimiter:
    """At most `max_in_flight` requests open at once (Mailchimp's simultaneous-connection limit)."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max(1, int(max_in_flight))
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                wait = self._paused_until - time.monotonic()
            if wait <= 0:
                break
            time.sleep(wait)
        self._slots.acquire()

    def release(self) -> None:
        self._slots.release()

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)


@dataclass(frozen=True)
class VendorResponse:
    status: int
    body: Any  # parsed JSON, or None for an empty or non-JSON body
    headers: Mapping[str, str]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), None when absent."""
    raw = headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


TIMEOUT_ENV = "RECONCILER_HTTP_TIMEOUT"


def _timeout_from_env(timeout: tuple[float, float]) -> tuple[float, float]:
    """`RECONCILER_HTTP_TIMEOUT` (seconds) replaces the read timeout (and caps the connect one):
    for networks where 120 s is too long to wait for an answer, and for tests of slow vendors."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return timeout
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not 0.0 < seconds < 86400.0:
        log.warning("%s=%r is not a number of seconds; using the default timeouts", TIMEOUT_ENV, raw)
        return timeout
    return (min(timeout[0], seconds), seconds)


def _json_expected(response: requests.Response) -> bool:
    """Any non-empty body: both vendors answer JSON for every 2xx with a body, so HTML or text
    there comes from something in between (a proxy, a captive portal), not from the vendor."""
    return bool(response.content and response.content.strip())


def _parse_body(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


_TAGS = re.compile(r"<[^>]+>")


def missing_scopes(body: Any) -> list[str]:
    """The scopes a HubSpot 403 MISSING_SCOPES answer names (`errors[].context.requiredGranularScopes`)."""
    if not isinstance(body, Mapping) or body.get("category") != "MISSING_SCOPES":
        return []
    names: list[str] = []
    for error in body.get("errors") or []:
        context = error.get("context") if isinstance(error, Mapping) else None
        if isinstance(context, Mapping):
            for key in ("requiredGranularScopes", "requiredScopes"):
                names += [str(s) for s in context.get(key) or [] if str(s) not in names]
    return names


def vendor_message(system: str, response: requests.Response, body: Any) -> str:
    """The vendor's own words: HubSpot's `message`, Mailchimp's `title: detail` (+ field errors).

    HTML (a CDN's error page) or a malformed body falls back to its text, tags stripped, cut short.
    """
    if isinstance(body, Mapping):
        if system == "mailchimp" or "title" in body or "detail" in body:
            title = str(body.get("title") or "").strip()
            detail = str(body.get("detail") or "").strip()
            text = f"{title}: {detail}" if title and detail else title or detail
            errors = body.get("errors")
            if isinstance(errors, list):
                parts = [
                    f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
                    for e in errors[:5]
                    if isinstance(e, Mapping) and e.get("message")
                ]
                if parts:
                    text = f"{text} ({'; '.join(parts)})" if text else "; ".join(parts)
            if text:
                return text
        message = body.get("message")
        if message:
            scopes = missing_scopes(body)
            return str(message).strip() + (f" Missing scope(s): {', '.join(scopes)}." if scopes else "")
    text = " ".join(_TAGS.sub(" ", response.text or "").split())
    if not text:
        return response.reason or f"HTTP {response.status_code}"
    return text[:200] + ("..." if len(text) > 200 else "")


class VendorSession(requests.Session):
    """A `requests.Session` for one vendor: base URL, auth headers, pooling, limits and retries.

    Use `call()`; it returns a VendorResponse for the expected statuses and otherwise raises
    TransientVendorError (after the retries), PermanentVendorError (4xx, not retried, with the
    vendor's message) or DailyLimitReached. Secrets given in `secrets` are scrubbed from every
    message and never shown by `repr`.

    A retried mutating request may reach the vendor twice (a connection dropped after the vendor
    processed it): the vendor clients only send writes that are idempotent, or whose repeat the
    client recognises (see each method's docstring).
    """

    def __init__(
        self,
        system: str,
        base_url: str,
        *,
        authorization: str | None = None,
        secrets: Collection[str] = (),
        limiter: Limiter | None = None,
        pool_size: int = 10,
        timeout: tuple[float, float] = (10.0, 120.0),
        retry: RetryPolicy = RetryPolicy(),
        rate_window: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.system = system
        self.base_url = base_url.rstrip("/")
        self.limiter: Limiter = limiter or NoLimit()
        self.timeout = _timeout_from_env(timeout)
        self.retry = retry
        self.rate_window = rate_window
        self._sleep = sleep
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)
        # One pooled connection per concurrent worker; urllib3 must not retry on its own, or a
        # dropped write would be re-sent behind our back and outside the rate limiter.
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self.headers.update({"Accept": "application/json", "User-Agent": "hubspot-mailchimp-reconciler"})
        if authorization:
            # As session auth, not a default header: requests then never swaps in ~/.netrc
            # credentials, and the secret is not in `session.headers` for anyone to print.
            self.auth = _AuthorizationHeader(authorization)
        self._secrets += tuple(authorization.split(" ", 1)[-1:]) if authorization else ()

    def __repr__(self) -> str:
        return f"VendorSession({self.system!r}, {self.base_url!r})"

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        ok: Collection[int] = (200, 201, 204, 207),
    ) -> VendorResponse:
        """Send with retries. Statuses in `ok` are returned (with the parsed body), others raised."""
        url = self.base_url + path
        where = f"{self.system}: {method} {path}"
        error: TransientVendorError | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            response: requests.Response | None = None
            body: Any = None
            wait = 0.0
            self.limiter.acquire()
            try:
                response = self.request(method, url, params=params, json=json, timeout=self.timeout)
                body = _parse_body(response)
            except _TRANSPORT_ERRORS as exc:
                kind = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
                error = TransientVendorError(self.scrub(f"{where} {kind} ({type(exc).__name__})"), system=self.system)
                wait = self.retry.backoff(attempt)
            finally:
                self.limiter.release()
            if response is not None:
                status = response.status_code
                if status in ok and body is None and _json_expected(response):
                    # A 2xx whose JSON is cut short or garbled (a proxy, a truncated transfer) must
                    # not read as "no members" or "no results": that would plan mass changes.
                    error = TransientVendorError(f"{where} answered {status} with malformed JSON",
                                                 system=self.system, status=status, detail="malformed JSON")
                    wait = self.retry.backoff(attempt)
                elif status in ok:
                    return VendorResponse(status, body, response.headers)
                else:
                    message = self.scrub(vendor_message(self.system, response, body))
                    text = f"{where} answered {status}: {message}"
                    if status not in RETRY_STATUSES:
                        raise PermanentVendorError(text, system=self.system, status=status, detail=message)
                    error = TransientVendorError(text, system=self.system, status=status, detail=message)
                    wait = self._wait_for(status, response, body, attempt, text)
            assert error is not None
            if attempt == self.retry.max_attempts:
                break
            if wait > self.retry.max_wait:
                raise TransientVendorError(
                    f"{error}; the vendor asks to wait {wait:.0f} s, more than this run waits ({self.retry.max_wait:.0f} s): "
                    "run again later",
                    system=self.system,
                    status=error.status,
                    detail=error.detail,
                )
            log.info("%s; retry %d/%d in %.1f s", error, attempt, self.retry.max_attempts - 1, wait)
            self._sleep(wait)
        assert error is not None
        raise TransientVendorError(
            f"{error} (gave up after {self.retry.max_attempts} attempts)",
            system=self.system,
            status=error.status,
            detail=error.detail,
        )

    def _wait_for(self, status: int, response: requests.Response, body: Any, attempt: int, text: str) -> float:
        """How long to wait before the next attempt of a retryable answer (or raise DailyLimitReached)."""
        retry_after = _retry_after(response.headers)
        if status == 429 and self.system == "hubspot":
            policy = str(body.get("policyName") or "") if isinstance(body, Mapping) else ""
            message = str(body.get("message") or "") if isinstance(body, Mapping) else ""
            if policy.upper() == "DAILY" or "daily limit" in message.lower():
                raise DailyLimitReached(
                    "hubspot: the portal's DAILY API limit is reached; the run stops here. It resets at "
                    "midnight in the portal's time zone: run again then (changes already applied are kept).",
                    system=self.system,
                    status=status,
                    detail=message,
                )
            if policy.upper() == "SECONDLY" or "secondly limit" in message.lower() and "ten" not in message.lower():
                wait = retry_after if retry_after is not None else 1.0 * attempt
            else:
                # TEN_SECONDLY_ROLLING (or unnamed): the vendor's window is full; wait it out,
                # and hold every other thread back too, or they would each collect a 429.
                interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
                window = float(interval) / 1000.0 if interval and interval.isdigit() else self.rate_window
                wait = retry_after if retry_after is not None else window
            wait += random.uniform(0.0, 0.1 * max(wait, 0.1))
            self.limiter.pause(wait)
            return wait
        if retry_after is not None:
            if status == 429:
                self.limiter.pause(retry_after)
            return retry_after
        if status == 423:
            return 2.0  # HubSpot: "Locks will last for 2 seconds"
        return self.retry.backoff(attempt)


class _AuthorizationHeader(requests.auth.AuthBase):
    def __init__(self, value: str) -> None:
        self._value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._value
        return request

    def __repr__(self) -> str:
        return "<Authorization header>"


def basic_auth_header(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
    return f"Basic {token}"
