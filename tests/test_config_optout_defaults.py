"""Safe opt-out defaults (issue 11 point 7): R4 and R11 are on unless the config writes `false`.

`from_hubspot` defaults to true; `to_hubspot` defaults to on, for `[unsubscribed, cleaned]`, when
`subscriptions` names exactly one subscription. Turning either off, or leaving R11 off for want of
a single subscription, is allowed but never silent: --validate and --plan warn, naming the
audience, the key's place and the risk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import settings
from reconciler.config import load_config
from reconciler.errors import ConfigError
from e2e_helpers import (
    LIST_ID, MARKETING, changes_of, contact, hub_list, make_seed, member, plan_json, run_cli, small_config, started,
)

ENV = {"HUBSPOT_TOKEN": "pat-hub", "MAILCHIMP_API_KEY": "abc-us21"}

BASE = """\
version: 1
hubspot: {token: "${HUBSPOT_TOKEN}"}
mailchimp: {api_key: "${MAILCHIMP_API_KEY}"}
subscriptions:
SUBSCRIPTIONS
audiences:
  main:
    mailchimp_list_id: "abc123def4"
    streams:
      - name: general
        sources: [{list: "719", tag: Recruitment}]
OPT_OUTS"""


def write(tmp_path: Path, subscriptions: dict[str, str], opt_outs: str = "") -> Path:
    lines = "\n".join(f'  {name}: "{sid}"' for name, sid in subscriptions.items()) or "  {}"
    text = BASE.replace("subscriptions:\nSUBSCRIPTIONS", "subscriptions:\n" + lines if subscriptions else "subscriptions: {}")
    text = text.replace("OPT_OUTS", opt_outs)
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of the first line of `path` holding `needle`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, start=1) if needle in line)


def key_place(path: Path, needle: str, key: str) -> str:
    """`file:line:column` of `key` on the first line holding `needle` (where a warning must point)."""
    number = line_of(path, needle)
    line = path.read_text(encoding="utf-8").splitlines()[number - 1]
    return f"{path}:{number}:{line.index(key) + 1}"


def opt_out_warnings(warnings: list[str]) -> list[str]:
    return [w for w in warnings if ".opt_outs." in w.split(" ", 2)[1]]


# -- defaults applied --------------------------------------------------------------------------


def test_one_subscription_turns_r11_on_for_unsubscribed_and_cleaned_and_r4_on(tmp_path: Path) -> None:
    config, warnings = load_config(write(tmp_path, {"marketing": "289137112"}), ENV, mode="run")
    opt_outs = config.audience("main").opt_outs
    defaults = settings.ToHubSpot()
    assert opt_outs.to_hubspot == settings.ToHubSpot(
        statuses=("unsubscribed", "cleaned"), subscriptions=("289137112",), legal_basis=defaults.legal_basis,
        explanation=defaults.explanation, create_missing_contacts=False)
    assert opt_outs.from_hubspot == ("289137112",) and opt_outs.from_hubspot_enabled
    assert warnings == []


def test_two_subscriptions_leave_r11_off_with_a_located_warning_saying_how_to_turn_it_on(tmp_path: Path) -> None:
    path = write(tmp_path, {"marketing": "11", "news": "22"})
    config, warnings = load_config(path, ENV, mode="validate")
    opt_outs = config.audience("main").opt_outs
    assert opt_outs.to_hubspot is None  # which subscription to unsubscribe from is not ours to guess
    assert opt_outs.from_hubspot == ("11", "22") and opt_outs.from_hubspot_enabled  # R4: every subscription
    [warning] = opt_out_warnings(warnings)
    assert warning.startswith(f"{key_place(path, '  main:', 'main')} audiences.main.opt_outs.to_hubspot: ")
    assert "R11 is off" in warning and "2 subscriptions (marketing, news)" in warning
    assert "Mailchimp unsubscribes in audience main will not reach HubSpot" in warning
    assert "to turn R11 on, write `to_hubspot: {subscriptions: [marketing, news]}` under opt_outs" in warning


def test_no_subscription_leaves_r11_off_with_a_warning_pointing_at_the_opt_outs_key(tmp_path: Path) -> None:
    path = write(tmp_path, {}, "    opt_outs: {from_hubspot: true}\n")
    config, warnings = load_config(path, ENV, mode="validate")
    opt_outs = config.audience("main").opt_outs
    assert opt_outs == settings.OptOuts(to_hubspot=None, from_hubspot=(), from_hubspot_enabled=True)
    [warning] = opt_out_warnings(warnings)
    assert warning.startswith(f"{key_place(path, 'opt_outs:', 'opt_outs')} audiences.main.opt_outs.to_hubspot: ")
    assert "names no subscription, so R11 is off" in warning and "define the HubSpot subscription" in warning


def test_from_hubspot_true_without_to_hubspot_is_no_longer_an_error(tmp_path: Path) -> None:
    # It used to be refused; now `true` means to_hubspot's subscriptions, here the defaulted one.
    path = write(tmp_path, {"marketing": "289137112"}, "    opt_outs: {from_hubspot: true}\n")
    opt_outs = load_config(path, ENV, mode="run")[0].audience("main").opt_outs
    assert opt_outs.to_hubspot is not None and opt_outs.to_hubspot.subscriptions == ("289137112",)
    assert opt_outs.from_hubspot == ("289137112",) and opt_outs.from_hubspot_enabled


def test_a_written_to_hubspot_keeps_its_own_statuses_default(tmp_path: Path) -> None:
    path = write(tmp_path, {"marketing": "11", "news": "22"},
                 "    opt_outs:\n      to_hubspot: {subscriptions: [news], legal_basis: NON_GDPR}\n")
    config, warnings = load_config(path, ENV, mode="run")
    opt_outs = config.audience("main").opt_outs
    assert opt_outs.to_hubspot == settings.ToHubSpot(statuses=("unsubscribed",), subscriptions=("22",),
                                                     legal_basis="NON_GDPR")
    assert opt_outs.from_hubspot == ("22",)  # to_hubspot's subscriptions, not every one
    assert opt_out_warnings(warnings) == []


# -- explicit false --------------------------------------------------------------------------


def test_to_hubspot_false_turns_r11_off_with_a_warning_naming_the_risk(tmp_path: Path) -> None:
    path = write(tmp_path, {"marketing": "289137112"}, "    opt_outs:\n      to_hubspot: false\n")
    config, warnings = load_config(path, ENV, mode="run")
    opt_outs = config.audience("main").opt_outs
    assert opt_outs.to_hubspot is None
    assert opt_outs.from_hubspot == ("289137112",) and opt_outs.from_hubspot_enabled  # R4 stays on
    assert opt_out_warnings(warnings) == [
        f"{key_place(path, 'to_hubspot: false', 'to_hubspot')} audiences.main.opt_outs.to_hubspot: opt_outs.to_hubspot is "
        "false: Mailchimp unsubscribes in audience main will not reach HubSpot, so HubSpot may email people who "
        "opted out; to turn R11 on, write `to_hubspot: {subscriptions: [marketing]}` under opt_outs"]


def test_from_hubspot_false_turns_r4_off_with_a_warning_naming_the_risk(tmp_path: Path) -> None:
    path = write(tmp_path, {"marketing": "289137112"}, "    opt_outs:\n      from_hubspot: false\n")
    config, warnings = load_config(path, ENV, mode="run")
    opt_outs = config.audience("main").opt_outs
    assert opt_outs.to_hubspot is not None  # R11 keeps its default
    assert opt_outs.from_hubspot == () and not opt_outs.from_hubspot_enabled
    assert opt_out_warnings(warnings) == [
        f"{key_place(path, 'from_hubspot: false', 'from_hubspot')} audiences.main.opt_outs.from_hubspot: opt_outs.from_hubspot "
        "is false: people who opt out in HubSpot stay subscribed in Mailchimp audience main (opted out of all "
        "email is still honoured); remove the key to turn R4 on (it defaults to true)"]


def test_each_audience_gets_its_own_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, {"marketing": "289137112"}, """\
    opt_outs: {to_hubspot: false, from_hubspot: false}
  events:
    mailchimp_list_id: "bbb222ccc3"
    streams:
      - name: events
        sources: [{list: "720", tag: Events}]
    opt_outs: {from_hubspot: false}
