"""Loading the configuration: YAML with positions -> ${NAME} references -> schema and semantic checks -> Config.

The one entry point the CLI and the engine use (`load_config`); the steps live in config_yaml,
config_schema and config_checks so each stays small and can be read alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from reconciler.config_checks import SECRET_PATHS, SemanticChecker
from reconciler.config_schema import SchemaChecker
from reconciler.config_yaml import Document, KeyPath, Location, load_documents, problem, walk_strings
from reconciler.errors import ConfigError
from reconciler.settings import (
    DEFAULT_TO_HUBSPOT_STATUSES, Audience, AuditSettings, Config, Exclusions, Exempt, Handover, HubSpotSettings, Limit, MailchimpSettings,
    Notifications, Notifier, OptOuts, RateLimit, SAFETY_LIMITS, Safety, Source, Stream, TagRule, ToHubSpot,
    frozen_map,
)

MODES = ("validate", "run", "sandbox")
# Under --sandbox these come from the sandbox itself (credentials, base URLs) or may be left
# unset to disable a notification, so a missing variable there is not a problem.
SANDBOX_OPTIONAL: tuple[KeyPath, ...] = SECRET_PATHS + (("hubspot", "base_url"), ("mailchimp", "base_url"))
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_config(path: str | Path, env: Mapping[str, str], *, mode: str) -> tuple[Config, list[str]]:
    """The typed, frozen Config and warning lines; raises ConfigError with every problem found."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    doc, problems = load_documents(Path(path))
    if doc is None:
        raise ConfigError(_sorted(problems, doc))
    resolver = _Resolver(doc, env, mode)
    checked = resolver.resolve()
    problems.extend(resolver.problems)
    schema = SchemaChecker(doc, resolver.raw_value, lambda p: p in SECRET_PATHS)
    schema_problems = schema.check(checked, resolver.skip_schema_error)
    problems.extend(schema_problems)
    try:
        semantic_problems, warnings = SemanticChecker(doc, checked).run()
    except (TypeError, AttributeError, KeyError, ValueError):
        # The semantic checks read values of the types the schema requires. When the schema has
        # already reported a value of the wrong type, a check tripping over it adds nothing: the
        # schema's lines say what to fix. Without schema problems this is a bug: let it surface.
        if not schema_problems:
            raise
        semantic_problems, warnings = [], []
    problems.extend(semantic_problems)
    if problems:
        raise ConfigError(_sorted(resolver.redact(problems), doc))
    config = build_config(resolver.resolved, doc)
    return config, _sorted(resolver.redact(resolver.warnings + warnings), doc)


def _sorted(lines: list[str], doc: Document | None) -> list[str]:
    """Problems in file order (files as read), then line and column; duplicates dropped."""
    files = doc.files if doc else []

    def key(line: str) -> tuple[int, str, int, int]:
        head = line.split(" ", 1)[0]
        name, _, column = head.rpartition(":")
        name, _, number = name.rpartition(":")
        order = files.index(name) if name in files else len(files)
        try:
            return (order, name, int(number), int(column))
        except ValueError:
            return (order, name, 0, 0)

    return sorted(dict.fromkeys(lines), key=key)


