"""The semantic checks of SPEC §3 that JSON Schema cannot express (references, roles, list clashes).

Separate from the schema mapping because these read the document as a whole; every check is
defensive about types, since schema problems are reported at the same time, not before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from reconciler.config_yaml import Document, KeyPath, problem

SECRET_PATHS: tuple[KeyPath, ...] = (
    ("hubspot", "token"),
    ("mailchimp", "api_key"),
    ("notifications", "teams", "webhook_url"),
    ("notifications", "slack", "webhook_url"),
)
REFERENCE_ONLY = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PLACEHOLDERS = ("source_list_name",)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


@dataclass
class _Roles:
    """Tag roles seen in one audience: casefolded name -> (role, path where first given)."""

    seen: dict[str, tuple[str, KeyPath]] = field(default_factory=dict)


class SemanticChecker:
    def __init__(self, doc: Document, data: dict[str, Any]) -> None:
        self.doc = doc
        self.data = data
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def add(self, path: KeyPath, what: str, todo: str, *, at_key: bool = False) -> None:
        where = self.doc.key_at(path) if at_key else self.doc.at(path)
        self.problems.append(problem(where, path, what, todo))

    def run(self) -> tuple[list[str], list[str]]:
        self.check_secrets()
        subscriptions = _dict(self.data.get("subscriptions"))
        exclusions = _dict(self.data.get("exclusions"))
        critical = {x for x in _list(exclusions.get("critical")) if isinstance(x, str)}
        hard = _dict(exclusions.get("hard"))
        used_sets: set[str] = set()
        audiences = _dict(self.data.get("audiences"))
        owners: dict[str, KeyPath] = {}
        for name, audience in audiences.items():
            base: KeyPath = ("audiences", name)
            if not isinstance(audience, dict):
                continue
            list_id = audience.get("mailchimp_list_id")
            if isinstance(list_id, str):
                key = list_id.casefold()
                if key in owners:
                    first = self.doc.at(owners[key])
                    self.add(base + ("mailchimp_list_id",), f"Mailchimp list {list_id} is also used by audience "
                             f"`{owners[key][1]}` ({first})", "give each Mailchimp list to one audience only")
                else:
                    owners[key] = base + ("mailchimp_list_id",)
            self.check_streams(base, audience, critical, hard, used_sets)
            self.check_handover(base, audience)
            self.check_tag_roles(base, audience)
            self.check_opt_outs(base, audience, subscriptions)
        for set_name in hard:
            if set_name not in used_sets:
                where = self.doc.key_at(("exclusions", "hard", set_name))
                self.warnings.append(problem(where, ("exclusions", "hard", set_name), "exclusion set is not used by any stream",
                                             "add it to a stream's `exclude` or remove it"))
        return self.problems, self.warnings

    def check_secrets(self) -> None:
        for path in SECRET_PATHS:
            value = self.raw(path)
            if value is None:
                continue
            if not isinstance(value, str) or not REFERENCE_ONLY.fullmatch(value):
                name = {"token": "HUBSPOT_TOKEN", "api_key": "MAILCHIMP_API_KEY"}.get(str(path[-1]), f"{str(path[1]).upper()}_WEBHOOK_URL")
                self.add(path, "a secret written inline (only a ${NAME} reference is accepted here)",
                         f"write `${{{name}}}` and set {name} in the environment; rotate the secret if it was committed")

    def raw(self, path: KeyPath) -> Any:
        value: Any = self.data
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value

    def check_streams(self, base: KeyPath, audience: dict[str, Any], critical: set[str],
                      hard: dict[str, Any], used_sets: set[str]) -> None:
        streams = _list(audience.get("streams"))
        names: dict[str, int] = {}
        for s_index, stream in enumerate(streams):
            if not isinstance(stream, dict):
                continue
            spath = base + ("streams", s_index)
            name = stream.get("name")
            if isinstance(name, str):
                if name.casefold() in names:
                    self.add(spath + ("name",), f"stream `{name}` is defined twice in this audience "
                             f"(first at streams[{names[name.casefold()]}])", "give each stream its own name")
                else:
                    names[name.casefold()] = s_index
            own_lists: dict[str, KeyPath] = {}
            for i, source in enumerate(_list(stream.get("sources"))):
                list_id = _dict(source).get("list")
                if not isinstance(list_id, str):
                    continue
                lpath = spath + ("sources", i, "list")
                own_lists.setdefault(list_id, lpath)
                if list_id in critical:
                    self.add(lpath, f"list {list_id} is both a source and a critical list (exclusions.critical)",
                             "remove it from one of them: a critical list's contacts are never emailed")
                self.check_tag_rules(spath + ("sources", i), _dict(source))
            for e_index, set_name in enumerate(_list(stream.get("exclude"))):
                if not isinstance(set_name, str):
                    continue
                epath = spath + ("exclude", e_index)
                used_sets.add(set_name)
                if set_name not in hard:
                    known = ", ".join(hard) or "none defined"
                    self.add(epath, f"exclusion set `{set_name}` is not defined", f"define it under exclusions.hard (defined: {known})")
                    continue
                clash = [x for x in _list(hard[set_name]) if x in own_lists]
                if clash:
                    self.add(epath, f"exclusion set `{set_name}` holds list {clash[0]}, a source of this same stream",
                             "remove the list from the set or from the stream's sources")

    def check_tag_rules(self, spath: KeyPath, source: dict[str, Any]) -> None:
        for r_index, rule in enumerate(_list(source.get("tag_rules"))):
            when = _dict(_dict(rule).get("when"))
            op, wpath = when.get("op"), spath + ("tag_rules", r_index, "when")
            has_value, value = "value" in when, when.get("value")
            vpath = wpath + ("value",) if has_value else wpath
            if op in ("gt", "gte", "lt", "lte") and not _is_number(value):
                self.add(vpath, f"`{op}` compares numbers but the value is {self.kind(value, has_value)}",
                         "give a number without quotes, e.g. `value: 1`")
            elif op in ("in", "not_in") and not (isinstance(value, list) and value):
                self.add(vpath, f"`{op}` needs a list of values but the value is {self.kind(value, has_value)}",
                         "write a list, e.g. `value: [a, b]`")
            elif op == "is_set" and has_value and not isinstance(value, bool):
                self.add(vpath, "`is_set` takes no value, or true/false", "remove `value`, or write true or false")
            elif op in ("eq", "ne") and not (isinstance(value, str) or _is_number(value)):
                self.add(vpath, f"`{op}` needs text or a number but the value is {self.kind(value, has_value)}",
                         "write the value to compare with (quote true/false: HubSpot sends text)")

    @staticmethod
    def kind(value: Any, has_value: bool) -> str:
        if not has_value:
            return "missing"
        if isinstance(value, bool):
            return "true/false"
        if isinstance(value, list):
            return "a list"
        if value is None:
            return "empty"
        return "text" if isinstance(value, str) else "a number"

    def check_handover(self, base: KeyPath, audience: dict[str, Any]) -> None:
        sources: dict[str, KeyPath] = {}
        for s_index, stream in enumerate(_list(audience.get("streams"))):
            for i, source in enumerate(_list(_dict(stream).get("sources"))):
                list_id = _dict(source).get("list")
                if isinstance(list_id, str):
                    sources.setdefault(list_id, base + ("streams", s_index, "sources", i, "list"))
        for index, handover in enumerate(_list(audience.get("handover"))):
            handover = _dict(handover)
            hpath = base + ("handover", index)
            to_list = handover.get("to_list")
            if isinstance(to_list, str) and to_list in sources:
                self.add(hpath + ("to_list",), f"list {to_list} is also a source of this audience ({self.doc.at(sources[to_list])})",
                         "use a separate HubSpot list for handed-over contacts, or they would be re-imported")
            for r_index, removed in enumerate(_list(handover.get("remove_from"))):
                if removed == to_list:
                    self.add(hpath + ("remove_from", r_index), f"list {removed} is also this handover's to_list",
                             "remove it from remove_from: the contact would be added and removed at once")
            for prop, template in _dict(handover.get("set_properties")).items():
                if not isinstance(template, str):
                    continue
                for placeholder in PLACEHOLDER.findall(template):
                    if placeholder not in PLACEHOLDERS:
                        self.add(hpath + ("set_properties", prop), f"unknown placeholder {{{placeholder}}}",
                                 "use {source_list_name}, or write the value literally")

    def check_tag_roles(self, base: KeyPath, audience: dict[str, Any]) -> None:
        roles = _Roles()
        for s_index, stream in enumerate(_list(audience.get("streams"))):
            for i, source in enumerate(_list(_dict(stream).get("sources"))):
                spath = base + ("streams", s_index, "sources", i)
                source = _dict(source)
                self.role(roles, source.get("tag"), "primary", spath + ("tag",))
                for r_index, rule in enumerate(_list(source.get("tag_rules"))):
                    self.role(roles, _dict(rule).get("tag"), "primary", spath + ("tag_rules", r_index, "tag"))
                for e_index, tag in enumerate(_list(source.get("extra_tags"))):
                    self.role(roles, tag, "extra", spath + ("extra_tags", e_index))
        for index, handover in enumerate(_list(audience.get("handover"))):
            self.role(roles, _dict(handover).get("tag"), "handover", base + ("handover", index, "tag"))
        exempt = _dict(audience.get("exempt"))
        for index, tag in enumerate(_list(exempt.get("tags"))):
            self.role(roles, tag, "exempt", base + ("exempt", "tags", index))
        for index, pattern in enumerate(_list(exempt.get("tag_patterns"))):
            ppath = base + ("exempt", "tag_patterns", index)
            if not isinstance(pattern, str):
                continue
            try:
                compiled = re.compile(pattern, re.IGNORECASE)
            except re.error as error:
                self.add(ppath, f"not a valid regular expression ({error})", "fix the pattern (Python `re` syntax)")
                continue
            for key, (role, where) in roles.seen.items():
                if role != "exempt" and compiled.search(key):
                    self.add(ppath, f"pattern {pattern!r} matches the {role} tag `{self.raw(where)}` ({self.doc.at(where)})",
                             "a tag has one role per audience: narrow the pattern or rename the tag")

    def role(self, roles: _Roles, tag: Any, role: str, path: KeyPath) -> None:
        if not isinstance(tag, str):
            return
        key = tag.casefold()
        if key not in roles.seen:
            roles.seen[key] = (role, path)
            return
        first_role, first_path = roles.seen[key]
        if first_role != role:
            self.add(path, f"tag `{tag}` is used as {role} but is already {first_role} at {self.doc.at(first_path)}",
                     "a tag has one role per audience (primary, extra, handover or exempt): rename one of them")

    def check_opt_outs(self, base: KeyPath, audience: dict[str, Any], subscriptions: dict[str, Any]) -> None:
        opt_outs = _dict(audience.get("opt_outs"))
        opath = base + ("opt_outs",)
        to_hubspot = opt_outs.get("to_hubspot")
        for index, name in enumerate(_list(_dict(to_hubspot).get("subscriptions"))):
            self.subscription(name, opath + ("to_hubspot", "subscriptions", index), subscriptions)
        from_hubspot = opt_outs.get("from_hubspot")
        for index, name in enumerate(_list(from_hubspot)):
            self.subscription(name, opath + ("from_hubspot", index), subscriptions)
        self.warn_opt_outs_off(base, opt_outs, subscriptions)

    def warn_opt_outs_off(self, base: KeyPath, opt_outs: dict[str, Any], subscriptions: dict[str, Any]) -> None:
        """Safe defaults (R4, R11 on) turned off, or R11 left off for want of one subscription: say the risk.

        Warnings, not errors: turning them off is allowed, but it must never go unnoticed in review."""
        audience, opath = base[-1], base + ("opt_outs",)
        to_path, from_path = opath + ("to_hubspot",), opath + ("from_hubspot",)
        names = [str(name) for name in subscriptions]
        example = f"to_hubspot: {{subscriptions: [{', '.join(names) or '<name>'}]}}"
        if opt_outs.get("to_hubspot") is False:
            self.warnings.append(problem(
                self.doc.key_at(to_path), to_path,
                f"opt_outs.to_hubspot is false: Mailchimp unsubscribes in audience {audience} will not reach "
                "HubSpot, so HubSpot may email people who opted out",
                f"to turn R11 on, write `{example}` under opt_outs"))
        elif "to_hubspot" not in opt_outs and len(names) != 1:
            where = self.doc.keys.get(opath) or self.doc.key_at(base)  # the opt_outs key, else the audience's
            count = "no subscription" if not names else f"{len(names)} subscriptions ({', '.join(names)})"
            todo = (f"to turn R11 on, write `{example}` under opt_outs, naming the ones a Mailchimp unsubscribe "
                    "should leave" if names else
                    "to turn R11 on, define the HubSpot subscription under `subscriptions` (name: \"id\"); "
                    "with exactly one, R11 is on by default")
            self.warnings.append(problem(
                where, to_path,
                f"opt_outs.to_hubspot is not set and `subscriptions` names {count}, so R11 is off: Mailchimp "
                f"unsubscribes in audience {audience} will not reach HubSpot, and HubSpot may email people who opted out",
                todo))
        if opt_outs.get("from_hubspot") is False:
            self.warnings.append(problem(
                self.doc.key_at(from_path), from_path,
                f"opt_outs.from_hubspot is false: people who opt out in HubSpot stay subscribed in Mailchimp "
                f"audience {audience} (opted out of all email is still honoured)",
                "remove the key to turn R4 on (it defaults to true)"))

    def subscription(self, name: Any, path: KeyPath, subscriptions: dict[str, Any]) -> None:
        if isinstance(name, str) and name not in subscriptions:
            known = ", ".join(subscriptions) or "none defined"
            self.add(path, f"subscription `{name}` is not defined", f"define it under subscriptions (defined: {known})")
