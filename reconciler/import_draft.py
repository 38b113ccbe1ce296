"""What `reconcile --import` guesses from a portal, and the commented YAML it writes (issue 12).

Pure: a `PortalRead` (what was read from both platforms) in, the configuration text out; no HTTP
and no files, so every guess is testable as a table and a re-import of an unchanged portal writes
the same bytes (everything is sorted; nothing time- or path-dependent is written).

What is guessed: a Mailchimp tag whose name is a HubSpot list's name (trimmed, inner spaces
collapsed, case-insensitive) becomes a source of the audience's one stream; merge tags map to
contact properties by the usual names (FNAME, LNAME, PHONE) or where the tag equals a property
name or the field's name a property's name or label. What is never guessed, only listed in
comments: critical lists and exclusion sets, handovers, exempt tags, a member cap, and any source
whose list or tag name suggests compliance or exclusion (a source would email its contacts).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from reconciler.platforms.hubspot import ListInfo
from reconciler.platforms.mailchimp import MergeFieldInfo
from reconciler.preflight import SUPPORTED_MERGE_TYPES

# The usual Mailchimp merge tags and the HubSpot properties that fill them.
WELL_KNOWN = {"FNAME": "firstname", "LNAME": "lastname", "PHONE": "phone"}
# List (or tag) names that suggest a compliance or exclusion list: never made a source, offered
# as `critical` candidates in comments. A false positive only costs a commented line.
COMPLIANCE = re.compile(
    r"complian|\blegal\b|gdpr|ccpa|suppress|\bexclu(de|ded|des|sion|sions)\b|do[\s_-]*not[\s_-]*(contact|e-?mail|mail|call)"
    r"|\bdnc\b|block[\s_-]*list|black[\s_-]*list|deny[\s_-]*list|opt[\s_-]*out|opted[\s_-]*out|unsubscri|bounce"
    r"|\bhold\b|\bspam\b|deceased|\bno[\s_-]+(e-?mail|mail|marketing|contact)\b|\bdo[\s_-]*not\b",
    re.IGNORECASE)
MARKETING = re.compile(r"marketing", re.IGNORECASE)
TAG_OK = re.compile(r"^\S(.*\S)?$")  # the config schema's tag pattern (one line, no outer spaces)
MERGE_TAG_OK = re.compile(r"^[A-Z][A-Z0-9_]{0,9}$")
PROPERTY_OK = re.compile(r"^[A-Za-z0-9_]+$")
PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9 _.-]*$")
YAML_WORDS = {"y", "yes", "n", "no", "true", "false", "on", "off", "null"}
COMMENT_COLUMN = 40


@dataclass(frozen=True)
class AudienceRead:
    """One Mailchimp audience as read: settings, merge field definitions and tag names."""

    id: str
    name: str
    double_optin: bool
    merge_fields: tuple[MergeFieldInfo, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortalRead:
    """Everything --import reads: HubSpot's lists, subscription types (id -> name) and contact
    properties (name -> label), and every Mailchimp audience."""

    lists: tuple[ListInfo, ...]
    subscriptions: Mapping[str, str]
    properties: Mapping[str, str]
    audiences: tuple[AudienceRead, ...]
    source: str = "HubSpot and Mailchimp"


@dataclass(frozen=True)
class MergeGuess:
    tag: str
    property: str | None  # None: not mapped (the note says why)
    note: str


@dataclass(frozen=True)
class TagGuess:
    tag: str
    list: ListInfo | None  # the source list, or None
    note: str = ""


@dataclass
class AudienceDraft:
    key: str
    read: AudienceRead
    merge: list[MergeGuess] = field(default_factory=list)
    sources: list[TagGuess] = field(default_factory=list)
    held_back: list[TagGuess] = field(default_factory=list)  # matched, but not made sources
    unmatched: list[TagGuess] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """Written as a live audience (a stream needs at least one source); else commented out."""
        return bool(self.sources)


@dataclass
class Draft:
    portal: PortalRead
    subscription_names: dict[str, str]  # config name -> id, in the order written
    chosen_subscription: str | None  # the config name R11/R4 reference, or None
    critical_candidates: list[ListInfo]
    audiences: list[AudienceDraft]

    @property
    def active_audiences(self) -> list[AudienceDraft]:
        return [a for a in self.audiences if a.active]


# ----- names -----------------------------------------------------------------------------------


def match_key(name: str) -> str:
    """How tag and list names are compared: trimmed, inner spaces collapsed, case-insensitive."""
    return " ".join(name.split()).casefold()


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _squash(text: str) -> str:
    """Letters and digits only, lower case: `Job Title` and `jobtitle` compare equal."""
    return re.sub(r"[^0-9a-z]", "", _ascii(text).lower())


def slug(text: str, fallback: str) -> str:
    """A config key (`^[A-Za-z][A-Za-z0-9_-]*$`) from a display name; `fallback` when nothing is left."""
    out = re.sub(r"[^a-z0-9]+", "_", _ascii(text).lower()).strip("_")[:48].strip("_")
    if not out:
        return fallback
    return out if out[0].isalpha() else f"{fallback}_{out}"


def _numeric(list_id: str) -> tuple[int, str]:
    return (int(list_id), list_id) if list_id.isdigit() else (1 << 62, list_id)


def compliance_like(name: str) -> bool:
    return bool(COMPLIANCE.search(name))


# ----- guessing --------------------------------------------------------------------------------


def guess(portal: PortalRead) -> Draft:
    """The draft configuration: every decision --import makes, before it is written as YAML."""
    names, chosen = _subscriptions(portal.subscriptions)
    candidates = sorted((x for x in portal.lists if compliance_like(x.name)), key=lambda x: _numeric(x.id))
    by_name: dict[str, list[ListInfo]] = {}
    for hub_list in sorted(portal.lists, key=lambda x: _numeric(x.id)):
        by_name.setdefault(match_key(hub_list.name), []).append(hub_list)
    keys: dict[str, int] = {}
    reads = sorted(portal.audiences, key=lambda a: (match_key(a.name), a.id))
    for read in reads:
        base = slug(read.name, "audience")
        keys[base] = keys.get(base, 0) + 1
    audiences = []
    for read in reads:
        base = slug(read.name, "audience")
        key = base if keys[base] == 1 else slug(f"{base}_{read.id}", "audience")
        draft = AudienceDraft(key, read)
        draft.merge = [_merge_guess(f, portal.properties) for f in read.merge_fields]
        _guess_sources(draft, by_name)
        audiences.append(draft)
    audiences.sort(key=lambda a: not a.active)  # live audiences first, commented-out ones after (stable)
    return Draft(portal, names, chosen, candidates, audiences)


def _subscriptions(definitions: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """Every subscription type under a config name (sorted by id); the one opt-outs reference:
    the only one, or the only one whose name says marketing; otherwise none (a human chooses)."""
    ordered = sorted(definitions.items(), key=lambda item: _numeric(item[0]))
    counts: dict[str, int] = {}
    for sid, name in ordered:
        counts[slug(name, "subscription")] = counts.get(slug(name, "subscription"), 0) + 1
    names: dict[str, str] = {}
    for sid, name in ordered:
        key = slug(name, "subscription")
        names[key if counts[key] == 1 else f"{key}_{sid}"] = sid
    marketing = [key for key, sid in names.items() if MARKETING.search(definitions[sid])]
    chosen = next(iter(names)) if len(names) == 1 else marketing[0] if len(marketing) == 1 else None
    return names, chosen


def _guess_sources(draft: AudienceDraft, by_name: Mapping[str, list[ListInfo]]) -> None:
    used: dict[str, str] = {}  # list id -> the tag that took it
    for tag in sorted(dict.fromkeys(t.strip() for t in draft.read.tags if t.strip()), key=lambda t: (match_key(t), t)):
        if not TAG_OK.match(tag) or len(tag) > 100:
            draft.unmatched.append(TagGuess(tag, None, "not usable as a tag in the config (one line, at most 100 characters)"))
            continue
        matches = by_name.get(match_key(tag), [])
        if not matches:
            similar = [x for key, lists in by_name.items() if match_key(tag) in key for x in lists]
            hint = ("; similar list name: " + ", ".join(f"{x.id} {_quoted(x.name)}" for x in similar[:3])) if similar else ""
            draft.unmatched.append(TagGuess(tag, None, f"no HubSpot list has this name{hint}"))
        elif len(matches) > 1:
            ids = ", ".join(x.id for x in matches)
            draft.held_back.append(TagGuess(tag, matches[0], f"several HubSpot lists have this name ({ids}): choose one"))
        elif compliance_like(matches[0].name) or compliance_like(tag):
            draft.held_back.append(TagGuess(tag, matches[0], "the name suggests a compliance or exclusion list: a source "
                                                             "would email its contacts; see exclusions.critical"))
        elif matches[0].id in used:
            draft.held_back.append(TagGuess(tag, matches[0], f"list {matches[0].id} is already the source of tag "
                                                             f"{_quoted(used[matches[0].id])}"))
        else:
            used[matches[0].id] = tag
            draft.sources.append(TagGuess(tag, matches[0], _list_note(matches[0])))


def _list_note(hub_list: ListInfo) -> str:
    kind = hub_list.processing_type or "of unknown type"
    extra = ", read only (R14)" if hub_list.processing_type not in ("MANUAL", "SNAPSHOT") else ""
    return f"HubSpot list {_quoted(hub_list.name)} ({kind}{extra})"


def _merge_guess(merge: MergeFieldInfo, properties: Mapping[str, str]) -> MergeGuess:
    label = f"{_quoted(merge.name)} ({merge.type})" if merge.name else f"({merge.type})"
    required = "; REQUIRED by the audience: --plan stops until it is mapped" if merge.required else ""
    if not MERGE_TAG_OK.match(merge.tag):
        return MergeGuess(merge.tag, None, f"{label}: the tag is not usable in the config{required}")
    if merge.type not in SUPPORTED_MERGE_TYPES:
        return MergeGuess(merge.tag, None, f"{label}: type {merge.type} is not supported "
                                           f"(supported: {', '.join(SUPPORTED_MERGE_TYPES)}){required}")
    usable = sorted(p for p in properties if PROPERTY_OK.match(p) and p != "email" and not p.startswith("hs_email_optout"))
    if merge.tag in WELL_KNOWN:
        wanted = WELL_KNOWN[merge.tag]
        if wanted in usable:
            return MergeGuess(merge.tag, wanted, f"{label}: the usual mapping")
        return MergeGuess(merge.tag, None, f"{label}: HubSpot has no property {wanted}{required}")
    tiers = (
        ("the tag is the property's name", [p for p in usable if p.casefold() == merge.tag.casefold()]),
        ("the field's name is the property's name", [p for p in usable if merge.name and _squash(p) == _squash(merge.name)]),
        ("the field's name is the property's label", [p for p in usable if merge.name and _squash(properties[p]) == _squash(merge.name)]),
    )
    for why, found in tiers:
        if len(found) == 1:
            return MergeGuess(merge.tag, found[0], f"{label}: {why}")
        if len(found) > 1:
            return MergeGuess(merge.tag, None, f"{label}: several properties match ({', '.join(found[:5])}): choose one{required}")
    return MergeGuess(merge.tag, None, f"{label}: no HubSpot property has this name or label; map one by hand{required}")


# ----- writing ---------------------------------------------------------------------------------


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar, safe in a value or a comment: every character that is not
    printable (line breaks included, U+2028 and U+0085 too) is escaped, so no name from a portal
    can end a comment line or inject YAML."""
    out = []
    for char in json.dumps(text, ensure_ascii=False):
        if char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return "".join(out)