class _Resolver:
    """Replaces ${NAME} in string values from the environment, remembering where values are unknown."""

    def __init__(self, doc: Document, env: Mapping[str, str], mode: str) -> None:
        self.doc, self.env, self.mode = doc, env, mode
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.unknown: set[KeyPath] = set()
        self.resolved: Any = None
        self.substituted: set[str] = set()

    def redact(self, lines: list[str]) -> list[str]:
        """A safety net: checks may quote a checked value, and one that came from the environment is hidden."""
        for value in sorted(self.substituted, key=len, reverse=True):
            if len(value) >= 3:
                lines = [line.replace(value, "***") for line in lines]
        return lines

    def raw_value(self, path: KeyPath) -> Any:
        value: Any = self.doc.data
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value

    def resolve(self) -> Any:
        """Returns the document for the checks: resolved, except secrets, which keep their reference text."""
        replacements = {path: self.substitute(path, text) for path, text in walk_strings(self.doc.data)}
        self.resolved = _rebuild(self.doc.data, (), lambda p, v: replacements.get(p, v))
        return _rebuild(self.doc.data, (), lambda p, v: v if p in SECRET_PATHS else replacements.get(p, v))

    def substitute(self, path: KeyPath, text: str) -> str | None:
        missing: list[str] = []

        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            if not match.group(0).endswith("}") or name is None or not _NAME.fullmatch(name):
                self.problems.append(problem(self.doc.at(path), path, "malformed ${...} reference",
                                             "write ${NAME} (letters, digits, _), or $${ for a literal ${"))
                return match.group(0)
            value = self.env.get(name)
            if not value:
                missing.append(name)
                return ""
            self.substituted.add(value)
            return value

        result = _REFERENCE.sub(one, text)
        if not missing:
            return result
        self.unknown.add(path)
        if self.mode == "sandbox" and path in SANDBOX_OPTIONAL:
            return None
        names = ", ".join(missing)
        line = problem(self.doc.at(path), path, f"environment variable {names} is not set",
                       f"set {names} before --plan or --apply")
        (self.warnings if self.mode == "validate" else self.problems).append(line)
        return None

    def skip_schema_error(self, path: KeyPath, validator: str) -> bool:
        """Unknown values (missing variables) cannot be judged; secrets are judged by the semantic check."""
        if validator in ("required", "additionalProperties"):
            return False
        return path in self.unknown or path in SECRET_PATHS


def _rebuild(data: Any, path: KeyPath, leaf: Any) -> Any:
    if isinstance(data, dict):
        return {k: _rebuild(v, path + (k,), leaf) for k, v in data.items()}
    if isinstance(data, list):
        return [_rebuild(v, path + (i,), leaf) for i, v in enumerate(data)]
    return leaf(path, data)


# ---- typed values -------------------------------------------------------------------------------

def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def build_config(data: dict[str, Any], doc: Document) -> Config:
    """The frozen Config from a checked, resolved document; absent keys take settings.py's defaults."""
    hubspot, mailchimp = _d(data.get("hubspot")), _d(data.get("mailchimp"))
    rate = _d(hubspot.get("rate_limit"))
    subscriptions = {k: str(v) for k, v in _d(data.get("subscriptions")).items()}
    exclusions = _d(data.get("exclusions"))
    safety = _d(data.get("safety"))
    notifications = _d(data.get("notifications"))
    return Config(
        version=int(data["version"]),
        hubspot=HubSpotSettings(
            token=hubspot.get("token"),
            base_url=hubspot.get("base_url") or HubSpotSettings.base_url,
            rate_limit=RateLimit(requests=int(rate.get("requests", RateLimit.requests)),
                                 per_seconds=float(rate.get("per_seconds", RateLimit.per_seconds))),
            api_version=str(hubspot.get("api_version") or HubSpotSettings.api_version),
        ),
        mailchimp=MailchimpSettings(
            api_key=mailchimp.get("api_key"),
            base_url=mailchimp.get("base_url"),
            max_connections=int(mailchimp.get("max_connections", MailchimpSettings.max_connections)),
        ),
        subscriptions=frozen_map(subscriptions),
        exclusions=Exclusions(
            critical=tuple(exclusions.get("critical", ())),
            hard=frozen_map({k: tuple(v) for k, v in _d(exclusions.get("hard")).items()}),
        ),
        audiences=frozen_map({name: _audience(name, _d(a), subscriptions) for name, a in _d(data.get("audiences")).items()}),
        safety=Safety(**{name: _limit(safety.get(name)) for name in SAFETY_LIMITS}),
        notifications=Notifications(teams=_notifier(notifications.get("teams")), slack=_notifier(notifications.get("slack"))),
        audit=AuditSettings(path=_d(data.get("audit")).get("path") or AuditSettings.path),
        files=tuple(doc.files),
        checksum=doc.checksum(),
    )


def _limit(value: Any) -> Limit | None:
    if not isinstance(value, dict):
        return None
    percent = value.get("percent")
    return Limit(percent=float(percent) if percent is not None else None, count=value.get("count"))


def _notifier(value: Any) -> Notifier | None:
    if not isinstance(value, dict):
        return None
    return Notifier(webhook_url=value.get("webhook_url"), on=tuple(value.get("on", ())))


