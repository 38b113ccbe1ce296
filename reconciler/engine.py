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
from reconciler.errors import ReconcilerError, UnsafePlan
from reconciler.model import Memory, Snapshot
from reconciler.plan import Plan
from reconciler.review import check_reviewed, reviewed_plan
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
    stderr_isatty: bool = False
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
    rehearsal: bool = False  # --sandbox on a snapshot: its own audit log, and no notifications


def _select_audiences(config: Config, name: str | None) -> tuple[str, ...]:
    if name is None:
        return tuple(config.audiences)
    if name not in config.audiences:
        known = ", ".join(config.audiences) or "none"
        raise ReconcilerError(f"--audience {name}: no such audience in the config (known: {known})")
    return (name,)


def default_seed(config_path: str) -> str:
    """The seed `--sandbox` uses without `--sandbox-seed`: `sandbox/seed.yaml` beside the config
    (in the `--config` directory, or beside a `--config` file), so `--config DIR` works from anywhere;
    `config/sandbox/seed.yaml` under the current directory when that does not exist."""
    path = Path(config_path)
    base = path if path.is_dir() else path.parent
    beside = base / "sandbox" / "seed.yaml"
    return str(beside) if beside.exists() else DEFAULT_SEED


def _start_sandbox(args: Any, io: IO, stack: ExitStack, live_audit: str) -> tuple[Any, str | None]:
    """The started sandbox, and the audit log of a rehearsal (None unless the seed is a snapshot)."""
    from reconciler.rehearsal import SandboxState, rehearsal_audit, seed_digest
    from reconciler.sandbox import Sandbox
    from reconciler.sandbox.seed import load_seed

    seed_path = args.sandbox_seed or default_seed(getattr(args, "config", None) or "config")
    state_path = Path(SANDBOX_STATE)
    if getattr(args, "sandbox_reset", False) and state_path.exists():
        state_path.unlink()
        journal = Path(str(state_path) + ".journal")
        if journal.exists():
            journal.unlink()
    if not Path(seed_path).exists():
        if args.sandbox_seed:
            raise ReconcilerError(f"--sandbox: seed file {seed_path} not found; check the --sandbox-seed path")
        config_path = Path(getattr(args, "config", None) or "config")
        beside = (config_path if config_path.is_dir() else config_path.parent) / "sandbox" / "seed.yaml"
        raise ReconcilerError(f"--sandbox: no seed found: neither {beside} (beside the config) nor {DEFAULT_SEED} "
                              "exists; pass --sandbox-seed FILE")
    state_path.parent.mkdir(parents=True, exist_ok=True)
    seed = load_seed(seed_path)
    state = SandboxState(state_path, seed_digest(seed))
    fresh = state.check(seed_path, Sandbox.discard_state, io.info,  # never a state built from another seed
                        strict="rehearsal" in seed)
    sandbox = Sandbox(seed, state_file=str(state_path))
    sandbox.start()
    stack.callback(sandbox.stop)
    state.record()
    io.info(f"sandbox: serving {sandbox.base_url} (state {state_path}; --sandbox-reset starts over)")
    return sandbox, rehearsal_audit(seed, state, fresh, live_audit, io.info)


def _with_sandbox_credentials(config: Config, sandbox: Any, audit_path: str | None = None) -> Config:
    hubspot = dataclasses.replace(config.hubspot, token=sandbox.hubspot_token, base_url=sandbox.base_url)
    mailchimp = dataclasses.replace(config.mailchimp, api_key=sandbox.mailchimp_api_key,
                                    base_url=sandbox.mailchimp_base_url)
    config = dataclasses.replace(config, hubspot=hubspot, mailchimp=mailchimp)
    if audit_path is not None:  # a rehearsal: never the live audit log
        config = dataclasses.replace(config, audit=dataclasses.replace(config.audit, path=audit_path))
    return config


