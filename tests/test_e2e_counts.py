"""End-to-end: request counts of a no-change plan and apply on a converged portal big enough to page.

The demo is too small to show batching (every list fits one page); here 1,200 source contacts,
1,450 live and 300 archived members make the issue's bound bite: per list ceil(size/250) pages,
ceil(C/100) + ceil(U/100) contact batch reads, ceil(M/1000) + ceil(A/1000) member pages, plus a
fixed handful of reads, plus ceil(C/500) + ceil(U_live/500) searches for other holders of the
emails (R1).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from e2e_helpers import contact, hub_list, is_write, make_seed, member, small_config, started

C, OUTSIDE_LIVE, ARCHIVED = 1200, 250, 300


def _converged_seed() -> dict:
    contacts = [contact(str(1000 + i), f"person{i:05d}@example.com", firstname=f"P{i}", lastname="Big")
                for i in range(C)]
    members = [member(f"person{i:05d}@example.com", tags=["Recruitment"], FNAME=f"P{i}", LNAME="Big")
               for i in range(C)]
    members += [member(f"reader{i:05d}@example.org", tags=["Newsletter"]) for i in range(OUTSIDE_LIVE)]
    members += [member(f"former{i:05d}@example.org", status="archived", tags=["Recruitment"]) for i in range(ARCHIVED)]
    return make_seed(contacts, [hub_list("719", "Recruitment", [c["id"] for c in contacts]),
                                hub_list("717", "Active Deals", [])], members)


def test_no_change_plan_and_apply_stay_within_the_read_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with started(tmp_path, _converged_seed(), small_config()) as env:
        config = env.config
        sizes = {"719": C, "762": 0, "717": 0, "947": 0}
        assert set(sizes) == {*config.exclusions.critical, "717", "719", "947"}
        live, outside = C + OUTSIDE_LIVE, OUTSIDE_LIVE + ARCHIVED
        bound = (sum(max(1, math.ceil(n / 250)) for n in sizes.values()) + math.ceil(C / 100)
                 + math.ceil(outside / 100) + math.ceil(live / 1000) + math.ceil(ARCHIVED / 1000) + 10)
        # R1: other holders of the source contacts' and the live members' emails, 500 emails a search.
        bound += math.ceil(C / 500) + math.ceil(OUTSIDE_LIVE / 500)

        plan = env.cli("--plan", "--detailed-exitcode")
        assert plan.code == 0, plan.text
        counts = env.sandbox.counters()
        assert not {k: n for k, n in counts.items() if is_write(k)}, counts
        assert sum(counts.values()) <= bound, (sum(counts.values()), bound, counts)
        assert counts["GET /crm/v3/lists/{listId}/memberships"] >= math.ceil(C / 250)  # really paged

        env.sandbox.reset_counters()
        again = env.cli("--apply", "--yes")
        assert again.code == 0 and "No changes" in again.out, again.text
        assert not {k: n for k, n in env.sandbox.counters().items() if is_write(k)}