def scalar(text: str) -> str:
    """A plain scalar when it reads as the same string, otherwise double-quoted."""
    if PLAIN.match(text) and not text.endswith(" ") and text.casefold() not in YAML_WORDS:
        return text
    return _quoted(text)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str = "", comment: str = "") -> None:
        if comment:
            text = f"{text.ljust(COMMENT_COLUMN - 1)} # {comment}" if text else f"# {comment}"
        self.lines.append(text.rstrip())

    def note(self, indent: int, *comments: str) -> None:
        for comment in comments:
            self.lines.append(f"{' ' * indent}# {comment}".rstrip())

    def extend(self, lines: Iterable[str]) -> None:
        self.lines.extend(lines)


def render(draft: Draft) -> str:
    """The configuration file's text: valid YAML, every choice commented, in a stable order."""
    out = _Lines()
    _header(out, draft)
    _connections(out)
    _subscriptions_block(out, draft)
    _exclusions_block(out, draft)
    out.add("audiences:", "Mailchimp audiences, by a name used with --audience")
    for audience in draft.audiences:
        if audience.active:
            out.extend(_audience(audience, draft))
        else:
            out.note(2, f"Audience {_quoted(audience.read.name)} ({audience.read.id}) is left out: none of its tags "
                        "is a HubSpot list's name, and a stream needs a source.",
                     "To use it, uncomment the block and replace the placeholder source with a list and its tag.")
            out.extend(_commented(_audience(audience, draft)))
        out.add()
    _safety_block(out)
    _tail(out)
    return "\n".join(out.lines).rstrip("\n") + "\n"


