"""`reconcile --plan --snapshot-out FILE`: what the plan observed, written as a sandbox seed.

Separate from the engine because it is a translation: the observed Snapshot and the audit
memory become the SPEC §7 seed format (pseudonymised by reconciler.pseudonyms), plus a
`rehearsal:` section the sandbox ignores and `reconcile --sandbox` replays into an audit log of
its own (reconciler.rehearsal), so that a rehearsal plan on the copy equals the live plan.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from reconciler.errors import ReconcilerError
from reconciler.model import AudienceState, Contact, Memory, Snapshot
from reconciler.observe import mapped_properties
from reconciler.observe_compliance import read_consent
from reconciler.private_files import write_private
from reconciler.pseudonyms import KEY_VARIABLE, Pseudonyms
from reconciler.sandbox.hubspot_state import PROCESSING_TYPES, STANDARD_PROPERTIES
from reconciler.sandbox.mailchimp_state import MERGE_TYPES
from reconciler.settings import Config

FORMAT = 1
JSON_ABOVE = 20_000  # contacts past which YAML's slowness is worth a note
SANDBOX_TOKEN = "sandbox-token"
SANDBOX_API_KEY = "sandboxkey-us1"

try:
    _Dumper: Any = yaml.CSafeDumper
except AttributeError:  # pragma: no cover - depends on how pyyaml was built
    _Dumper = yaml.SafeDumper


@dataclass
class _Writer:
    """Builds one seed; `notes` are the stderr lines saying where the copy is not exact."""

    config: Config
    snapshot: Snapshot
    memory: Memory
    fake: Pseudonyms
    keep_names: bool
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = set() if self.keep_names else name_properties(self.config, self.snapshot, self.notes)

    # -- HubSpot -----------------------------------------------------------------------------

    def hubspot(self, definitions: Mapping[str, str], properties: Mapping[str, str],
                consent: Mapping[str, frozenset[str]]) -> dict[str, Any]:
        mapped = sorted(p for p in mapped_properties(self.config) if p in properties)
        contacts, placeholders = self._contacts(mapped, set(definitions), consent), self._placeholders()
        held: dict[str, list[str]] = {}
        for contact in self._by_id():
            for list_id in sorted(contact.lists):
                held.setdefault(list_id, []).append(contact.id)
        lists = []
        for list_id, hub_list in sorted(self.snapshot.lists.items()):
            kind = hub_list.processing_type
            if kind not in PROCESSING_TYPES:
                self.notes.append(f"list {list_id} is of unknown type ({kind or 'none sent'}): written as DYNAMIC, "
                                  "which R14 never writes either; its messages will say DYNAMIC")
                kind = "DYNAMIC"
            lists.append({"id": list_id, "name": hub_list.name, "processing_type": kind,
                          "members": held.get(list_id, []) + placeholders.get(list_id, [])})
        extra = [{"id": cid} for ids in placeholders.values() for cid in ids]
        return {"token": SANDBOX_TOKEN,
                "subscriptions": [{"id": sid, "name": name} for sid, name in sorted(definitions.items())],
                "properties": [p for p in mapped if p not in STANDARD_PROPERTIES],
                "lists": lists, "contacts": contacts + extra}

    def _by_id(self) -> list[Contact]:
        return sorted(self.snapshot.contacts.values(), key=lambda c: (len(c.id), c.id))

    def _contacts(self, mapped: list[str], subscriptions: set[str],
                  consent: Mapping[str, frozenset[str]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        holder: dict[str, str] = {}
        for contact in self._by_id():
            entry: dict[str, Any] = {"id": contact.id}
            if contact.email:
                if contact.email in holder:
                    # The sandbox (like HubSpot) keeps one contact per email.
                    self.notes.append(f"contacts {holder[contact.email]} and {contact.id} share an email: the "
                                      f"sandbox keeps one contact per email, so {contact.id} is written without one")
                else:
                    holder[contact.email] = contact.id
                    entry["email"] = self.fake.email(contact.email)
            owner = contact.email or f"contact {contact.id}"
            entry["properties"] = {p: self._value(p, contact.properties[p], owner) for p in mapped
                                   if contact.properties.get(p) is not None}
            held = consent.get(contact.email or "", frozenset()) if "email" in entry else frozenset()
            subscribed = sorted(held & subscriptions)
            if subscribed:
                entry["subscribed"] = subscribed
            if contact.unsubscribed:
                entry["unsubscribed"] = sorted(contact.unsubscribed)
            if contact.opted_out_of_all:
                entry["opted_out_of_all"] = True
            out.append(entry)
        return out

    def _value(self, prop: str | None, value: Any, owner: str) -> Any:
        """A kept value: a name is replaced, an email in it pseudonymised, anything else kept."""
        return self.fake.name(value, owner) if prop in self.names else self.fake.text(value)

    def _placeholders(self) -> dict[str, list[str]]:
        """Ids for the list members the plan never read (non-source lists' members that are neither
        Mailchimp members nor duplicates): contacts with nothing but an id, so list sizes (R17's
        percentages) are the same; without an email, the rehearsal never reads them either."""
        sources = {s for a in self.config.audiences.values() for s in a.source_lists}
        counts: dict[str, int] = {}
        for contact in self.snapshot.contacts.values():
            for list_id in contact.lists:
                counts[list_id] = counts.get(list_id, 0) + 1
        next_id = max((int(c.id) for c in self.snapshot.contacts.values() if c.id.isdigit()), default=0) + 1
        out: dict[str, list[str]] = {}
        for list_id, hub_list in sorted(self.snapshot.lists.items()):
            unread = hub_list.size - counts.get(list_id, 0)
            if unread <= 0:
                continue
            if list_id in sources:
                self.notes.append(f"source list {list_id}: {unread} member(s) could not be read (deleted meanwhile?) "
                                  "and are left out, so the list is smaller in the rehearsal")
                continue
            out[list_id] = [str(i) for i in range(next_id, next_id + unread)]
            next_id += unread
        return out

    def consent_unread(self) -> list[str]:
        """Restore candidates (archived members a source contact holds) whose consent the plan did
        not read because the audit log decided: a `--retry-refused` rehearsal, or one after the
        memory changed, reads it, so the copy must hold it too."""
        remembered = ({e for _, e in self.memory.refusals} | {e for _, e in self.memory.archived_by_us}
                      | set(self.memory.opted_out))
        wanted: set[str] = set()
        for audience in self.config.audiences.values():
            state = self.snapshot.audiences.get(audience.mailchimp_list_id)
            if not audience.restore_archived or state is None:
                continue
            sources = set(audience.source_lists)
            held = {c.email for c in self.snapshot.contacts.values() if c.email and c.lists & sources}
            wanted |= {e for e, m in state.members.items() if m.status == "archived" and e in held}
        return sorted(e for e in wanted & remembered if e not in self.snapshot.consent)

    # -- Mailchimp ---------------------------------------------------------------------------

    def mailchimp(self) -> dict[str, Any]:
        return {"api_key": SANDBOX_API_KEY,
                "audiences": [self._audience(s) for _, s in sorted(self.snapshot.audiences.items())]}

    def _audience(self, state: AudienceState) -> dict[str, Any]:
        configured = [a for a in self.config.audiences.values() if a.mailchimp_list_id == state.list_id]
        mapped = {tag.upper(): prop for a in configured for tag, prop in a.merge_fields.items()}
        members = sorted((self._member(state.list_id, m, mapped) for m in state.members.values()),
                         key=lambda m: m["email"])
        if state.opt_outs_only:
            self.notes.append(f"audience {state.list_id} was read for its opt-outs only (--audience): rehearse "
                              "with the same --audience")
            return {"id": state.list_id, "name": state.name or state.list_id, "merge_fields": [],
                    "members": [{k: v for k, v in m.items() if k != "merge_fields"} for m in members]}
        fields = []
        for tag, merge_field in state.merge_fields.items():
            kind = merge_field.type
            if kind not in MERGE_TYPES:
                self.notes.append(f"audience {state.list_id} merge field {tag}: type {kind!r} is unknown to the "
                                  "sandbox and written as text")
                kind = "text"
            fields.append({"tag": tag, "type": kind, **({"required": True} if merge_field.required else {})})
        out: dict[str, Any] = {"id": state.list_id, "name": state.name, "double_optin": state.double_optin,
                               "merge_fields": fields, "members": members}
        forgotten = self._forgotten(state)
        if forgotten:
            out["permanently_deleted"] = forgotten
        return out

    def _member(self, list_id: str, member: Any, mapped: Mapping[str, str]) -> dict[str, Any]:
        merge = {tag: self._value(mapped[tag.upper()], value, member.email)
                 for tag, value in member.merge_fields.items() if tag.upper() in mapped}
        out: dict[str, Any] = {"email": self.fake.email(member.email), "status": member.status,
                               "merge_fields": merge, "tags": list(member.tags)}
        if member.status == "archived":
            before = self._before_archive(list_id, member.email)
            if before:
                out["status_before_archive"] = before
        return out

    def _before_archive(self, list_id: str, email: str) -> str | None:
        """What an archived member was, where the audit log knows (Mailchimp does not say): our own
        archive's status, or unsubscribed when a restore was refused for its compliance state."""
        known = self.memory.archived_by_us.get((list_id, email))
        if known:
            return known
        refusal = self.memory.refusals.get((list_id, email))
        if refusal is not None and refusal.action == "restore_member" and "compliance" in refusal.reason.lower():
            return "unsubscribed"
        return None

    def _forgotten(self, state: AudienceState) -> list[str]:
        """Emails whose create Mailchimp refused as permanently deleted (so a --retry-refused
        rehearsal is refused too); Mailchimp lists no forgotten emails, the audit log remembers them."""
        out = []
        for (list_id, email), refusal in self.memory.refusals.items():
            text = refusal.reason.lower()
            if list_id == state.list_id and email not in state.members and ("forgotten" in text or "deleted" in text):
                out.append(self.fake.email(email) or "")
        return sorted(e for e in out if "@" in e)

    # -- the audit memory ----------------------------------------------------------------------

    def memory_facts(self) -> dict[str, list[dict[str, Any]]]:
        """The memory facts about people in the snapshot, pseudonymised and in pseudonym order (an
        order of the real emails would say something about them); reconciler.rehearsal replays them."""
        present = {c.email for c in self.snapshot.contacts.values() if c.email}
        present |= {e for s in self.snapshot.audiences.values() for e in s.members}
        memory, email, text = self.memory, self.fake.email, self.fake.text

        def ordered(facts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
            return sorted(facts, key=lambda f: (f["email"], f.get("list_id", "")))

        return {
            "archived_by_us": ordered({"list_id": lid, "email": email(e), "status": status}
                                      for (lid, e), status in memory.archived_by_us.items() if e in present),
            "refusals": ordered({"list_id": lid, "email": email(e), "action": r.action, "reason": text(r.reason),
                                 "at": r.at} for (lid, e), r in memory.refusals.items() if e in present),
            "opted_out": ordered({"email": email(e), "reason": text(why)}
                                 for e, why in memory.opted_out.items() if e in present),
            "handovers_unfinished": ordered({"list_id": lid, "email": email(e), "reason": text(why)}
                                            for (lid, e), why in memory.handovers_unfinished.items() if e in present),
        }


def name_properties(config: Config, snapshot: Snapshot, notes: list[str]) -> set[str]:
    """HubSpot properties holding names: mapped to a merge field whose tag or property says NAME
    (FNAME, LNAME, firstname, company_name ...). Kept as they are when the plan reads more than
    their equality: used by a tag rule or a handover, or mapped to a merge field that is not text."""
    names: set[str] = set()
    not_text: set[str] = set()
    for audience in config.audiences.values():
        state = snapshot.audiences.get(audience.mailchimp_list_id)
        types = {t.upper(): f.type for t, f in (state.merge_fields if state else {}).items()}
        for tag, prop in audience.merge_fields.items():
            if "NAME" in tag.upper() or "name" in prop.lower():
                names.add(prop)
            if types.get(tag.upper(), "text") != "text":
                not_text.add(prop)
    rules = {rule.property for a in config.audiences.values() for st in a.streams for s in st.sources
             for rule in s.tag_rules}
    written = {p for a in config.audiences.values() for h in a.handover for p in h.set_properties}
    for prop in sorted(names & (rules | written | not_text)):
        notes.append(f"property {prop} looks like a name but the plan reads its value (tag rule, handover or a "
                     "merge field that is not text): kept as it is")
    return names - rules - written - not_text


def write_snapshot(path: str, *, config: Config, config_path: str, snapshot: Snapshot, memory: Memory,
                   hubspot: Any, audiences: Iterable[str], env: Mapping[str, str], keep_names: bool) -> list[str]:
    """Writes the seed to `path` (YAML, or JSON for a `.json` name) atomically, readable by the
    owner only; returns the lines to show on stderr. Reads the subscription definitions and the
    property names from HubSpot (the snapshot holds neither), and the consent of restore candidates
    the plan left unread because the audit log decided for them."""
    target = _checked_target(path, config_path)
    fake = Pseudonyms.from_env(env)
    writer = _Writer(config, snapshot, memory, fake, keep_names)
    with ThreadPoolExecutor(hubspot.concurrency, thread_name_prefix="snapshot-consent") as pool:
        consent = {**read_consent(hubspot, pool, writer.consent_unread(), lambda *_: None), **snapshot.consent}
    seed: dict[str, Any] = {
        "hubspot": writer.hubspot(hubspot.subscription_definitions(), hubspot.contact_properties(), consent),
        "mailchimp": writer.mailchimp(),
    }
    written_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    seed["rehearsal"] = {
        "format": FORMAT, "written_at": written_at, "observed_at": snapshot.observed_at,
        "config": config_path, "config_checksum": config.checksum, "audiences": list(audiences),
        "emails": f"pseudonymised with {'a random key that was not kept' if fake.random else KEY_VARIABLE}",
        "names": "kept (--no-redact)" if keep_names else "replaced",
        "memory": writer.memory_facts(),
    }
    header = _header(seed["rehearsal"], target)
    if target.suffix.lower() == ".json":
        seed["rehearsal"]["note"] = " ".join(line.lstrip("# ") for line in header)
        text = json.dumps(seed, indent=1, ensure_ascii=False) + "\n"
    else:
        text = "\n".join(header) + "\n" + yaml.dump(seed, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                                                     default_flow_style=None, width=120)
    if target.suffix.lower() != ".json" and len(snapshot.contacts) > JSON_ABOVE:
        writer.notes.append(f"{len(snapshot.contacts)} contacts: a .json snapshot is written and loaded about ten "
                            "times faster than YAML at this size")
    replaced = target.exists()
    write_private(target, text, what="snapshot")
    lines = [f"snapshot: {'replaced' if replaced else 'written to'} {target}: {len(snapshot.contacts)} contacts, "
             f"{sum(len(s.members) for s in snapshot.audiences.values())} members; emails pseudonymised, names "
             f"{seed['rehearsal']['names']}; it still holds personal data (property values, ids): keep it private",
             f"snapshot: rehearse with: reconcile --sandbox --sandbox-seed {target} --plan"]
    return lines + [f"snapshot: note: {note}" for note in writer.notes]


def check_snapshot_out(path: str, config_path: str, env: Mapping[str, str]) -> None:
    """The checks `write_snapshot` makes before it reads anything, for a run to make them first."""
    _checked_target(path, config_path)
    Pseudonyms.from_env(env)


def _header(section: Mapping[str, Any], target: Path) -> list[str]:
    return [
        f"# Rehearsal snapshot: written by `reconcile --plan --snapshot-out` at {section['written_at']} from",
        f"# config {section['config']} (checksum {section['config_checksum']}), observed at {section['observed_at']}.",
        f"# A sandbox seed: `reconcile --sandbox --sandbox-seed {target} --plan` (then --apply) rehearses a",
        "# config change on this copy, with an audit log of its own built from the `rehearsal:` section.",
        f"# Emails are {section['emails']}; names are {section['names']}.",
        "# It still holds real HubSpot ids, list names, tags and property values: it is personal data.",
        "# Keep it out of version control and delete it when the rehearsal is done.",
    ]


def _checked_target(path: str, config_path: str) -> Path:
    target = Path(path)
    if target.is_dir():
        raise ReconcilerError(f"--snapshot-out {path}: is a directory; name a file, e.g. .reconciler/snapshot.yaml")
    config_dir = Path(config_path) if Path(config_path).is_dir() else Path(config_path).parent
    # (A config in the working directory itself does not make the whole project off limits.)
    if _inside(target, config_dir) and not _inside(Path.cwd(), config_dir):
        raise ReconcilerError(f"--snapshot-out {path}: inside the config directory {config_dir}, which is usually "
                              "committed, and a snapshot holds personal data: write it elsewhere, e.g. "
                              ".reconciler/snapshot.yaml")
    if not target.parent.is_dir():
        if target.parent.name != ".reconciler" or target.parent.exists():
            raise ReconcilerError(f"--snapshot-out {path}: the directory {target.parent} does not exist")
        target.parent.mkdir(parents=True)  # the product's own working directory, as an apply makes it
    return target


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True

