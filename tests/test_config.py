"""load_config: typed values, defaults, merging, ${NAME} references, modes, checksum, and the schema's reach."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from reconciler import settings
from reconciler.cli import IO, report_error
from reconciler.config import load_config
from reconciler.config_doc import render, resolve, walk
from reconciler.config_schema import SCHEMA_PATH, load_schema
from reconciler.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config"
ENV = {"HUBSPOT_TOKEN": "pat-hub", "MAILCHIMP_API_KEY": "abc-us21", "TEAMS_WEBHOOK_URL": "https://teams.example.org/x",
       "SLACK_WEBHOOK_URL": "https://hooks.example.org/y"}

MINIMAL = """\
version: 1
hubspot: {token: "${HUBSPOT_TOKEN}"}
mailchimp: {api_key: "${MAILCHIMP_API_KEY}"}
audiences:
  main:
    mailchimp_list_id: "abc123def4"
    streams:
      - name: general
        sources: [{list: "719", tag: Recruitment}]
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, env: dict[str, str] | None = None, mode: str = "validate") -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(path, ENV if env is None else env, mode=mode)
    return raised.value.problems


def test_example_config_gives_the_spec_values() -> None:
    config, warnings = load_config(EXAMPLE, ENV, mode="run")
    assert warnings == []
    assert config.version == 1
    assert config.hubspot == settings.HubSpotSettings(token="pat-hub", base_url="https://api.hubapi.com",
                                                      rate_limit=settings.RateLimit(100, 10.0))
    assert config.mailchimp.api_key == "abc-us21" and config.mailchimp.base_url is None
    assert config.mailchimp.resolved_base_url() == "https://us21.api.mailchimp.com/3.0"
    assert dict(config.subscriptions) == {"marketing": "289137112"}
    assert config.exclusions.critical == ("762", "773")
    assert dict(config.exclusions.hard) == {"active_deals": ("717",)}
    main = config.audience("main")
    assert main.mailchimp_list_id == "abc123def4" and main.member_cap == 5000
    assert dict(main.merge_fields) == {"FNAME": "firstname", "LNAME": "lastname"}
    assert [s.name for s in main.streams] == ["general", "manual_override"]
    assert main.source_lists == ("719", "987", "784")
    assert main.streams[0].exclude == ("active_deals",)
    assert main.streams[0].sources[0].tag_rules == (settings.TagRule("branches", "gt", 1, "General Multi"),)
    assert main.streams[1].sources[0].extra_tags == ("Manual Inclusion",)
    assert main.exempt.matches("manual_thing") and main.exempt.matches("vip") and not main.exempt.matches("Recruitment")
    assert main.source_cleanup and main.restore_archived
    assert main.handover == (settings.Handover("Recruitment Finished", "947", ("719",),
                                               settings.frozen_map({"import_list": "{source_list_name}"})),)
    assert main.opt_outs.to_hubspot == settings.ToHubSpot(("unsubscribed",), ("289137112",), "LEGITIMATE_INTEREST_OTHER",
                                                          "Contact unsubscribed in Mailchimp", False)
    assert main.opt_outs.from_hubspot == ("289137112",) and main.opt_outs.from_hubspot_enabled
    assert config.safety.max_archives == settings.Limit(percent=10.0, count=100)
    assert config.safety.max_list_removals == settings.Limit(percent=50.0, count=200)
    assert config.notifications.teams == settings.Notifier("https://teams.example.org/x", ("failed", "unsafe", "stale", "applied"))
    assert config.notifications.slack == settings.Notifier("https://hooks.example.org/y", ("failed", "unsafe"))
    assert config.audit.path == ".reconciler/audit.sqlite"
    assert config.files == (str(EXAMPLE / "reconciler.yaml"),)
    assert re.fullmatch(r"[0-9a-f]{64}", config.checksum)


def test_absent_keys_take_the_defaults_of_settings(tmp_path: Path) -> None:
    config, _ = load_config(write(tmp_path, MINIMAL), ENV, mode="run")
    main = config.audience("main")
    # Opt-outs take the loader's safe defaults, not the dataclass's "both off" (SPEC §4 R4, R11):
    # R4 is on; with no subscription defined, R11 has nothing to unsubscribe from and stays off.
    defaults = settings.Audience(name="main", mailchimp_list_id="abc123def4",
                                 streams=(settings.Stream("general", (), (settings.Source("719", "Recruitment"),)),),
                                 opt_outs=settings.OptOuts(to_hubspot=None, from_hubspot=(), from_hubspot_enabled=True))
    assert main == defaults
    assert config.hubspot.base_url == settings.HubSpotSettings(token=None).base_url
    assert config.hubspot.rate_limit == settings.RateLimit()
    assert config.mailchimp.max_connections == settings.MailchimpSettings(api_key=None).max_connections
    assert config.safety == settings.Safety() and config.notifications == settings.Notifications()
    assert config.audit == settings.AuditSettings() and config.exclusions == settings.Exclusions()


