"""Apply notifications (SPEC §8): Teams (Adaptive Card via a Workflows webhook) and Slack.

Separate from the engine so delivery can fail without touching the apply's outcome: every
error here is caught and returned as a line to report; the exit code never changes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from reconciler.render.mask import mask_text
from reconciler.settings import Notifications, Notifier

EVENT_BY_EXIT = {1: "failed", 5: "failed", 3: "unsafe", 4: "stale", 0: "applied"}
TITLES = {
    "failed": "Reconcile apply failed",
    "unsafe": "Reconcile apply refused: unsafe plan",
    "stale": "Reconcile apply refused: stale plan",
    "applied": "Reconcile apply finished",
    "drift": "Reconcile drift: the live state differs from the config",
}


@dataclass(frozen=True)
class ApplyReport:
    """What a notification says about one apply."""

    run_id: str
    exit_code: int
    counts: Mapping[str, int] = field(default_factory=dict)  # outcome -> count (applied, failed, ...)
    failures: Sequence[str] = ()  # one line each, emails already masked
    message: str = ""  # the one-line error or safety/stale summary, if any
    kind: str | None = None  # "drift" for a plan's report; None: the apply's exit code decides
    by_rule: Sequence[tuple[str, int]] = ()  # drift: ("R2 archive_member main", count), biggest first

    @property
    def event(self) -> str:
        return self.kind or EVENT_BY_EXIT.get(self.exit_code, "failed")


def drift_report(plan: Any, *, top: int = 15) -> ApplyReport:
    """What a `drift` notification says about a plan that found changes: counts by rule, action
    and target (never an email), biggest first; the rest summed in one line."""
    counts: dict[str, int] = {}
    for change in plan.changes:
        key = f"{change.reason.split(' ', 1)[0]} {change.action} {change.target}"
        counts[key] = counts.get(key, 0) + 1
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if len(rows) > top:
        rows = rows[:top - 1] + [(f"{len(rows) - top + 1} other rule/action/target groups",
                                  sum(n for _, n in rows[top - 1:]))]
    reported = f" and {len(plan.reports)} reported item(s)" if plan.reports else ""
    message = (f"{len(plan.changes)} change(s){reported}: an apply would change the live platforms. "
               f"Review with `reconcile --plan`; plan checksum {plan.checksum[:16]}.")
    return ApplyReport(run_id=f"plan {plan.checksum[:12]}", exit_code=2, message=message, kind="drift",
                       by_rule=rows)


def _facts(report: ApplyReport) -> list[tuple[str, str]]:
    if report.kind == "drift":
        return [("Plan", report.run_id)] + [(key, str(count)) for key, count in report.by_rule]
    facts = [("Run", report.run_id), ("Exit code", str(report.exit_code))]
    facts += [(name.replace("_", " ").capitalize(), str(count)) for name, count in sorted(report.counts.items())]
    return facts


def teams_payload(report: ApplyReport, top: int = 5) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": TITLES[report.event], "wrap": True},
        {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(report)]},
    ]
    if report.message:
        body.append({"type": "TextBlock", "text": report.message, "wrap": True})
    if report.failures:
        body.append({"type": "TextBlock", "weight": "Bolder", "text": f"Top failures ({len(report.failures)})"})
        body += [{"type": "TextBlock", "text": line, "wrap": True, "spacing": "None"} for line in report.failures[:top]]
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "body": body}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def slack_payload(report: ApplyReport, top: int = 5) -> dict[str, Any]:
    facts = "\n".join(f"*{k}:* {v}" for k, v in _facts(report))
    text = f"{TITLES[report.event]}\n{facts}"
    if report.message:
        text += f"\n{report.message}"
    if report.failures:
        text += f"\n*Top failures ({len(report.failures)}):*\n" + "\n".join(f"• {line}" for line in report.failures[:top])
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}]}


def _post_json(url: str, payload: dict[str, Any], timeout: float) -> int:
    """POST `payload` and return the HTTP status. The standard library, not requests: urllib3 logs
    each request line at DEBUG, and a webhook URL's path is its secret."""
    if not url.lower().startswith(("https://", "http://")):
        raise ValueError("not an http(s) URL")
    request = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            return int(response.status)
    except urllib.error.HTTPError as answered:
        answered.close()
        return int(answered.code)


def _deliver(name: str, notifier: Notifier, payload: dict[str, Any], timeout: float) -> str | None:
    try:
        status = _post_json(notifier.webhook_url or "", payload, timeout)
    except Exception as exc:  # noqa: BLE001 - a bad URL raises many kinds; none may escape
        # The webhook URL is a secret: name the channel and the error class, never the URL.
        return f"notify: {name} webhook not reached ({type(exc).__name__}); the apply result is unchanged"
    if status >= 300:
        return f"notify: {name} webhook answered HTTP {status}; the apply result is unchanged"
    return None


def notify(notifications: Notifications, report: ApplyReport, *, timeout: float = 10.0) -> list[str]:
    """Post one message per configured channel whose `on` holds this apply's event.

    Returns problem lines to report; never raises for a delivery failure."""
    problems: list[str] = []
    # A channel is a shared room: emails are masked there whatever the terminal showed.
    report = replace(report, message=mask_text(report.message), failures=[mask_text(f) for f in report.failures])
    channels = (("teams", notifications.teams, teams_payload), ("slack", notifications.slack, slack_payload))
    for name, notifier, build in channels:
        if notifier is None or not notifier.webhook_url or report.event not in notifier.on:
            continue
        problem = _deliver(name, notifier, build(report), timeout)
        if problem:
            problems.append(problem)
    return problems
