"""observe -> plan -> apply -> observe again: the flows behind `--plan`, `--apply` and `--audit`.

The one place that wires config, platforms, the pure core, rendering and the audit log
together; the CLI only parses arguments and turns exceptions into exit codes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TextIO

from rich.console import Console

from reconciler import errors
from reconciler.audit import AuditLog, apply_lock, change_key, operator_name
from reconciler.errors import ReconcilerError, StalePlan, UnsafePlan
from reconciler.model import Memory, Snapshot
from reconciler.plan import Change, Plan
from reconciler.settings import Config

DEFAULT_SEED = "config/sandbox/seed.yaml"
SANDBOX_STATE = ".reconciler/sandbox-state.json"


@dataclass
class IO:
    """Streams and environment for one command; never global (tests run the CLI in-process)."""

    stdout: TextIO
    stderr: TextIO
    env: Mapping[str, str]
    stdin_isatty: bool = False
    stdout_isatty: bool = False
    stdin: TextIO | None = None
    console: Console = field(init=False)
    err_console: Console = field(init=False)

    def __post_init__(self) -> None:
        width = 120 if not self.stdout_isatty else None
        self.console = Console(file=self.stdout, force_terminal=self.stdout_isatty, width=width,
                               highlight=False, soft_wrap=False)
        self.err_console = Console(file=self.stderr, force_terminal=False, width=120, highlight=False)

    def info(self, message: str) -> None:
        """A progress or status line on stderr (stdout stays for the plan itself)."""
        self.err_console.print(message, markup=False)


@dataclass
class Session:
    """What one command works with: the config, the two clients and, with --sandbox, the sandbox."""

    config: Config
    hubspot: Any
    mailchimp: Any
    audiences: tuple[str, ...]
    sandbox: Any = None


def _select_audiences(config: Config, name: str | None) -> tuple[str, ...]:
    if name is None:
        return tuple(config.audiences)
    if name not in config.audiences:
        known = ", ".join(config.audiences) or "none"
        raise ReconcilerError(f"--audience {name}: no such audience in the config (known: {known})")
    return (name,)


def _start_sandbox(args: Any, io: IO, stack: ExitStack) -> Any:
    from reconciler.sandbox import Sandbox
    from reconciler.sandbox.seed import load_seed

    seed_path = args.sandbox_seed or DEFAULT_SEED
    state_path = Path(SANDBOX_STATE)
    if getattr(args, "sandbox_reset", False) and state_path.exists():
        state_path.unlink()
        journal = Path(str(state_path) + ".journal")
        if journal.exists():
            journal.unlink()
    if not Path(seed_path).exists():
        raise ReconcilerError(f"--sandbox: seed file {seed_path} not found; pass --sandbox-seed FILE")
    state_path.parent.mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(load_seed(seed_path), state_file=str(state_path))
    sandbox.start()
    stack.callback(sandbox.stop)
    io.info(f"sandbox: serving {sandbox.base_url} (state {state_path}; --sandbox-reset starts over)")
    return sandbox


def _with_sandbox_credentials(config: Config, sandbox: Any) -> Config:
    hubspot = dataclasses.replace(config.hubspot, token=sandbox.hubspot_token, base_url=sandbox.base_url)
    mailchimp = dataclasses.replace(config.mailchimp, api_key=sandbox.mailchimp_api_key,
                                    base_url=sandbox.mailchimp_base_url)
    return dataclasses.replace(config, hubspot=hubspot, mailchimp=mailchimp)


@contextmanager
def open_session(args: Any, config: Config, io: IO) -> Iterator[Session]:
    from reconciler.platforms.hubspot import HubSpotClient
    from reconciler.platforms.mailchimp import MailchimpClient

    with ExitStack() as stack:
        sandbox = None
        if getattr(args, "sandbox", False):
            sandbox = _start_sandbox(args, io, stack)
            config = _with_sandbox_credentials(config, sandbox)
        hubspot = HubSpotClient(config.hubspot)
        mailchimp = MailchimpClient(config.mailchimp)
        stack.callback(hubspot.close)
        stack.callback(mailchimp.close)
        yield Session(config, hubspot, mailchimp, _select_audiences(config, getattr(args, "audience", None)), sandbox)


def _progress(io: IO) -> Callable[[str, int, int | None], None]:
    """Plain progress lines on stderr (one per step when it finishes, when not a terminal)."""
    last: dict[str, int] = {}

    def report(step: str, done: int, total: int | None) -> None:
        if total is not None and done < total:
            return
        if last.get(step) == done:
            return
        last[step] = done
        io.info(f"observe: {step}: {done}" + (f"/{total}" if total is not None else ""))

    return report


def observe_and_plan(session: Session, memory: Memory, io: IO, *, preflight: bool = True) -> tuple[Snapshot, Plan]:
    from reconciler.observe import observe
    from reconciler.rules import build_plan

    if preflight:
        check_live_config(session, io)
    snapshot = observe(session.config, session.hubspot, session.mailchimp, list(session.audiences),
                       progress=_progress(io))
    plan = build_plan(session.config, snapshot, memory, session.audiences)
    return snapshot, plan


def check_live_config(session: Session, io: IO) -> None:
    """SPEC §3's checks against the live platforms: errors stop the run, warnings are shown."""
    from reconciler.observe import preflight

    problems, warnings = preflight(session.config, session.hubspot, session.mailchimp, list(session.audiences))
    for line in warnings:
        io.info(f"warning: {line}")
    if problems:
        raise errors.ConfigError(problems)


def open_audit(config: Config) -> AuditLog:
    return AuditLog.open(config.audit.path)


def read_memory(config: Config, *, retry_refused: bool = False) -> Memory:
    path = config.audit.path
    if not os.path.exists(path):
        return Memory(retry_refused=retry_refused)
    log = AuditLog.open(path)
    try:
        return log.memory(retry_refused=retry_refused)
    finally:
        log.close()
