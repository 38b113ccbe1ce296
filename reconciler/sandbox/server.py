"""The sandbox server: one threaded HTTP/1.1 server on loopback serving the HubSpot and Mailchimp emulators.

Owns everything shared by both vendors (dispatch, request counters, injected faults and latency,
`--state` journaling and compaction) and the `reconcile-sandbox` command; the vendors' wire
behaviour stays in hubspot*.py and mailchimp*.py. Imports nothing from the reconciler.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from .faults import DROP, KINDS, PROCESS_THEN_DROP, FaultInjector, edge_502, malformed, partial_batch, too_many_requests
from .http import CaseInsensitiveDict, Request, Response, SandboxOptions, VendorApi
from .hubspot import HubSpotApi
from .hubspot_state import HubSpotState
from .journal import StateStore, entry_for, request_from
from .seed import SeedError, check_seed, hubspot_part, load_seed, mailchimp_part

DEFAULT_MAILCHIMP_KEY = "sandboxkey-us1"
READ_SUFFIXES = ("/batch/read", "/search")  # POSTs that only read


def _mailchimp_classes() -> tuple[Any, Any] | None:
    """(MailchimpState, MailchimpApi), or None while the Mailchimp emulator is absent."""
    try:
        from .mailchimp import MailchimpApi
        from .mailchimp_state import MailchimpState
    except ImportError:
        return None
    return MailchimpState, MailchimpApi


def is_write(endpoint: str) -> bool:
    """Whether a counter key names a request that asks for a change (not a read that happens to be a POST)."""
    method, _, path = endpoint.partition(" ")
    return method not in ("GET", "HEAD") and not path.endswith(READ_SUFFIXES)


class Sandbox:
    """The in-process API: build from a seed (or a state file), `start()`, point clients at the URLs, `stop()`.

    With `state_file`, an existing file wins over the seed (the seed only starts a new state), so an
    apply followed by a plan sees the converged state; `Sandbox.discard_state(path)` starts over.
    """

    def __init__(self, seed: Mapping[str, Any] | None = None, *, options: SandboxOptions = SandboxOptions(),
                 state_file: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.options = options
        self.host, self.port = host, port
        seed = check_seed(seed or {})
        self._store = StateStore(state_file) if state_file else None
        snapshot, replay = self._store.load() if self._store else (None, [])
        mailchimp = _mailchimp_classes()
        if snapshot is not None:
            self.hubspot = HubSpotState.from_json(snapshot["hubspot"])
            self.mailchimp = mailchimp[0].from_json(snapshot["mailchimp"]) if mailchimp and snapshot.get("mailchimp") else None
        else:
            self.hubspot = HubSpotState.from_seed(hubspot_part(seed))
            self.mailchimp = (mailchimp[0].from_seed({"api_key": DEFAULT_MAILCHIMP_KEY, **mailchimp_part(seed)})
                              if mailchimp else None)
        self.hubspot_api = HubSpotApi(self.hubspot, options)
        self.mailchimp_api = mailchimp[1](self.mailchimp, options) if mailchimp and self.mailchimp else None
        self.vendors: list[VendorApi] = [v for v in (self.hubspot_api, self.mailchimp_api) if v is not None]
        for entry in replay:
            self._vendor_named(entry["vendor"]).handle(request_from(entry))
        self._faults = (FaultInjector(options.fault_rate, options.seed_random, options.variants.get("fault_kinds", KINDS))
                        if options.fault_rate > 0 else None)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._write_lock = threading.Lock()  # orders state changes exactly as the journal records them
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._compactor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        if self._store is not None:
            self.compact(force=True)  # the snapshot exists before the first write is journaled
        server = ThreadingHTTPServer((self.host, self.port), _Handler, bind_and_activate=True)
        server.daemon_threads = True
        server.sandbox = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sandbox-http", daemon=True)
        self._thread.start()
        if self._store is not None:
            self._compactor = threading.Thread(target=self._compact_loop, name="sandbox-compactor", daemon=True)
            self._compactor.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._connections_lock:
            # Keep-alive connections would otherwise go on being served by their threads.
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._compactor is not None:
            self._compactor.join(timeout=30)
            self._compactor = None
        if self._store is not None:
            self.compact()
            self._store.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def discard_state(state_file: str) -> None:
        """Deletes a state file and its journal (what `--sandbox-reset` needs)."""
        StateStore.discard(state_file)

    # ----- addresses and credentials --------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not started; call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def hubspot_base_url(self) -> str:
        return self.base_url

    @property
    def mailchimp_base_url(self) -> str:
        return self.base_url + "/3.0"

    @property
    def hubspot_token(self) -> str:
        return self.hubspot.token

    @property
    def mailchimp_api_key(self) -> str | None:
        return getattr(self.mailchimp, "api_key", None)

    # ----- counters --------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Requests received per endpoint, keyed `METHOD /route/{param}` (faulted and refused ones included)."""
        with self._counts_lock:
            return dict(self._counts)

    def total_requests(self) -> int:
        return sum(self.counters().values())

    def write_requests(self) -> int:
        """Requests to endpoints that change state (searches and batch reads are not writes)."""
        return sum(n for endpoint, n in self.counters().items() if is_write(endpoint))

    def reset_counters(self) -> None:
        with self._counts_lock:
            self._counts.clear()

    # ----- dispatch --------------------------------------------------------------------------

    def _vendor_for(self, path: str) -> VendorApi | None:
        return next((v for v in self.vendors if v.owns(path)), None)

    def _vendor_named(self, name: str) -> VendorApi:
        for vendor in self.vendors:
            if vendor.name == name:
                return vendor
        raise ValueError(f"state journal names vendor {name!r}, which this sandbox does not serve")

    @staticmethod
    def _endpoint(vendor: VendorApi | None, request: Request) -> str:
        if vendor is None:
            return f"{request.method} <unknown path>"
        named = getattr(vendor, "endpoint", None)
        if callable(named):
            return str(named(request))
        found = vendor.router.match(request.method, request.path) if hasattr(vendor, "router") else None
        return found[2] if found else f"{request.method} <unknown {vendor.name} path>"

    def dispatch(self, request: Request) -> Response | None:
        """The answer to one request, or None when the connection must be dropped without one."""
        vendor = self._vendor_for(request.path)
        endpoint = self._endpoint(vendor, request)
        with self._counts_lock:
            self._counts[endpoint] += 1
        fault = self._faults.draw(endpoint) if self._faults else None
        if fault == DROP:
            return None
        if fault == "502":
            return edge_502()
        if fault in ("500", "503"):
            return vendor.error_response(int(fault)) if vendor else Response(int(fault), {"error": "injected fault"})
        if vendor is None:
            return Response(404, {"status": "error", "message": f"Nothing is served at {request.path}"})
        if fault == "429":
            return too_many_requests(vendor.name, self.options.hubspot_window_seconds)
        refusal = vendor.admit(request)
        if refusal is not None:
            return refusal
        try:
            if self.options.latency_ms > 0:
                time.sleep(self.options.latency_ms / 1000)
            if fault == "slow":
                time.sleep(float(self.options.variants.get("slow_ms", 1500)) / 1000)
            if fault in ("hubspot_207", "member_errors"):
                response = partial_batch(endpoint, request, lambda part: self._handle(vendor, part))
            else:
                response = self._handle(vendor, request)
        finally:
            vendor.release(request)
        if fault == "malformed":
            return malformed(response)
        return None if fault in (PROCESS_THEN_DROP, "slow") else response

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """No injected faults and no HubSpot rate limits inside (tests reading state between runs)."""
        faults, self._faults = self._faults, None
        limiter = self.hubspot_api.limiter
        enforce, limiter.enforce = limiter.enforce, False
        try:
            yield
        finally:
            self._faults, limiter.enforce = faults, enforce

    def injected_faults(self) -> dict[str, int]:
        """Faults served so far, by kind (empty without `fault_rate`)."""
        return dict(self._faults.injected) if self._faults else {}

    def _handle(self, vendor: VendorApi, request: Request) -> Response:
        if self._store is None or request.method in ("GET", "HEAD"):
            request.time = time.time()
            return vendor.handle(request)
        with self._write_lock:
            request.time = time.time()
            response = vendor.handle(request)
            if response.mutated:
                self._store.append(entry_for(vendor.name, request))
        return response

    # ----- state file ------------------------------------------------------------------------

    def compact(self, force: bool = False) -> None:
        """Writes the full state and drops the journal it covers (no-op without --state or changes)."""
        store = self._store
        if store is None or not (force or store.dirty):
            return
        with self._write_lock:
            states = {"hubspot": self.hubspot.to_json(),
                      "mailchimp": self.mailchimp.to_json() if self.mailchimp is not None else None}
            covered = store.rotate()
        store.write_snapshot(states, covered)

    def _compact_loop(self) -> None:
        interval = 1.0
        while not self._stopping.wait(interval):
            started = time.monotonic()
            try:
                self.compact()
            except OSError as exc:  # e.g. disk full: keep serving and journaling, try again later
                print(f"sandbox: compaction of {self._store.path if self._store else '?'} failed: {exc}",
                      file=sys.stderr, flush=True)
            # At most about once a second, and never more than a quarter of the time on big states.
            interval = max(1.0, 3 * (time.monotonic() - started))

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            (self._connections.add if alive else self._connections.discard)(conn)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so requests.Session pools connections
    server_version = "reconciler-sandbox"
    timeout = 120  # idle keep-alive connections are closed eventually

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms a request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.sandbox._track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sandbox._track(self.connection, False)  # type: ignore[attr-defined]

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: the sandbox counts requests instead of logging them."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        request = Request(self.command, unquote(split.path), Request.parse_query(split.query),
                          CaseInsensitiveDict(dict(self.headers.items())), body)
        try:
            response = self.server.sandbox.dispatch(request)  # type: ignore[attr-defined]
        except Exception:  # an emulator bug: answer 500 (visible) rather than a silent dropped connection
            traceback.print_exc(file=sys.stderr)
            response = Response(500, {"status": "error", "message": "sandbox internal error (see its stderr)"})
        if response is None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        payload = response.encoded()
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.body is not None or response.status not in (204, 304):
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconcile-sandbox",
                                     description="Local emulator of the HubSpot and Mailchimp APIs (SPEC §7).")
    parser.add_argument("--seed", help="seed file (YAML or JSON); optional when --state already exists")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--state", help="keep state in FILE (loaded at start, journaled, compacted at exit)")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--rate-limits", action="store_true", help="enforce the vendors' rate limits")
    parser.add_argument("--hubspot-limit", type=int, default=100, help="HubSpot requests per window per token")
    parser.add_argument("--hubspot-window", type=float, default=10.0, help="HubSpot rolling window in seconds")
    parser.add_argument("--hubspot-daily-limit", type=int, default=None)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests answered with a fault")
    parser.add_argument("--seed-random", type=int, default=None, help="random seed that makes faults repeatable")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = SandboxOptions(rate_limits=args.rate_limits, hubspot_limit=args.hubspot_limit,
                             hubspot_window_seconds=args.hubspot_window, hubspot_daily_limit=args.hubspot_daily_limit,
                             latency_ms=args.latency_ms, fault_rate=args.fault_rate, seed_random=args.seed_random)
    try:
        seed = load_seed(args.seed) if args.seed else None
        if seed is None and not args.state:
            raise SeedError("reconcile-sandbox: give --seed FILE (or --state FILE holding earlier state)")
        sandbox = Sandbox(seed, options=options, state_file=args.state, host=args.host, port=args.port)
        sandbox.start()
    except (SeedError, ValueError, OSError) as exc:
        print(f"reconcile-sandbox: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(sandbox.base_url, flush=True)
    print(f"serving HubSpot at {sandbox.hubspot_base_url} and Mailchimp at {sandbox.mailchimp_base_url}; "
          "Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