def test_schema_defaults_match_settings() -> None:
    schema = load_schema()
    documented = {path: s["default"] for path, s, _ in walk(schema, schema) if "default" in s}
    audience = settings.Audience(name="x", mailchimp_list_id="x")
    assert documented["audit.path"] == settings.AuditSettings().path
    assert documented["hubspot.base_url"] == settings.HubSpotSettings(token=None).base_url
    assert documented["hubspot.rate_limit.requests"] == settings.RateLimit().requests
    assert documented["hubspot.rate_limit.per_seconds"] == settings.RateLimit().per_seconds
    assert documented["mailchimp.max_connections"] == settings.MailchimpSettings(api_key=None).max_connections
    for key in ("new_member_status", "tag_policy", "on_leave", "source_cleanup", "restore_archived"):
        assert documented[f"audiences.<name>.{key}"] == getattr(audience, key)
    to_hubspot = settings.ToHubSpot()
    for key in ("legal_basis", "explanation", "create_missing_contacts"):
        assert documented[f"audiences.<name>.opt_outs.to_hubspot.{key}"] == getattr(to_hubspot, key)
    assert tuple(documented["audiences.<name>.opt_outs.to_hubspot.statuses"]) == to_hubspot.statuses
    assert documented["audiences.<name>.opt_outs.from_hubspot"] is True  # R4 on unless written false


def test_schema_enums_match_settings() -> None:
    schema = load_schema()
    entries = {path: s for path, s, _ in walk(schema, schema)}
    assert tuple(entries["audiences.<name>.tag_policy"]["enum"]) == settings.TAG_POLICIES
    assert tuple(entries["audiences.<name>.on_leave"]["enum"]) == settings.ON_LEAVE
    assert tuple(entries["audiences.<name>.new_member_status"]["enum"]) == settings.NEW_MEMBER_STATUSES
    assert tuple(entries["audiences.<name>.streams[].sources[].tag_rules[].when.op"]["enum"]) == settings.TAG_RULE_OPS
    assert tuple(entries["audiences.<name>.opt_outs.to_hubspot.legal_basis"]["enum"]) == settings.LEGAL_BASES
    assert tuple(entries["notifications.teams.on"]["items"]["enum"]) == settings.NOTIFY_EVENTS
    assert tuple(entries["safety"]["properties"]) == settings.SAFETY_LIMITS


def test_schema_is_valid_2020_12_and_every_key_has_a_description() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    entries = list(walk(schema, schema))
    assert len(entries) > 60
    assert [path for path, s, _ in entries if not s.get("description")] == []

    def objects(node: Any) -> list[dict[str, Any]]:
        found = []
        if isinstance(node, dict):
            if "properties" in node:
                found.append(node)
            for value in node.values():
                found.extend(objects(value))
        return found

    assert all(node.get("additionalProperties") is False for node in objects(schema))


def key_paths(data: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "") -> set[str]:
    """Key paths of `data` (or, with data=SCHEMA, of the schema itself) as the schema's definitions name them.

    A path inside a definition used in several places (a safety limit, a notifier) is named after
    the definition (`#limit.percent`), so that each of its keys counts once, wherever it is used.
    """
    ref = schema.get("$ref", "")
    if ref and json.dumps(root).count(f'"{ref}"') > 1:
        path = "#" + ref.rsplit("/", 1)[1]
    schema = resolve(schema, root)
    walk_schema = data is SCHEMA
    found: set[str] = set()
    names = list(schema.get("properties", {}))
    if isinstance(schema.get("additionalProperties"), dict):
        names.append("<name>")
    if walk_schema or isinstance(data, dict):
        pairs = [(n, SCHEMA) for n in names] if walk_schema else list(data.items())
        for key, value in pairs:
            known = key in schema.get("properties", {})
            child = f"{path}.{key if known else '<name>'}" if path else key
            sub = schema["properties"][key] if known else schema.get("additionalProperties", {})
            found.add(child)
            found |= key_paths(value, sub, root, child)
    if (walk_schema or isinstance(data, list)) and isinstance(schema.get("items"), dict):
        for value in [SCHEMA] if walk_schema else data:
            found |= key_paths(value, schema["items"], root, f"{path}[]")
    return found


