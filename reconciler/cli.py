"""The command line (SPEC §6): parse arguments, load the config, dispatch, map exceptions to exit codes.

The only module that prints. `main` takes its streams and environment as arguments so tests run
the real CLI in-process and get stdout, stderr and the exit code back together.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NoReturn, Sequence, TextIO

from reconciler import __version__
from reconciler.config import load_config
from reconciler.errors import EXIT_ERROR, EXIT_OK, ConfigError, ReconcilerError

COMMANDS = ("validate", "plan", "apply", "audit", "import")
PLAN_FORMATS = ("text", "json", "markdown")
AUDIT_FORMATS = ("table", "csv", "json")
# Flags that mean something to one command only: given elsewhere they are a mistake worth naming.
ONLY_FOR: dict[str, tuple[str, ...]] = {
    "audience": ("plan", "apply"),
    "out": ("plan", "import"),
    "snapshot_out": ("plan",),
    "detailed_exitcode": ("plan",),
    "verbose": ("plan", "apply"),
    "no_redact": ("plan", "apply", "audit"),
    "checksum": ("apply",),
    "force": ("apply",),
    "yes": ("apply",),
    "retry_refused": ("plan", "apply"),
    "since": ("audit",),
    "email": ("audit",),
    "action": ("audit",),
    "outcome": ("audit",),
}
# The engine functions each command dispatches to: (module, function).
DISPATCH: dict[str, tuple[str, str]] = {
    "plan": ("reconciler.engine", "run_plan"),
    "apply": ("reconciler.engine", "run_apply"),
    "audit": ("reconciler.engine", "run_audit"),
    "import": ("reconciler.importer", "run_import"),
}


@dataclass(frozen=True)
class IO:
    """What a command may print to and read from; passed in, never global."""

    stdout: TextIO
    stderr: TextIO
    env: Mapping[str, str]
    stdin_isatty: bool


class UsageError(ReconcilerError):
    """Bad arguments: exit 1 (exit 2 means "changes found" in this product)."""


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse writing to our streams, raising instead of exiting."""

    def __init__(self, *args: Any, out: TextIO, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out = out

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            self.out.write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self.out.write(message)
        raise _Exit(status)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see reconcile --help)")


def build_parser(stdout: TextIO) -> _Parser:
    parser = _Parser(prog="reconcile", out=stdout,
                     description="Declarative reconciler between HubSpot lists and Mailchimp audiences.")
    command = parser.add_mutually_exclusive_group(required=True)
    command.add_argument("--validate", action="store_true", help="check the configuration offline (no credentials)")
    command.add_argument("--plan", action="store_true", help="read both platforms and show the changes an apply would make")
    command.add_argument("--apply", nargs="?", const="", default=None, metavar="FILE",
                         help="apply the changes; with FILE (a JSON plan from --out), refuse if they differ from it")
    command.add_argument("--audit", action="store_true", help="query the audit log")
    command.add_argument("--import", dest="import_", action="store_true",
                         help="read a live portal (or --sandbox) and write a starting config (see --out)")
    parser.add_argument("--sandbox", action="store_true", help="run against the embedded sandbox (no credentials)")
    parser.add_argument("--config", default="config", metavar="PATH", help="YAML file or directory (default: config)")
    parser.add_argument("--audience", metavar="NAME", help="only this audience (a key of `audiences`)")
    parser.add_argument("--format", choices=PLAN_FORMATS + AUDIT_FORMATS[:2], default=None,
                        help="--plan: text|json|markdown (default text); --audit: table|csv|json (default table)")
    parser.add_argument("--out", metavar="PATH",
                        help="--plan: also write the JSON plan to FILE; --import: the directory to write (default imported-config)")
    parser.add_argument("--snapshot-out", metavar="FILE",
                        help="--plan: also write the observed state as a sandbox seed, emails pseudonymised (names kept only with --no-redact)")
    parser.add_argument("--detailed-exitcode", action="store_true", help="--plan: exit 2 when there are changes")
    parser.add_argument("--verbose", action="store_true", help="show every change, not a truncated list")
    parser.add_argument("--no-redact", action="store_true", help="show email addresses unmasked")
    parser.add_argument("--checksum", metavar="SHA", help="--apply: refuse unless the re-plan has this checksum")
    parser.add_argument("--force", action="store_true", help="--apply: go beyond the safety limits")
    parser.add_argument("--yes", action="store_true", help="--apply: do not ask for confirmation")
    parser.add_argument("--retry-refused", action="store_true",
                        help="--plan / --apply: try again changes refused before (a plan made with it applies with it)")
    parser.add_argument("--since", metavar="DATE", help="--audit: rows from this date (YYYY-MM-DD)")
    parser.add_argument("--email", metavar="EMAIL", help="--audit: rows about this email")
    parser.add_argument("--action", metavar="A", help="--audit: rows with this action")
    parser.add_argument("--outcome", metavar="O", help="--audit: rows with this outcome")
    parser.add_argument("--sandbox-seed", metavar="FILE", help="--sandbox: seed file (default: sandbox/seed.yaml beside the --config)")
    parser.add_argument("--sandbox-reset", action="store_true", help="--sandbox: start from the seed again")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of unexpected errors")
    parser.add_argument("--version", action="version", version=f"reconcile {__version__}")
    return parser