def _header(out: _Lines, draft: Draft) -> None:
    active = len(draft.active_audiences)
    out.note(0,
             f"Starting configuration written by `reconcile --import` from {draft.portal.source}.",
             "Nothing in it has been applied. It is a conservative first draft: every guess is commented, and each",
             "line marked REVIEW needs a human decision before the first --apply (README: Importing a portal).",
             "",
             "  reconcile --validate --config <this directory>    offline check",
             "  reconcile --plan --config <this directory>        what an apply would change (reads only)",
             "",
             "Secrets are ${NAME} references, never values: set HUBSPOT_TOKEN and MAILCHIMP_API_KEY.",
             "A re-import of an unchanged portal writes this file again byte for byte: import into a new",
             "directory and compare with diff to see what changed in the portals.")
    if not active:
        out.note(0, "", "REVIEW: no Mailchimp tag matches a HubSpot list's name, so every audience below is commented",
                 "out and this file does not validate until one audience has a stream with a source.")
    out.add()
    out.add("version: 1")
    out.add()


def _connections(out: _Lines) -> None:
    out.add("hubspot:")
    out.add("  token: ${HUBSPOT_TOKEN}", "private app token or service key (Bearer)")
    out.add("  base_url: https://api.hubapi.com", "the default; --sandbox replaces it")
    out.add("  rate_limit: {requests: 100, per_seconds: 10}", "REVIEW: your portal's API tier limit")
    out.add("  api_version: legacy", "or 2026-03: HubSpot's date-based APIs")
    out.add()
    out.add("mailchimp:")
    out.add("  api_key: ${MAILCHIMP_API_KEY}", "its suffix (e.g. -us21) names the data centre")
    out.add("  base_url: null", "null: https://<dc>.api.mailchimp.com/3.0 from the key")
    out.add("  max_connections: 8", "Mailchimp allows at most 10")
    out.add()