SCHEMA: Any = object()  # marker: walk the schema itself rather than a document


def test_example_config_uses_every_key_of_the_schema() -> None:
    import yaml

    schema = load_schema()
    data = yaml.safe_load((EXAMPLE / "reconciler.yaml").read_text(encoding="utf-8"))
    for notifier in data["notifications"].values():
        notifier["on"] = notifier.pop(True)  # YAML 1.1 reads the key `on` as true; our loader keeps the text
    every = key_paths(SCHEMA, schema, schema)
    assert len(every) > 50 and "#limit.percent" in every and "audiences.<name>.streams[].sources[].list" in every
    assert every - key_paths(data, schema, schema) == set()


def test_example_config_starts_with_the_schema_line() -> None:
    first = (EXAMPLE / "reconciler.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/config.schema.json"
    assert (EXAMPLE / first.split("=", 1)[1]).resolve() == SCHEMA_PATH


def test_reference_page_is_generated_from_the_schema() -> None:
    committed = (ROOT / "schemas" / "README.md").read_text(encoding="utf-8")
    assert committed == render(), "run: python -m reconciler.config_doc > schemas/README.md"


def test_directory_merges_files_deeply_and_ignores_subdirectories(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL, "a.yaml")
    write(tmp_path, "audiences:\n  main:\n    on_leave: keep\nsubscriptions: {marketing: \"1\"}\n", "b.yaml")
    write(tmp_path, "colour: ignored because not *.yaml\n", "c.yml")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "colour: ignored because in a subdirectory\n", "d.yaml")
    config, _ = load_config(tmp_path, ENV, mode="run")
    assert config.audience("main").on_leave == "keep"
    assert config.audience("main").mailchimp_list_id == "abc123def4"
    assert dict(config.subscriptions) == {"marketing": "1"}
    assert config.files == (str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))


def test_lists_are_never_merged_across_files(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL + "exclusions: {critical: [\"1\"]}\n", "a.yaml")
    write(tmp_path, "exclusions:\n  critical: [\"2\"]\n", "b.yaml")
    problems = problems_of(tmp_path)
    assert problems == [f"{tmp_path / 'b.yaml'}:2:3 exclusions.critical: also set in {tmp_path / 'a.yaml'}:10:14; "
                        "only mappings merge across files; set this key in one file only"]


def test_references_are_resolved_and_escaped(tmp_path: Path) -> None:
    text = MINIMAL + "audit: {path: \"${AUDIT_DIR}/a-$${literal}.sqlite\"}\n"
    config, _ = load_config(write(tmp_path, text), {**ENV, "AUDIT_DIR": "/var/lib"}, mode="run")
    assert config.audit.path == "/var/lib/a-${literal}.sqlite"
    assert config.hubspot.token == "pat-hub"


def test_checksum_covers_the_document_as_written_not_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    first, _ = load_config(path, ENV, mode="run")
    other_env, _ = load_config(path, {**ENV, "HUBSPOT_TOKEN": "another"}, mode="run")
    assert first.checksum == other_env.checksum
    reordered = write(tmp_path, "# a comment\n" + MINIMAL.replace("version: 1\n", "") + "version: 1\n", "d.yaml")
    assert load_config(reordered, ENV, mode="run")[0].checksum == first.checksum
    changed = write(tmp_path, MINIMAL.replace("Recruitment", "Other"), "e.yaml")
    assert load_config(changed, ENV, mode="run")[0].checksum != first.checksum


def test_missing_variable_is_an_error_under_run_naming_it_and_its_place(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MINIMAL), {"MAILCHIMP_API_KEY": "k-us1"}, mode="run")
    assert problems == [f"{tmp_path / 'c.yaml'}:2:18 hubspot.token: environment variable HUBSPOT_TOKEN is not set; "
                        "set HUBSPOT_TOKEN before --plan or --apply"]


def test_missing_variable_is_a_warning_under_validate(tmp_path: Path) -> None:
    config, warnings = load_config(write(tmp_path, MINIMAL), {}, mode="validate")
    assert config.hubspot.token is None
    assert [w.split(" ", 2)[1] for w in warnings] == ["hubspot.token:", "mailchimp.api_key:",
                                                      "audiences.main.opt_outs.to_hubspot:"]  # no subscription: R11 off


