"""End-to-end: the demo under `hubspot.api_version: 2026-03`, through the real CLI and sandbox.

The demo's plan, apply and second plan with the dated HubSpot APIs reach the end state the legacy
demo tests state (test_e2e_demo, test_e2e_rules_demo: the same counts, lists, members and opt-outs),
R11's opt-outs go in batch status writes (one audit row per contact all the same), and no request
goes to a v3 path. On a Professional portal the batch write is refused once and R11 sends one
request per contact, to the same end state.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import (
    MARKETING,
    assert_compliance,
    changes_of,
    demo_config_doc,
    members_by_list,
    plan_json,
    started,
)

from test_e2e_demo import CONTACTS, LISTS, SEED, SEED_MEMBERS  # the demo seed, read once
PREFS = "/communication-preferences/2026-03"
BATCH_WRITE = f"POST {PREFS}/statuses/batch/write"
SINGLE_WRITE = f"POST {PREFS}/statuses/{{subscriberIdString}}"
BASIS, WHY = "LEGITIMATE_INTEREST_OTHER", "Contact unsubscribed in Mailchimp"


def _email(cid: str) -> str:
    return CONTACTS[cid]["email"]


@pytest.mark.parametrize("tier", ["enterprise", "professional"])
def test_demo_under_2026_03_reaches_the_demos_end_state(tmp_path: Path, tier: str) -> None:
    seed = copy.deepcopy(SEED)
    seed["hubspot"]["tier"] = tier
    doc: dict[str, Any] = demo_config_doc()
    doc["audit"] = {"path": str(tmp_path / ".reconciler" / "audit.sqlite")}
    doc["hubspot"]["api_version"] = "2026-03"
    with started(tmp_path, seed, doc) as env:
        config = env.config
        assert config.hubspot.api_version == "2026-03"
        plan = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        before = members_by_list(env.view, config)
        r11 = sorted(c["email"] for c in changes_of(plan, "unsubscribe_contact"))
        applied = env.cli("--apply", "--yes", "--no-redact")
        assert applied.code == 0 and "converged" in applied.out, applied.text
        assert "74 applied" in applied.out and "1 refused" in applied.out  # the legacy demo's counts
        again = env.cli("--plan", "--detailed-exitcode")
        assert again.code == 0 and "No changes" in again.out, again.text

        counts = env.sandbox.counters()
        assert not [k for k in counts if "/v3/" in k], sorted(counts)  # every HubSpot call at a dated path
        if tier == "enterprise":
            assert (counts[BATCH_WRITE], counts.get(SINGLE_WRITE, 0)) == (math.ceil(len(r11) / 100), 0)
        else:  # the batch write refused once (403), then one request per contact
            assert (counts[BATCH_WRITE], counts[SINGLE_WRITE]) == (1, len(r11))

        view = env.view
        assert_compliance(view, config, before)
        # The legacy demo's expectations (test_e2e_demo, test_e2e_rules_demo), stated from the seed.
        unsubscribed = sorted(e for e, m in SEED_MEMBERS.items() if m["status"] == "unsubscribed")
        assert r11 == unsubscribed and len(unsubscribed) == 31
        members = view.members()
        for email in unsubscribed:
            status = view.subscription(email, MARKETING)
            assert (status["status"], status["legalBasis"], status["legalBasisExplanation"]) == \
                ("NOT_SUBSCRIBED", BASIS, WHY), email
            assert view.contact(email)["properties"][f"hs_email_optout_{MARKETING}"] == "true"
            if email.startswith("unsub"):  # the 30 of list 719's production case (the 31st is archived by R2)
                assert members[email].status == "unsubscribed"  # R7: never resubscribed, not archived either
        source = LISTS["719"]["members"]
        critical = [c for c in source if c in LISTS["762"]["members"]]
        excluded = [c for c in source if c in LISTS["717"]["members"]]
        created = [c for c in source if c not in critical and c not in excluded]
        assert members[_email(critical[0])].status == "archived"
        assert not [c for c in excluded if _email(c) in members]
        for cid in created:
            props = CONTACTS[cid]["properties"]
            tag = "General Multi" if int(props["branches"]) > 1 else "Recruitment"
            assert (members[_email(cid)].status, members[_email(cid)].tags) == ("subscribed", frozenset({tag}))
        assert view.list_members("719") == set(created)
        assert view.list_members("762") == set(LISTS["762"]["members"])
        assert view.list_members("947") == {"1501"}  # R12's handover

        audit = env.cli("--audit", "--action", "unsubscribe_contact", "--format", "json", "--no-redact")
        rows = audit.json()
        for phase in ("attempted", "outcome"):  # one row per contact and phase, batch or not
            assert sorted(r["email"] for r in rows if r["phase"] == phase) == unsubscribed
        assert {(r["outcome"], r["legal_basis"], r["explanation"]) for r in rows if r["phase"] == "outcome"} == \
            {("applied", BASIS, WHY)}