def _subscriptions_block(out: _Lines, draft: Draft) -> None:
    definitions = draft.portal.subscriptions
    if not draft.subscription_names:
        out.add("subscriptions: {}", "HubSpot has no subscription types: R11 stays off (opt-outs")
        out.note(0, "of all email still count for R4)")
        out.add()
        return
    out.add("subscriptions:", "every HubSpot subscription type, by a name used in opt_outs")
    for name, sid in draft.subscription_names.items():
        mark = "; referenced by opt_outs" if name == draft.chosen_subscription else ""
        out.add(f"  {name}: {_quoted(sid)}", f"{_quoted(definitions[sid])}{mark}")
    if draft.chosen_subscription is None:
        out.note(2, "REVIEW: R11 (Mailchimp opt-outs reach HubSpot) is off: with several subscription types and not",
                 "exactly one whose name says marketing, the import does not choose. Name the type(s) a Mailchimp",
                 "unsubscribe should leave under each audience's opt_outs.to_hubspot.subscriptions.")
    out.add()


def _exclusions_block(out: _Lines, draft: Draft) -> None:
    out.add("exclusions:")
    out.note(2, "REVIEW: the import makes no list critical and defines no exclusion set: which lists are",
             "compliance lists is a human decision. A critical list's contacts are never emailed and their",
             "members are ARCHIVED in every audience (R2), so add one only with a --plan in front of you.")
    if draft.critical_candidates:
        out.note(2, "Candidates (their names suggest compliance or exclusion), e.g. critical: "
                    f"[{', '.join(_quoted(x.id) for x in draft.critical_candidates[:3])}]:")
        for hub_list in draft.critical_candidates:
            out.note(2, f"  {_quoted(hub_list.id)}  {_quoted(hub_list.name)} ({hub_list.processing_type or 'unknown type'})")
    out.add("  critical: []")
    out.add("  hard: {}", "named exclusion sets for a stream's `exclude` (R3)")
    out.add()


