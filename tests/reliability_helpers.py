"""Helpers of the reliability tests (faults, crashes, bad input): runs repeated until convergence,
changes the vendor would double, and the printed fault matrix.

Separate from e2e_helpers (whose sandbox, CLI runner, vendor views and `assert_compliance` these
reuse) so that the end-to-end scenarios stay free of the fault and crash machinery.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from e2e_helpers import DEMO_SEED, LIVE, OPTED_OUT, Env, MemberView, RecordingSandbox, Run, VendorView, demo_config_doc
from reconciler.settings import Config

DEMO_SEED_DOC: dict[str, Any] = yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8"))
UNSUBSCRIBE_V3 = "/communication-preferences/v3/unsubscribe"


def demo_doc(root: Path, **audience: Any) -> dict[str, Any]:
    """The demo config, its audit database under `root`, audience keys replaced by `audience`."""
    doc = copy.deepcopy(demo_config_doc())
    doc["audit"] = {"path": str(root / "audit.sqlite")}
    doc["audiences"]["main"].update(audience)
    return doc


def demo_seed() -> dict[str, Any]:
    return copy.deepcopy(DEMO_SEED_DOC)


def doubled_changes(sandbox: RecordingSandbox) -> list[str]:
    """Changes the vendor holds twice or would have acted on twice: a HubSpot unsubscribe recorded
    twice, a contact created twice, a tag created twice, a confirmation email sent twice."""
    problems: list[str] = []
    unsubscribes: Counter[tuple[str, str]] = Counter()
    for method, path, body, status, mutated in sandbox.mutations():
        if method == "POST" and path == UNSUBSCRIBE_V3 and isinstance(body, Mapping):
            unsubscribes[(str(body.get("emailAddress")).lower(), str(body.get("subscriptionId")))] += 1
    problems += [f"HubSpot unsubscribe of {k} recorded {n} times" for k, n in unsubscribes.items() if n > 1]
    emails = Counter(str(c.properties.get("email") or "").lower() for c in sandbox.hubspot.contacts.values())
    problems += [f"{n} HubSpot contacts with email {e}" for e, n in emails.items() if e and n > 1]
    for audience in sandbox.mailchimp.audiences.values():
        names = Counter(t.name.strip().casefold() for t in audience.tags.values())
        problems += [f"tag {name!r} created {n} times on {audience.id}" for name, n in names.items() if n > 1]
    problems += [f"{n} confirmation emails sent to {e}" for e, n in sandbox.mailchimp.confirmations.items() if n > 1]
    return problems


@dataclass
class Attempts:
    """The runs of one scenario: exit codes, seconds, what each printed."""

    runs: list[Run] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def codes(self) -> list[int]:
        return [r.code for r in self.runs]

    @property
    def converged(self) -> bool:
        return bool(self.runs) and self.runs[-1].code == 0


def apply_until_converged(env: Env, *, max_runs: int, between: Callable[[Run], None] = lambda run: None,
                          after_each: Callable[[Run], None] = lambda run: None) -> Attempts:
    """`--apply --yes` until it exits 0 (at most `max_runs` times); `between` runs before each retry."""
    attempts = Attempts()
    for index in range(max_runs):
        if index:
            between(attempts.runs[-1])
        started = time.monotonic()
        run = env.cli("--apply", "--yes", "--no-redact")
        attempts.seconds.append(time.monotonic() - started)
        attempts.runs.append(run)
        after_each(run)
        if run.code == 0:
            break
    return attempts


def no_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" not in text


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table (the printed fault matrix and crash sweep)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def assert_no_harm(view: VendorView, config: Config, before: Mapping[str, Mapping[str, MemberView]]) -> None:
    """What must hold after ANY run, even one that failed or was killed half-way (the full invariants
    of `assert_compliance` hold once an apply finishes): nobody the run found opted out (in Mailchimp
    or in HubSpot) or critical was made subscribed or pending, and no unsubscribed member was
    archived before its opt-out reached HubSpot. Only members whose status changed are looked up."""
    critical: set[str] = set()
    for lid in config.exclusions.critical:
        critical.update(view.list_members(lid))
    problems: list[str] = []
    for audience in config.audiences.values():
        lid = audience.mailchimp_list_id
        earlier = before.get(lid, {})
        r4 = audience.opt_outs.from_hubspot or tuple(config.subscriptions.values())
        to_hs = audience.opt_outs.to_hubspot
        for email, m in view.members(lid).items():
            was = earlier.get(email)
            if was is not None and was.status == m.status:
                continue
            if m.status in ("subscribed", "pending"):
                if was is not None and was.status in OPTED_OUT:
                    problems.append(f"{email} was {was.status} and is now {m.status}")
                if view.opted_out(email, r4):
                    problems.append(f"{email} is opted out in HubSpot and was made {m.status}")
            if m.status in LIVE and view.contact_id(email) in critical:
                problems.append(f"critical contact {email} was made {m.status}")
            if m.status == "archived" and was is not None and to_hs is not None and was.status in to_hs.statuses \
                    and view.contact(email) is not None:
                missing = [sid for sid in to_hs.subscriptions
                           if (view.subscription(email, sid) or {}).get("status") != "NOT_SUBSCRIBED"]
                if missing:
                    problems.append(f"{email} was archived before its opt-out reached HubSpot ({missing})")
    assert not problems, "compliance invariants broken by a run:\n" + "\n".join(problems)


def print_at_end(request: Any, title: str, text: str) -> None:
    """Print a summary past pytest's capture (fixture teardowns are captured like tests)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_sep("=", title)
            reporter.write_line(text)
    else:
        reporter.write_sep("=", title)
        reporter.write_line(text)