""")
    config, warnings = load_config(path, ENV, mode="validate")
    assert config.audience("main").opt_outs == settings.OptOuts()  # both off: the dataclass's "off"
    assert config.audience("events").opt_outs.to_hubspot is not None
    heads = [w.split(": ", 1)[0] for w in opt_out_warnings(warnings)]
    main, events = "to_hubspot: false", "    opt_outs: {from_hubspot: false}"
    assert heads == [f"{key_place(path, main, 'to_hubspot')} audiences.main.opt_outs.to_hubspot",
                     f"{key_place(path, main, 'from_hubspot')} audiences.main.opt_outs.from_hubspot",
                     f"{key_place(path, events, 'from_hubspot')} audiences.events.opt_outs.from_hubspot"]
    assert "audience events (opted out" in opt_out_warnings(warnings)[2]


@pytest.mark.parametrize("opt_outs, what", [
    ("{to_hubspot: true}", "true is not supported; write a mapping to configure R11"),
    ("{from_hubspot: []}", "must not be empty; list at least one, or write false to turn it off"),
])
def test_off_must_be_written_false(tmp_path: Path, opt_outs: str, what: str) -> None:
    path = write(tmp_path, {"marketing": "289137112"}, f"    opt_outs: {opt_outs}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, ENV, mode="validate")
    [problem] = raised.value.problems
    assert what in problem and problem.startswith(f"{path}:{line_of(path, 'opt_outs:')}:")


# -- through the CLI -------------------------------------------------------------------------


def test_validate_prints_the_warnings_and_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, {"marketing": "289137112"}, "    opt_outs: {to_hubspot: false, from_hubspot: false}\n")
    run = run_cli("--validate", "--config", str(path), env=ENV)
    assert run.code == 0, run.err
    assert run.out == "config OK: 1 audience, 1 file\n"
    warned = [line for line in run.err.splitlines() if line.startswith("warning: ")]
    assert [w.split(": ", 2)[1] for w in warned] == [
        f"{key_place(path, 'opt_outs:', 'to_hubspot')} audiences.main.opt_outs.to_hubspot",
        f"{key_place(path, 'opt_outs:', 'from_hubspot')} audiences.main.opt_outs.from_hubspot"]
    assert "HubSpot may email people who opted out" in warned[0]
    assert "stay subscribed in Mailchimp audience main" in warned[1]


def test_validate_of_the_defaults_prints_no_opt_out_warning(tmp_path: Path) -> None:
    run = run_cli("--validate", "--config", str(write(tmp_path, {"marketing": "289137112"})), env=ENV)
    assert run.code == 0 and run.err == "", run.err


# -- the defaults drive the plan (through the CLI, against the sandbox) ----------------------


def _seed() -> dict:
    contacts = [contact("1", "out.hubspot@example.com", unsubscribed=True),
                contact("2", "cleaned@example.com"),
                contact("3", "stays@example.com")]
    members = [member("out.hubspot@example.com", tags=["Recruitment"]),
               member("cleaned@example.com", status="cleaned", tags=["Recruitment"]),
               member("stays@example.com", tags=["Recruitment"])]
    return make_seed(contacts, [hub_list("719", "Recruitment", ["1", "2", "3"])], members)


def test_a_config_without_opt_outs_plans_r4_and_r11_for_cleaned_members(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = small_config()
    doc["audiences"]["main"].pop("opt_outs")
    with started(tmp_path, _seed(), doc) as env:
        run = env.cli("--plan", "--format", "json", "--no-redact")
        plan = plan_json(run)
        assert "opt_outs" not in run.err  # on by default: nothing to warn about
        [r11] = changes_of(plan, "unsubscribe_contact", "cleaned@example.com")  # `cleaned` counts by default
        assert MARKETING in str(r11) and "LEGITIMATE_INTEREST_OTHER" in str(r11)
        [r4] = changes_of(plan, "unsubscribe_member", "out.hubspot@example.com")
        assert r4["target"] == "main"
        assert not changes_of(plan, None, "stays@example.com")
        assert env.config.audience("main").opt_outs.to_hubspot is not None


def test_plan_with_both_off_warns_and_plans_neither(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = small_config(opt_outs={"to_hubspot": False, "from_hubspot": False})
    with started(tmp_path, _seed(), doc) as env:
        run = env.cli("--plan", "--format", "json", "--no-redact")
        plan = plan_json(run)
        warned = [line for line in run.err.splitlines() if line.startswith("warning: ")]
        assert any("audiences.main.opt_outs.to_hubspot: opt_outs.to_hubspot is false" in w for w in warned), run.err
        assert any("audiences.main.opt_outs.from_hubspot: opt_outs.from_hubspot is false" in w for w in warned)
        assert not changes_of(plan, "unsubscribe_contact") and not changes_of(plan, "unsubscribe_member")
        assert LIST_ID == env.config.audience("main").mailchimp_list_id