def _audience(audience: AudienceDraft, draft: Draft) -> list[str]:
    read = audience.read
    out = _Lines()
    optin = "on" if read.double_optin else "off"
    out.add(f"  {audience.key}:", f"Mailchimp audience {_quoted(read.name)}")
    out.add(f"    mailchimp_list_id: {_quoted(read.id)}")
    status = "pending" if read.double_optin else "subscribed"
    other = "new members confirm by email" if read.double_optin else "pending would send confirmations"
    out.add(f"    new_member_status: {status}", f"double opt-in is {optin} in Mailchimp: {other}")
    out.note(4, "member_cap: 5000                 # R16: not set by the import (no cap on subscribed + pending)")
    _merge_block(out, audience)
    _streams_block(out, audience)
    out.add("    tag_policy: first_tag_wins", "R6: a member keeps the primary tag it has (no journey switched)")
    out.add("    on_leave: keep", "REVIEW R9: keep (nothing), untag or archive a member no source holds;")
    out.note(4, "the import keeps, so a first plan archives no one; archive only once the sources are right")
    out.add("    exempt: {tags: [], tag_patterns: []}", "tags R9 never archives or untags; none guessed")
    out.add("    source_cleanup: false", "R2/R3: off; the import writes nothing to HubSpot lists")
    out.add("    restore_archived: false", "R8: off; archived members are reported, not restored")
    out.add("    handover: []", "R12: exit tags handing contacts back to sales; never guessed")
    _opt_outs_block(out, draft)
    return out.lines


def _merge_block(out: _Lines, audience: AudienceDraft) -> None:
    mapped = [m for m in audience.merge if m.property]
    if not audience.merge:
        out.add("    merge_fields: {}", "the audience has no merge fields")
        return
    if not mapped:
        out.add("    merge_fields: {}", "none mapped; the audience's merge fields:")
    else:
        out.add("    merge_fields:", "Mailchimp merge tag: HubSpot contact property")
    for guess_ in sorted(audience.merge, key=lambda m: m.tag):
        if guess_.property:
            out.add(f"      {guess_.tag}: {guess_.property}", guess_.note)
        else:
            out.note(6, f"{guess_.tag}: not mapped: {guess_.note}")