def _audience(name: str, data: dict[str, Any], subscriptions: dict[str, str]) -> Audience:
    exempt = _d(data.get("exempt"))
    defaults = Audience(name=name, mailchimp_list_id="")
    return Audience(
        name=name,
        mailchimp_list_id=data["mailchimp_list_id"],
        new_member_status=data.get("new_member_status", defaults.new_member_status),
        member_cap=data.get("member_cap"),
        merge_fields=frozen_map(_d(data.get("merge_fields"))),
        streams=tuple(_stream(_d(s)) for s in data.get("streams", ())),
        tag_policy=data.get("tag_policy", defaults.tag_policy),
        on_leave=data.get("on_leave", defaults.on_leave),
        exempt=Exempt(tags=tuple(exempt.get("tags", ())), tag_patterns=tuple(exempt.get("tag_patterns", ()))),
        source_cleanup=bool(data.get("source_cleanup", defaults.source_cleanup)),
        restore_archived=bool(data.get("restore_archived", defaults.restore_archived)),
        handover=tuple(_handover(_d(h)) for h in data.get("handover", ())),
        opt_outs=_opt_outs(_d(data.get("opt_outs")), subscriptions),
    )


def _stream(data: dict[str, Any]) -> Stream:
    return Stream(name=data["name"], exclude=tuple(data.get("exclude", ())),
                  sources=tuple(_source(_d(s)) for s in data.get("sources", ())))


def _source(data: dict[str, Any]) -> Source:
    rules = []
    for rule in data.get("tag_rules", ()):
        when = _d(_d(rule).get("when"))
        value = when.get("value", True if when.get("op") == "is_set" else None)
        rules.append(TagRule(property=when["property"], op=when["op"], value=tuple(value) if isinstance(value, list) else value,
                             tag=rule["tag"]))
    return Source(list=data["list"], tag=data["tag"], tag_rules=tuple(rules), extra_tags=tuple(data.get("extra_tags", ())))


def _handover(data: dict[str, Any]) -> Handover:
    return Handover(tag=data["tag"], to_list=data["to_list"], remove_from=tuple(data.get("remove_from", ())),
                    set_properties=frozen_map(_d(data.get("set_properties"))))


def _opt_outs(data: dict[str, Any], subscriptions: dict[str, str]) -> OptOuts:
    """R11 and R4 with their safe defaults: each is on unless the config writes `false` (SPEC §3, §4).

    An absent `to_hubspot` turns R11 on when `subscriptions` names exactly one subscription (which
    HubSpot subscription to unsubscribe from is then unambiguous); otherwise it stays off and the
    semantic checks warn. `from_hubspot` (default true) means to_hubspot's subscriptions, or every
    configured subscription when R11 is off."""
    to = data.get("to_hubspot")
    to_hubspot = None
    if isinstance(to, dict):
        defaults = ToHubSpot()
        to_hubspot = ToHubSpot(
            statuses=tuple(to.get("statuses", defaults.statuses)),
            subscriptions=_ids(to.get("subscriptions", ()), subscriptions),
            legal_basis=to.get("legal_basis", defaults.legal_basis),
            explanation=to.get("explanation") or defaults.explanation,
            create_missing_contacts=bool(to.get("create_missing_contacts", defaults.create_missing_contacts)),
        )
    elif "to_hubspot" not in data and len(subscriptions) == 1:
        to_hubspot = ToHubSpot(statuses=DEFAULT_TO_HUBSPOT_STATUSES, subscriptions=tuple(subscriptions.values()))
    from_hubspot = data.get("from_hubspot", True)
    if from_hubspot is False:
        return OptOuts(to_hubspot=to_hubspot, from_hubspot=(), from_hubspot_enabled=False)
    if isinstance(from_hubspot, list):
        ids = _ids(from_hubspot, subscriptions)
    elif to_hubspot is not None and to_hubspot.subscriptions:
        ids = to_hubspot.subscriptions
    else:
        ids = tuple(dict.fromkeys(subscriptions.values()))
    return OptOuts(to_hubspot=to_hubspot, from_hubspot=ids, from_hubspot_enabled=True)


def _ids(names: Any, subscriptions: dict[str, str]) -> tuple[str, ...]:
    # A name can only be unknown here under --validate, when it came from a missing variable.
    return tuple(subscriptions[name] for name in names if name in subscriptions)


__all__ = ["load_config", "build_config", "MODES", "Location"]