def parse_args(argv: Sequence[str], stdout: TextIO) -> argparse.Namespace:
    args = build_parser(stdout).parse_args(list(argv))
    args.command = next(c for c in COMMANDS if getattr(args, "import_" if c == "import" else c) not in (None, False))
    args.plan_file = args.apply or None
    for flag, commands in ONLY_FOR.items():
        if getattr(args, flag) not in (None, False) and args.command not in commands:
            raise UsageError(f"--{flag.replace('_', '-')} applies to --{' / --'.join(commands)}, not --{args.command}")
    if args.format is not None:
        allowed = AUDIT_FORMATS if args.command == "audit" else PLAN_FORMATS if args.command == "plan" else ()
        if args.format not in allowed:
            raise UsageError(f"--format {args.format} is not available with --{args.command}"
                             + (f" (use one of: {', '.join(allowed)})" if allowed else ""))
    if (args.sandbox_seed or args.sandbox_reset) and not args.sandbox:
        raise UsageError("--sandbox-seed and --sandbox-reset need --sandbox")
    return args


def validate(args: argparse.Namespace, io: IO) -> int:
    """`--validate`: offline; missing environment variables are warnings, problems exit 1."""
    config, warnings = load_config(args.config, io.env, mode="validate")
    for line in warnings:
        io.stderr.write(f"warning: {line}\n")
    count, files = len(config.audiences), len(config.files)
    io.stdout.write(f"config OK: {count} audience{'s' if count != 1 else ''}, {files} file{'s' if files != 1 else ''}\n")
    return EXIT_OK


def dispatch(args: argparse.Namespace, io: IO) -> int:
    module_name, function_name = DISPATCH[args.command]
    try:
        function: Callable[..., int] = getattr(importlib.import_module(module_name), function_name)
    except ModuleNotFoundError as missing:
        if missing.name != module_name:
            raise  # a broken install, not a missing feature
        io.stderr.write(f"error: --{args.command} is not available in this build\n")
        return EXIT_ERROR
    except AttributeError:
        io.stderr.write(f"error: --{args.command} is not available in this build\n")
        return EXIT_ERROR
    if args.command == "import":  # no config to load: --import writes one
        return int(function(args, io))
    config, warnings = load_config(args.config, io.env, mode="sandbox" if args.sandbox else "run")
    for line in warnings:
        io.stderr.write(f"warning: {line}\n")
    return int(function(args, config, io))


def report_error(error: BaseException, io: IO, *, debug: bool) -> int:
    """One line per problem on stderr and the exit code; a traceback only for unexpected errors under --debug."""
    if isinstance(error, ConfigError):
        for line in error.problems:
            io.stderr.write(f"{line}\n")
        count = len(error.problems)
        io.stderr.write(f"error: {count} configuration problem{'s' if count != 1 else ''}; "
                        "fix them and run reconcile --validate again\n")
        return error.exit_code
    if isinstance(error, ReconcilerError):
        message = " ".join(str(error).split())  # one line, whatever the message held
        io.stderr.write(f"error: {message}\n")
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        io.stderr.write("error: interrupted\n")
        return 130
    io.stderr.write(f"error: unexpected {type(error).__name__}: {' '.join(str(error).split())}\n")
    if debug:
        io.stderr.write("".join(traceback.format_exception(error)))
    else:
        io.stderr.write("re-run with --debug for the traceback\n")
    return EXIT_ERROR


def main(argv: list[str], *, stdout: TextIO, stderr: TextIO, env: Mapping[str, str], stdin_isatty: bool) -> int:
    io = IO(stdout=stdout, stderr=stderr, env=env, stdin_isatty=stdin_isatty)
    debug = "--debug" in argv
    try:
        args = parse_args(argv, stdout)
        if args.command == "validate":
            return validate(args, io)
        return dispatch(args, io)
    except _Exit as done:
        return done.code
    except UsageError as error:
        stderr.write("usage: reconcile (--validate | --plan | --apply [FILE] | --audit | --import) [options]\n")
        return report_error(error, io, debug=debug)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - the one place errors become exit codes
        return report_error(error, io, debug=debug)


def entry_point() -> None:
    """The `reconcile` console script and `python -m reconciler`."""
    sys.exit(main(sys.argv[1:], stdout=sys.stdout, stderr=sys.stderr, env=os.environ,
                  stdin_isatty=sys.stdin.isatty() if sys.stdin else False))