def _streams_block(out: _Lines, audience: AudienceDraft) -> None:
    out.add("    streams:", "in priority order (R3)")
    out.add("      - name: imported", "one stream: tags named like a HubSpot list")
    out.add("        exclude: []", "REVIEW: exclusion sets (exclusions.hard) to keep out")
    out.add("        sources:", "the first source holding a contact gives its tag")
    if audience.sources:
        for source in audience.sources:
            assert source.list is not None
            out.add(f"          - {{list: {_quoted(source.list.id)}, tag: {scalar(source.tag)}}}", source.note)
    else:
        out.add("          - {list: \"LIST_ID\", tag: TAG}", "placeholder: a HubSpot list id and its Mailchimp tag")
    if audience.held_back:
        out.note(8, "REVIEW: tags matching a HubSpot list's name but not made sources:")
        for held in audience.held_back:
            assert held.list is not None
            out.note(8, f"  - {{list: {_quoted(held.list.id)}, tag: {scalar(held.tag)}}}  # held back: {held.note}")
    if audience.unmatched:
        out.note(4, "Tags matching no HubSpot list (unmanaged: R10 never archives or untags their members):")
        for tag in audience.unmatched:
            out.note(4, f"  {_quoted(tag.tag)}: {tag.note}")


def _opt_outs_block(out: _Lines, draft: Draft) -> None:
    name = draft.chosen_subscription
    out.add("    opt_outs:")
    if name is None:
        out.note(6, "to_hubspot (R11) is not set: see the REVIEW note under subscriptions, e.g.",
                 "to_hubspot: {subscriptions: [<name>], statuses: [unsubscribed, cleaned]}")
    else:
        out.add("      to_hubspot:", "R11: Mailchimp opt-outs reach HubSpot (the default, written out)")
        out.add("        statuses: [unsubscribed, cleaned]", "every kind of Mailchimp opt-out")
        out.add(f"        subscriptions: [{name}]", "unsubscribed from this type in HubSpot")
        out.add("        legal_basis: LEGITIMATE_INTEREST_OTHER", "REVIEW with whoever keeps your GDPR records")
        out.add("        explanation: Contact unsubscribed in Mailchimp")
        out.add("        create_missing_contacts: false", "a member with no HubSpot contact is reported")
    out.add("      from_hubspot: true", "R4: HubSpot opt-outs unsubscribe the member (never archive)")


def _commented(lines: Sequence[str]) -> list[str]:
    return [f"  # {line[2:]}" if line.strip() else line for line in lines]


def _safety_block(out: _Lines) -> None:
    out.add("safety:", "R17: exceeding either bound refuses the apply (exit 3) unless --force")
    out.note(2, "Conservative bounds for the first applies: a bigger change than these needs --force after",
             "reading the plan. Percentages are of the audience's non-archived members (of the list for",
             "list removals). REVIEW: raise them to what a normal day looks like once runs are routine.")
    out.add("  max_archives: {percent: 5, count: 50}")
    out.add("  max_untags: {percent: 5, count: 50}")
    out.add("  max_creates: {count: 250}", "the first apply may create many: read its plan")
    out.add("  max_mailchimp_unsubscribes: {count: 100}", "R4")
    out.add("  max_hubspot_unsubscribes: {count: 250}", "R11: opt-outs Mailchimp holds and HubSpot does not")
    out.add("  max_list_removals: {percent: 10, count: 50}")
    out.add()


def _tail(out: _Lines) -> None:
    out.add("notifications: {}", "none; e.g. slack: {webhook_url: \"${SLACK_WEBHOOK_URL}\", on: [failed, unsafe]}")
    out.add()
    out.add("audit:")
    out.add("  path: .reconciler/audit.sqlite", "relative to the current directory; keep it between runs")