def test_sandbox_mode_allows_missing_credentials_and_disables_unset_webhooks(tmp_path: Path) -> None:
    text = MINIMAL + ("notifications:\n  teams: {webhook_url: \"${TEAMS_WEBHOOK_URL}\", on: [failed]}\n"
                      "  slack: {webhook_url: \"${SLACK_WEBHOOK_URL}\", on: [applied]}\n")
    config, warnings = load_config(write(tmp_path, text), {"SLACK_WEBHOOK_URL": "https://hooks.example.org/z"}, mode="sandbox")
    assert [w.split(" ", 2)[1] for w in warnings] == ["audiences.main.opt_outs.to_hubspot:"]  # only: no subscription
    assert config.hubspot.token is None and config.mailchimp.api_key is None
    assert config.notifications.teams == settings.Notifier(None, ("failed",))
    assert config.notifications.slack == settings.Notifier("https://hooks.example.org/z", ("applied",))
    other = write(tmp_path, MINIMAL + "audit: {path: \"${AUDIT_DIR}/x\"}\n", "o.yaml")
    assert "AUDIT_DIR is not set" in problems_of(other, {}, mode="sandbox")[0]


def test_a_resolved_value_is_never_printed(tmp_path: Path) -> None:
    text = MINIMAL.replace("    streams:", "    new_member_status: \"${STATUS}\"\n    streams:")
    problems = problems_of(write(tmp_path, text), {**ENV, "STATUS": "VALUE-FROM-ENV"})
    assert len(problems) == 1 and "VALUE-FROM-ENV" not in problems[0]
    assert '"${STATUS}" is not allowed' in problems[0]


def test_inline_secret_is_never_echoed(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MINIMAL.replace('"${HUBSPOT_TOKEN}"', "pat-na1-INLINE-SECRET")))
    assert len(problems) == 1 and "INLINE-SECRET" not in problems[0]
    assert problems[0].startswith(f"{tmp_path / 'c.yaml'}:2:18 hubspot.token: a secret written inline")


def test_tag_rule_values_become_typed_rules(tmp_path: Path) -> None:
    text = MINIMAL.replace("sources: [{list: \"719\", tag: Recruitment}]", """sources:
          - list: "719"
            tag: Recruitment
            tag_rules:
              - {when: {property: region, op: in, value: [north, south]}, tag: North}
              - {when: {property: region, op: is_set}, tag: Elsewhere}""")
    source = load_config(write(tmp_path, text), ENV, mode="run")[0].audience("main").streams[0].sources[0]
    assert source.tag_rules == (settings.TagRule("region", "in", ("north", "south"), "North"),
                                settings.TagRule("region", "is_set", True, "Elsewhere"))


def test_from_hubspot_list_resolves_names_to_ids(tmp_path: Path) -> None:
    text = MINIMAL + "subscriptions: {marketing: \"11\", news: \"22\"}\n"
    text = text.replace("    streams:", "    opt_outs: {from_hubspot: [news]}\n    streams:")
    opt_outs = load_config(write(tmp_path, text), ENV, mode="run")[0].audience("main").opt_outs
    assert opt_outs == settings.OptOuts(to_hubspot=None, from_hubspot=("22",), from_hubspot_enabled=True)


def test_same_tag_in_two_sources_is_one_primary_role(tmp_path: Path) -> None:
    text = MINIMAL.replace("sources: [{list: \"719\", tag: Recruitment}]",
                           "sources: [{list: \"719\", tag: Recruitment}, {list: \"720\", tag: recruitment}]")
    config, _ = load_config(write(tmp_path, text), ENV, mode="run")
    assert config.audience("main").primary_tags == ("Recruitment",)


def test_unknown_mode_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_config(write(tmp_path, MINIMAL), ENV, mode="plan")


def test_unexpected_error_is_one_line_with_a_hint_and_a_traceback_only_under_debug() -> None:
    err = io.StringIO()
    streams = IO(stdout=io.StringIO(), stderr=err, env={}, stdin_isatty=False)
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError as error:
        assert report_error(error, streams, debug=False) == 1
        assert err.getvalue() == "error: unexpected RuntimeError: boom second line\nre-run with --debug for the traceback\n"
        err.truncate(0), err.seek(0)
        assert report_error(error, streams, debug=True) == 1
        assert "Traceback" in err.getvalue()


def test_a_value_from_the_environment_is_hidden_even_when_a_check_quotes_it(tmp_path: Path) -> None:
    text = MINIMAL + "exclusions: {critical: [\"${CRITICAL_LIST}\"]}\n"
    text = text.replace('list: "719"', 'list: "${CRITICAL_LIST}"')
    problems = problems_of(write(tmp_path, text), {**ENV, "CRITICAL_LIST": "7777"})
    assert len(problems) == 1 and "critical list" in problems[0]
    assert "7777" not in problems[0] and "***" in problems[0]
