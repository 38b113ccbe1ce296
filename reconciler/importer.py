"""`reconcile --import [--out DIR]`: read a live portal (or `--sandbox`) and write a starting config.

Like `terraform import -generate-config-out` / `octodns-dump`: the reads go through the product's
own clients, the guesses and the YAML are `reconciler.import_draft` (pure), and this module does
the I/O: credentials, the sandbox, the reads, the check that the text validates, and a write that
never replaces a user's file (an existing `reconciler.yaml` is left alone unless it is identical).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from reconciler.config import load_config
from reconciler.errors import EXIT_OK, ConfigError, ReconcilerError
from reconciler.import_draft import AudienceRead, Draft, PortalRead, guess, render
from reconciler.settings import AuditSettings, HubSpotSettings, MailchimpSettings

DEFAULT_OUT = "imported-config"
CONFIG_NAME = "reconciler.yaml"
CREDENTIALS = ("HUBSPOT_TOKEN", "MAILCHIMP_API_KEY")  # the names the written config references


def run_import(args: Any, cli_io: Any) -> int:
    from reconciler.engine import engine_io

    io = engine_io(cli_io)
    out_dir = Path(getattr(args, "out", None) or DEFAULT_OUT)
    target = destination(out_dir)
    with ExitStack() as stack:
        hubspot, mailchimp, source = _clients(args, io, stack)
        portal = read_portal(hubspot, mailchimp, source)
    io.info(f"import: read {len(portal.lists)} HubSpot list(s), {len(portal.subscriptions)} subscription type(s), "
            f"{len(portal.properties)} contact properties and {len(portal.audiences)} Mailchimp audience(s)")
    draft = guess(portal)
    text = render(draft)
    problems, warnings = check_text(text, target)
    outcome = write_config(target, text)
    for line in warnings:
        io.info(f"warning: {line}")
    _summary(io, draft, target, outcome)
    if problems:
        for line in problems:
            io.info(line)
        raise ReconcilerError(f"{target} was {outcome}, but it does not validate yet ({len(problems)} problem(s) above): "
                              + ("no Mailchimp tag matches a HubSpot list's name, so every audience is commented out; "
                                 "give one audience a source" if not draft.active_audiences else "fix them by hand"))
    return EXIT_OK


# ----- where the config goes ---------------------------------------------------------------------


def destination(out_dir: Path) -> Path:
    """`DIR/reconciler.yaml`, refused up front when DIR is a file, or holds other YAML files that
    `--config DIR` would merge with the imported one."""
    if out_dir.suffix.lower() in (".yaml", ".yml") and not out_dir.is_dir():
        raise ReconcilerError(f"--out {out_dir}: --import writes a directory (the config goes to DIR/{CONFIG_NAME}); "
                              "give a directory name")
    if out_dir.exists() and not out_dir.is_dir():
        raise ReconcilerError(f"--out {out_dir} is a file: give a new or empty directory")
    if out_dir.is_dir():
        others = sorted(p.name for p in out_dir.iterdir() if p.suffix == ".yaml" and p.name != CONFIG_NAME)
        if others:
            raise ReconcilerError(f"--out {out_dir} already holds {', '.join(others)}, which --config {out_dir} would "
                                  "merge with the imported file; import into a new directory; nothing written")
    if (out_dir / CONFIG_NAME).is_dir():
        raise ReconcilerError(f"--out {out_dir}: {out_dir / CONFIG_NAME} is a directory; give a new or empty directory")
    return out_dir / CONFIG_NAME


def write_config(target: Path, text: str) -> str:
    """Writes `text` to `target` unless a different non-empty file is there: "written" or "unchanged".

    The new file is linked into place, so a file that appears meanwhile is never replaced."""
    data = text.encode("utf-8")
    if target.exists():
        old = target.read_bytes()
        if old == data:
            return "unchanged"
        if old.strip():
            raise ReconcilerError(f"{target} already exists and differs from this import; nothing written. Import into "
                                  "a new directory (--out DIR) and compare with diff, or move the file away first")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if target.exists():  # an empty file: nothing of the user's to lose
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target)
            except FileExistsError:
                raise ReconcilerError(f"{target} appeared while importing; nothing written") from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return "written"


def check_text(text: str, target: Path) -> tuple[list[str], list[str]]:
    """--validate's problems and warnings for `text`, as if it were already `target` (checked in a
    scratch directory, with placeholder credentials: the check is of the file, not the environment)."""
    with tempfile.TemporaryDirectory(prefix="reconcile-import-") as scratch:
        path = Path(scratch) / CONFIG_NAME
        path.write_text(text, encoding="utf-8")
        env = {name: "placeholder" for name in CREDENTIALS}
        try:
            _, warnings = load_config(path, env, mode="validate")
            problems: list[str] = []
        except ConfigError as error:
            problems, warnings = error.problems, []
        return [p.replace(str(path), str(target)) for p in problems], [w.replace(str(path), str(target)) for w in warnings]


# ----- reading ---------------------------------------------------------------------------------


def _clients(args: Any, io: Any, stack: ExitStack) -> tuple[Any, Any, str]:
    """The two clients: on the sandbox (`--sandbox`, started as --plan starts it), or on the live
    platforms with the credentials the written config will reference."""
    from reconciler.engine import _start_sandbox
    from reconciler.platforms.hubspot import HubSpotClient
    from reconciler.platforms.mailchimp import MailchimpClient

    if getattr(args, "sandbox", False):
        # A snapshot seed's rehearsal audit log is of no use here (nothing is planned), nor is the live one.
        sandbox, _ = _start_sandbox(args, io, stack, AuditSettings().path)
        hubspot_settings = HubSpotSettings(token=sandbox.hubspot_token, base_url=sandbox.base_url)
        mailchimp_settings = MailchimpSettings(api_key=sandbox.mailchimp_api_key, base_url=sandbox.mailchimp_base_url)
        source = "the sandbox"
    else:
        missing = [name for name in CREDENTIALS if not (io.env.get(name) or "").strip()]
        if missing:
            raise ReconcilerError(f"--import reads the live platforms with {' and '.join(CREDENTIALS)} from the "
                                  f"environment (the written config references them as ${{NAME}}); "
                                  f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set "
                                  "(or use --sandbox)")
        hubspot_settings = HubSpotSettings(token=io.env["HUBSPOT_TOKEN"].strip())
        mailchimp_settings = MailchimpSettings(api_key=io.env["MAILCHIMP_API_KEY"].strip())
        source = "HubSpot and Mailchimp"
    hubspot = HubSpotClient(hubspot_settings)
    stack.callback(hubspot.close)
    mailchimp = MailchimpClient(mailchimp_settings)
    stack.callback(mailchimp.close)
    return hubspot, mailchimp, source


def read_portal(hubspot: Any, mailchimp: Any, source: str) -> PortalRead:
    """Definitions only (lists, subscription types, properties, audiences, merge fields, tags):
    no contact or member is read, so an import is quick on any portal size."""
    audiences = []
    for info in mailchimp.audiences():
        audiences.append(AudienceRead(info.id, info.name, info.double_optin,
                                      tuple(mailchimp.merge_field_definitions(info.id)),
                                      tuple(sorted(mailchimp.segments(info.id)))))
    return PortalRead(lists=tuple(hubspot.all_lists()), subscriptions=hubspot.subscription_definitions(),
                      properties=hubspot.contact_property_labels(), audiences=tuple(audiences), source=source)


def _summary(io: Any, draft: Draft, target: Path, outcome: str) -> None:
    for audience in draft.audiences:
        mapped = sum(1 for m in audience.merge if m.property)
        if audience.active:
            sources = ", ".join(f"{s.tag} <- list {s.list.id}" for s in audience.sources if s.list)
            line = (f"audience {audience.key} ({audience.read.id}): {len(audience.sources)} source(s) ({sources}), "
                    f"{mapped}/{len(audience.merge)} merge field(s) mapped, {len(audience.held_back)} held back, "
                    f"{len(audience.unmatched)} tag(s) unmatched")
        else:
            line = f"audience {audience.key} ({audience.read.id}): commented out, no tag matches a HubSpot list's name"
        io.stdout.write(line + "\n")
    io.stdout.write(f"{target}: {outcome}\n")
    io.stdout.write(f"next: review the lines marked REVIEW, then run reconcile --validate --config {target.parent} "
                    f"and reconcile --plan --config {target.parent}\n")