@contextmanager
def open_session(args: Any, config: Config, io: IO) -> Iterator[Session]:
    from reconciler.platforms.hubspot import HubSpotClient
    from reconciler.platforms.mailchimp import MailchimpClient

    with ExitStack() as stack:
        sandbox, rehearsal_audit = None, None
        if getattr(args, "sandbox", False):
            sandbox, rehearsal_audit = _start_sandbox(args, io, stack, config.audit.path)
            config = _with_sandbox_credentials(config, sandbox, rehearsal_audit)
        hubspot = HubSpotClient(config.hubspot)
        mailchimp = MailchimpClient(config.mailchimp)
        stack.callback(hubspot.close)
        stack.callback(mailchimp.close)
        yield Session(config, hubspot, mailchimp, _select_audiences(config, getattr(args, "audience", None)), sandbox,
                      rehearsal=rehearsal_audit is not None)


@contextmanager
def progress(io: IO, phase: str) -> Iterator[Callable[[str, int, int | None], None]]:
    """Progress of a long step: bars on a terminal (stderr), plain lines when a step ends otherwise."""
    if io.stderr_isatty:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bars = Progress(TextColumn(f"{phase}: {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(file=io.stderr, force_terminal=True), transient=True)
        tasks: dict[str, Any] = {}

        def show(step: str, done: int, total: int | None) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(step, total=total)
            bars.update(tasks[step], completed=done, total=total)

        with bars:
            yield show
        return
    last: dict[str, int] = {}

    def line(step: str, done: int, total: int | None) -> None:
        if (total is not None and done < total) or last.get(step) == done:
            return
        last[step] = done
        io.info(f"{phase}: {step}: {done}" + (f"/{total}" if total is not None else ""))

    yield line


def observe_and_plan(session: Session, memory: Memory, io: IO, *, preflight: bool = True) -> tuple[Snapshot, Plan]:
    from reconciler.observe import observe
    from reconciler.rules import build_plan

    if preflight:
        check_live_config(session, io)
    def consent_known(list_id: str, email: str) -> bool:
        """R8 needs no HubSpot consent read where the audit log already decides: evidence of our own
        archive, a remembered opt-out (no restore at all), or a remembered refusal (reported)."""
        key = (list_id, email)
        return (memory.archived_by_us.get(key) in ("subscribed", "pending") or email in memory.opted_out
                or (key in memory.refusals and not memory.retry_refused))

    with progress(io, "observe") as report:
        snapshot = observe(session.config, session.hubspot, session.mailchimp, list(session.audiences),
                           progress=report, consent_known=consent_known)
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


# -- commands -------------------------------------------------------------------------------------


def engine_io(cli_io: Any) -> IO:
    def isatty(stream: Any) -> bool:
        check = getattr(stream, "isatty", None)
        return bool(check()) if callable(check) else False

    return IO(stdout=cli_io.stdout, stderr=cli_io.stderr, env=cli_io.env, stdin_isatty=bool(cli_io.stdin_isatty),
              stdout_isatty=isatty(cli_io.stdout), stdin=getattr(cli_io, "stdin", None) or sys.stdin,
              stderr_isatty=isatty(cli_io.stderr))


def _redact(args: Any, io: IO) -> bool:
    from reconciler.render.mask import should_redact

    return should_redact(io.stdout_isatty, io.env, bool(getattr(args, "no_redact", False)))


def _document(plan: Plan, session: Session, args: Any, *, redact: bool, pseudonymiser: Any = None) -> dict[str, Any]:
    from reconciler.render.json_plan import plan_to_document

    options = {"audience": getattr(args, "audience", None), "sandbox": bool(getattr(args, "sandbox", False)),
               "retry_refused": bool(getattr(args, "retry_refused", False))}
    return plan_to_document(plan, config_checksum=session.config.checksum, audiences=session.audiences,
                            options=options, redact=redact, pseudonymiser=pseudonymiser)


def _safety_lines(plan: Plan, config: Config) -> list[str]:
    from reconciler.safety import check_safety

    return [str(v) for v in check_safety(plan, config)]


def run_plan(args: Any, config: Config, cli_io: Any) -> int:
    """`reconcile --plan`: observe, plan, render; exit 2 with --detailed-exitcode when changes."""
    from reconciler.pseudonyms import PLAN_KEY_ENV, plan_pseudonyms
    from reconciler.render.json_plan import dumps_document, write_plan_json
    from reconciler.render.markdown import render_markdown
    from reconciler.render.text import render_plan

    io = engine_io(cli_io)
    if getattr(args, "snapshot_out", None):  # a bad path or key stops the run before it reads anything
        from reconciler.snapshot import check_snapshot_out
        check_snapshot_out(args.snapshot_out, getattr(args, "config", "config"), io.env)
    with open_session(args, config, io) as session:
        memory = read_memory(session.config, retry_refused=bool(getattr(args, "retry_refused", False)))
        snapshot, plan = observe_and_plan(session, memory, io)
        redact = _redact(args, io)
        fmt = getattr(args, "format", None) or "text"
        if fmt == "json":
            io.stdout.write(dumps_document(_document(plan, session, args, redact=redact)) + "\n")
        elif fmt == "markdown":
            # SPEC §5: the Markdown comment is masked unless --no-redact, wherever it is printed.
            io.stdout.write(render_markdown(plan, redact=not getattr(args, "no_redact", False)) + "\n")
        else:
            render_plan(io.console, plan, redact=redact, verbose=bool(getattr(args, "verbose", False)))
        for line in _safety_lines(plan, session.config):
            io.info(f"warning: unsafe: {line}")
        if getattr(args, "snapshot_out", None):
            _write_snapshot(args, session, snapshot, memory, io)
        if getattr(args, "out", None):
            keyed = plan_pseudonyms(io.env)
            write_plan_json(args.out, _document(plan, session, args, redact=False, pseudonymiser=keyed))
            io.info(f"plan: written to {args.out} (checksum {plan.checksum}"
                    + (f"; emails pseudonymised with {PLAN_KEY_ENV}, key id {keyed.key_id})" if keyed else ")"))
    if getattr(args, "detailed_exitcode", False) and plan.changes:
        if session.rehearsal:
            io.info("notify: a rehearsal posts no drift notification")
        else:
            _notify_drift(session.config, plan, io)
        return errors.EXIT_CHANGES
    return errors.EXIT_OK


def _notify_drift(config: Config, plan: Plan, io: IO) -> None:
    """`--plan --detailed-exitcode` that found changes: the `drift` notification (channels whose
    `on` holds `drift`), with the counts by rule. A plan without changes posts nothing."""
    from reconciler.notify import drift_report, notify

    for problem in notify(config.notifications, drift_report(plan)):
        io.info(f"warning: {problem}")


def _write_snapshot(args: Any, session: Session, snapshot: Snapshot, memory: Memory, io: IO) -> None:
    """`--plan --snapshot-out FILE`: the observed state as a pseudonymised sandbox seed (reconciler.snapshot)."""
    from reconciler.snapshot import write_snapshot

    for line in write_snapshot(args.snapshot_out, config=session.config, config_path=getattr(args, "config", "config"),
                               snapshot=snapshot, memory=memory, hubspot=session.hubspot, audiences=session.audiences,
                               env=io.env, keep_names=bool(getattr(args, "no_redact", False))):
        io.info(line)


def _approval_source(args: Any) -> str | None:
    """A plan file or a checksum names the reviewed plan and counts as approval (SPEC §6)."""
    if getattr(args, "plan_file", None):
        return "plan file"
    if getattr(args, "checksum", None):
        return "checksum"
    if getattr(args, "yes", False):
        return "--yes"
    return None


def _confirm(io: IO, plan: Plan) -> bool:
    io.stdout.write(f"Apply {len(plan.changes)} change(s)? Type 'yes' to continue: ")
    io.stdout.flush()
    answer = (io.stdin.readline() if io.stdin else "").strip().lower()
    return answer in ("yes", "y")


@dataclass
class ApplyResult:
    exit_code: int = errors.EXIT_ERROR
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    message: str = ""
    plan_checksum: str | None = None
    run_id: str = "not started"
    rehearsal: bool = False  # an apply on a snapshot copy: the team's channels hear nothing of it


def run_apply(args: Any, config: Config, cli_io: Any) -> int:
    """`reconcile --apply`: lock, observe, check, apply in R18 order, observe again, notify.

    Exactly one notification per apply whose config loaded, whatever stopped it (a held lock and
    a missing approval are `failed` too); the run id is `not started` when no audit run began."""
    io = engine_io(cli_io)
    result = ApplyResult()
    try:
        return _run_apply(args, config, io, result)
    except BaseException as error:
        result.exit_code = error.exit_code if isinstance(error, ReconcilerError) else errors.EXIT_ERROR
        result.message = (str(error).splitlines() or [""])[0] if isinstance(error, ReconcilerError) \
            else type(error).__name__
        raise
    finally:
        if result.rehearsal:
            io.info("notify: a rehearsal posts no notifications")
        else:
            _notify(config, result.run_id, result, io)


def _run_apply(args: Any, config: Config, io: IO, result: "ApplyResult") -> int:
    approval = _approval_source(args)
    if approval is None and not io.stdin_isatty:
        raise ReconcilerError("--apply needs approval and there is no terminal to ask on: re-run with --yes, "
                              "or pass the reviewed plan file (--apply plan.json) or --checksum SHA")
    operator = operator_name(io.env)
    with open_session(args, config, io) as session, apply_lock(session.config.audit.path, operator=operator):
        result.rehearsal = session.rehearsal
        audit = open_audit(session.config)
        run_id = audit.start_run(command="apply", operator=operator, config_checksum=session.config.checksum,
                                 plan_checksum=getattr(args, "checksum", None))
        result.run_id = run_id
        try:
            _apply_flow(args, session, audit, run_id, operator, approval, io, result)
        except ReconcilerError as error:
            result.exit_code = error.exit_code
            result.message = str(error).splitlines()[0]
            raise
        except BaseException as error:
            result.exit_code = errors.EXIT_ERROR
            result.message = f"{type(error).__name__}"
            raise
        finally:
            audit.end_run(run_id, command="apply", operator=operator, config_checksum=session.config.checksum,
                          plan_checksum=result.plan_checksum, counts=result.counts, exit_code=result.exit_code)
            audit.close()
    return result.exit_code


def _notify(config: Config, run_id: str, result: ApplyResult, io: IO) -> None:
    from reconciler.notify import ApplyReport, notify

    report = ApplyReport(run_id=run_id, exit_code=result.exit_code, counts=result.counts,
                         failures=result.failures, message=result.message)
    for problem in notify(config.notifications, report):
        io.info(f"warning: {problem}")


def seen_live(memory: Memory, snapshot: Snapshot) -> list[tuple[str, str, str]]:
    """Members the audit log says this product archived (R8 evidence) that are live again now."""
    seen = []
    for (list_id, email) in memory.archived_by_us:
        state = snapshot.audiences.get(list_id)
        member = state.members.get(email) if state is not None else None
        if member is not None and member.status != "archived":
            seen.append((list_id, email, member.status))
    return sorted(seen)


def _apply_flow(args: Any, session: Session, audit: AuditLog, run_id: str, operator: str, approval: str | None,
                io: IO, result: ApplyResult) -> None:
    from reconciler.apply import Applier, partial, summarise
    from reconciler.render.mask import mask_text, show_email
    from reconciler.render.text import render_plan, render_safety_violations

    from reconciler.pseudonyms import plan_pseudonyms

    redact = _redact(args, io)
    keyed = plan_pseudonyms(io.env)
    if getattr(args, "plan_file", None):
        reviewed_plan(args, keyed)  # an edited file or one made with other options: refused before observing
    memory = audit.memory(retry_refused=bool(getattr(args, "retry_refused", False)))
    attempts = audit.unfinished_attempts()
    snapshot, plan = observe_and_plan(session, memory, io)
    result.plan_checksum = plan.checksum
    audit.record_seen_live(run_id, seen_live(memory, snapshot))
    if attempts:
        planned = {change_key(c) for c in plan.changes}
        for attempt in attempts:
            audit.record_verification(run_id, attempt, still_needed=attempt.change_key in planned,
                                      operator=operator, config_checksum=session.config.checksum)
        io.info(f"apply: re-verified {len(attempts)} change(s) left without an outcome by an earlier run")
    check_reviewed(args, plan, io.console, redact=_redact(args, io), audit=audit, pseudonymiser=keyed)
    violations = _safety_lines(plan, session.config)
    if violations and not getattr(args, "force", False):
        render_safety_violations(io.console, violations)
        raise UnsafePlan(f"unsafe plan refused, nothing written: {violations[0]}"
                         + (f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""))
    if plan.empty:
        render_plan(io.console, plan, redact=redact)
        result.exit_code = errors.EXIT_OK
        return
    render_plan(io.console, plan, redact=redact, verbose=bool(getattr(args, "verbose", False)))
    if approval is None and not _confirm(io, plan):
        raise ReconcilerError("apply cancelled at the prompt; nothing written")
    with progress(io, "apply") as report:
        applier = Applier(session.config, session.hubspot, session.mailchimp, audit, run_id=run_id,
                          operator=operator, progress=report, snapshot=snapshot)
        outcomes = applier.apply(plan)
    result.counts = summarise(outcomes)
    for outcome in outcomes:
        if outcome.outcome in ("failed", "refused", "deferred"):
            detail = mask_text(outcome.detail) if redact else outcome.detail
            line = (f"{outcome.outcome}: {outcome.change.action} {outcome.change.target} "
                    f"{show_email(outcome.change.email, redact)}: {detail}")
            io.console.print(line, markup=False, soft_wrap=True)
            if outcome.partial:
                result.failures.append(line)
    io.console.print("Applied: " + ", ".join(f"{n} {k}" for k, n in sorted(result.counts.items())), markup=False)
    _, again = observe_and_plan(session, audit.memory(), io, preflight=False)
    if again.empty:
        io.console.print("converged: a new plan has no changes", markup=False)
    else:
        io.console.print(f"not converged: {len(again.changes)} change(s) remain:", markup=False)
        render_plan(io.console, again, redact=redact)
    # Partial (exit 5): a failure, or an R2/R4 opt-out or archive left undone however it ended,
    # or writes held back because the last-moment opt-out re-check could not be read.
    shortfalls = partial(outcomes)
    if shortfalls and not result.counts.get("failed"):
        result.message = (f"{len(shortfalls)} change(s) the apply must not leave undone did not end applied "
                          f"(first: {shortfalls[0].change.action} {shortfalls[0].change.target})")
    result.exit_code = errors.EXIT_PARTIAL if shortfalls else errors.EXIT_OK


def run_audit(args: Any, config: Config, cli_io: Any) -> int:
    """`reconcile --audit`: query the append-only log as a table, CSV or JSON (reconciler.audit_query)."""
    from reconciler.audit_query import run_audit as query

    if getattr(args, "sandbox", False):  # on a snapshot (a rehearsal): the rehearsal's own audit log
        from reconciler.rehearsal import audit_of_seed

        path = audit_of_seed(args.sandbox_seed or default_seed(getattr(args, "config", None) or "config"),
                             Path(SANDBOX_STATE))
        if path is not None:
            config = dataclasses.replace(config, audit=dataclasses.replace(config.audit, path=path))
    return query(args, config, cli_io)
