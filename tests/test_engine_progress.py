"""Progress of long steps: bars on a terminal, one plain line per finished step otherwise (SPEC §5)."""

from __future__ import annotations

import io

from reconciler.engine import IO, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_off_a_terminal_one_per_finished_step() -> None:
    err = io.StringIO()
    with progress(IO(stdout=io.StringIO(), stderr=err, env={}), "observe") as report:
        for done in (250, 500, 719):
            report("hubspot list 719 Recruitment", done, 719)
        report("hubspot list 719 Recruitment", 719, 719)  # repeated: not printed again
        report("mailchimp main members", 3, None)
    assert err.getvalue().splitlines() == ["observe: hubspot list 719 Recruitment: 719/719",
                                           "observe: mailchimp main members: 3"]


def test_bars_on_a_terminal_show_each_step_and_its_count() -> None:
    err = _Terminal()
    with progress(IO(stdout=io.StringIO(), stderr=err, env={}, stderr_isatty=True), "apply") as report:
        report("create_member", 120, 500)
        report("create_member", 500, 500)
    shown = err.getvalue()
    assert "apply: create_member" in shown and "500/500" in shown
