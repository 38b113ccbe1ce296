"""Request, response and routing values shared by the sandbox's vendor emulators.

Kept apart from the server so each vendor module (routes + handlers) can be exercised in-process
without sockets, and so both vendors route the same way. Imports nothing from the reconciler.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import parse_qs


class CaseInsensitiveDict(dict):
    """Header mapping with case-insensitive lookups (keys stored lower-cased)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__()
        for key, value in (items or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class Request:
    method: str
    path: str  # without the query string, percent-decoded
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: CaseInsensitiveDict = field(default_factory=CaseInsensitiveDict)
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)  # path parameters from the route
    replay: bool = False  # True when replayed from the state journal (no auth, limits or faults)
    # Wall-clock time (epoch seconds) the request was first handled; the journal keeps it so a
    # replay reproduces the same timestamps. None means "now".
    time: float | None = None
    # Scratch space a vendor fills in `admit` and reads in `handle`/`release` (e.g. rate-limit headers).
    context: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def parse_query(raw: str) -> dict[str, list[str]]:
        return parse_qs(raw, keep_blank_values=True)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        """All values of a repeated parameter, with comma-separated values split."""
        out: list[str] = []
        for value in self.query.get(name, []):
            out.extend(v for v in value.split(",") if v != "")
        return out

    def json(self) -> Any:
        """The parsed body; raises ValueError on malformed JSON (vendors answer 400)."""
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-able value, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"
    mutated: bool = False  # True when the request changed state (journaled for --state)
    endpoint: str = ""  # route name for the request counters, e.g. "GET /3.0/lists/{list_id}/members"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")


Handler = Callable[[Request], Response]


class VendorApi(Protocol):
    """What the server needs from each emulated vendor (HubSpot, Mailchimp).

    The server: picks the vendor whose `owns(path)` is true; calls `admit` (authentication and
    rate limits; an error response ends the request, None admits it and obliges a `release`);
    sleeps `--latency-ms` while admitted (so concurrency limits see slow requests); calls
    `handle`; journals the request when `response.mutated`; and calls `release`. Journal replay
    calls `handle` alone with `request.replay = True`.
    """

    name: str  # "hubspot" | "mailchimp"

    def owns(self, path: str) -> bool: ...

    def admit(self, request: Request) -> Response | None: ...

    def handle(self, request: Request) -> Response: ...

    def release(self, request: Request) -> None: ...

    def error_response(self, status: int) -> Response:
        """The vendor's own body for an injected 500 or 503."""
        ...


class Router:
    """Maps `METHOD /path/{param}` patterns to handlers. First registered match wins."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], str, Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler, name: str | None = None) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern.rstrip("/")) + "/?$"
        self._routes.append((method.upper(), re.compile(regex), name or f"{method.upper()} {pattern}", handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str], str] | None:
        """(handler, path params, endpoint name) or None; the name is used by request counters."""
        for route_method, regex, name, handler in self._routes:
            if route_method != method.upper():
                continue
            found = regex.match(path)
            if found:
                return handler, found.groupdict(), name
        return None

    def allows(self, path: str) -> list[str]:
        """Methods that have a route for `path` (for 405 answers)."""
        return sorted({m for m, regex, _, _ in self._routes if regex.match(path)})


@dataclass(frozen=True)
class SandboxOptions:
    """Switches shared by both emulators (SPEC §7)."""

    rate_limits: bool = False
    hubspot_limit: int = 100  # requests per rolling window per token
    hubspot_window_seconds: float = 10.0
    hubspot_search_per_second: int = 5
    hubspot_daily_limit: int | None = None  # when set, a DAILY 429 once exceeded
    mailchimp_max_connections: int = 10
    latency_ms: int = 0
    fault_rate: float = 0.0
    seed_random: int | None = None
    # Where the vendor reference says [UNCONFIRMED], the default is the documented choice and
    # these switches give the other plausible answer, so clients can be tested against both.
    variants: Mapping[str, Any] = field(default_factory=dict)
