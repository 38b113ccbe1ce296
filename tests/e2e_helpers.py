"""Helpers of the end-to-end tests: run the real CLI in-process, build seeds and configs, read vendor state.

Separate from the test files so each e2e file stays a list of scenarios: here is how a scenario
reaches the sandbox (embedded `--sandbox` or a started `Sandbox`), how vendor-side state is read
back through the vendors' own APIs, and the compliance invariants asserted after every apply.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import requests
import yaml

from reconciler.cli import main
from reconciler.config import load_config
from reconciler.sandbox import Sandbox
from reconciler.sandbox.http import Request, Response, SandboxOptions
from reconciler.settings import Config

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG_DIR = REPO / "config"
DEMO_CONFIG_FILE = DEMO_CONFIG_DIR / "reconciler.yaml"
DEMO_SEED = DEMO_CONFIG_DIR / "sandbox" / "seed.yaml"
STATE_FILE = ".reconciler/sandbox-state.json"
MARKETING = "289137112"
LIST_ID = "abc123def4"
MC_KEY = "sandboxkey-us1"
HS_TOKEN = "sandbox-token"
SANDBOX_ENV = {"HUBSPOT_TOKEN": HS_TOKEN, "MAILCHIMP_API_KEY": MC_KEY}
OPTED_OUT = ("unsubscribed", "cleaned")
LIVE = ("subscribed", "pending", "transactional")


# -- running the CLI --------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def json(self) -> dict[str, Any]:
        return json.loads(self.out)


def run_cli(*argv: str, env: Mapping[str, str] | None = None, stdin_isatty: bool = False) -> Run:
    """The real CLI, in-process, with captured streams (never a terminal: emails masked unless --no-redact)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, env=dict(env or {}), stdin_isatty=stdin_isatty)
    return Run(code, out.getvalue(), err.getvalue())


def demo(*argv: str, seed: Path | str = DEMO_SEED, config: Path | str = DEMO_CONFIG_DIR) -> Run:
    """`reconcile --sandbox ...` on the demo config and seed (state in ./.reconciler)."""
    return run_cli("--sandbox", "--config", str(config), "--sandbox-seed", str(seed), *argv)


def plan_json(run: Run) -> dict[str, Any]:
    assert run.code in (0, 2), run.text
    return run.json()


def changes_of(doc: Mapping[str, Any], action: str | None = None, email: str | None = None) -> list[dict[str, Any]]:
    return [c for c in doc["changes"] if (action is None or c["action"] == action)
            and (email is None or c["email"] == email)]


def reports_of(doc: Mapping[str, Any], email: str | None = None) -> list[dict[str, Any]]:
    return [r for r in doc["reports"] if email is None or r["email"] == email]


# -- seeds and configs ------------------------------------------------------------------------


def contact(cid: str, email: str, *, subscribed: bool = True, unsubscribed: bool = False,
            opted_out_of_all: bool = False, **properties: Any) -> dict[str, Any]:
    return {"id": cid, "email": email, "properties": {k: str(v) for k, v in properties.items()},
            "subscribed": [MARKETING] if subscribed and not unsubscribed else [],
            "unsubscribed": [MARKETING] if unsubscribed else [], "opted_out_of_all": opted_out_of_all}


def member(email: str, status: str = "subscribed", tags: Sequence[str] = (), **merge: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"email": email, "status": status, "merge_fields": merge, "tags": list(tags)}
    return out


def hub_list(lid: str, name: str, members: Sequence[str], kind: str = "MANUAL") -> dict[str, Any]:
    return {"id": lid, "name": name, "processing_type": kind, "members": list(members)}


def make_seed(contacts: Sequence[Mapping[str, Any]], lists: Sequence[Mapping[str, Any]],
              members: Sequence[Mapping[str, Any]], *, merge_fields: Sequence[Mapping[str, Any]] | None = None,
              audiences: Sequence[Mapping[str, Any]] = (), properties: Sequence[str] = ("branches", "import_list"),
              permanently_deleted: Sequence[str] = (), double_optin: bool = False,
              scopes: Sequence[str] | None = None) -> dict[str, Any]:
    """A seed with the standard lists of `small_config` (719 source, 762 critical, 717 deals, 947 handover)
    unless `lists` names them itself, and one audience `LIST_ID` (plus `audiences`)."""
    given = {str(x["id"]) for x in lists}
    standard = [hub_list("719", "Recruitment", []), hub_list("762", "Compliance Hold", []),
                hub_list("717", "Active Deals", []), hub_list("947", "Sales Handover", [])]
    hubspot: dict[str, Any] = {
        "token": HS_TOKEN, "subscriptions": [{"id": MARKETING, "name": "Marketing Information"}],
        "properties": list(properties), "lists": list(lists) + [x for x in standard if x["id"] not in given],
        "contacts": list(contacts)}
    if scopes is not None:
        hubspot["scopes"] = list(scopes)
    main_audience = {"id": LIST_ID, "name": "Main", "double_optin": double_optin,
                     "merge_fields": list(merge_fields or [{"tag": "FNAME", "type": "text"},
                                                           {"tag": "LNAME", "type": "text"}]),
                     "members": list(members), "permanently_deleted": list(permanently_deleted)}
    return {"hubspot": hubspot, "mailchimp": {"api_key": MC_KEY, "audiences": [main_audience, *audiences]}}


def small_config(**audience: Any) -> dict[str, Any]:
    """One audience `main`: stream general (source 719 tag Recruitment, excluding active_deals 717),
    critical 762, handover `Recruitment Finished` to 947, R11 and R4 on; keys in `audience` replace."""
    main_audience: dict[str, Any] = {
        "mailchimp_list_id": LIST_ID,
        "new_member_status": "subscribed",
        "merge_fields": {"FNAME": "firstname", "LNAME": "lastname"},
        "streams": [{"name": "general", "exclude": ["active_deals"],
                     "sources": [{"list": "719", "tag": "Recruitment"}]}],
        "tag_policy": "first_tag_wins",
        "on_leave": "archive",
        "exempt": {"tags": ["VIP"]},
        "source_cleanup": True,
        "restore_archived": True,
        "handover": [{"tag": "Recruitment Finished", "to_list": "947", "remove_from": ["719"]}],
        "opt_outs": {"to_hubspot": {"statuses": ["unsubscribed"], "subscriptions": ["marketing"],
                                    "legal_basis": "LEGITIMATE_INTEREST_OTHER",
                                    "explanation": "Contact unsubscribed in Mailchimp"},
                     "from_hubspot": True},
    }
    main_audience.update(audience)
    return {"version": 1,
            "hubspot": {"token": "${HUBSPOT_TOKEN}"},
            "mailchimp": {"api_key": "${MAILCHIMP_API_KEY}"},
            "subscriptions": {"marketing": MARKETING},
            "exclusions": {"critical": ["762"], "hard": {"active_deals": ["717"]}},
            "audiences": {"main": main_audience}}


def demo_config_doc() -> dict[str, Any]:
    """The repo's example config as a mapping, without notifications (their variables are unset here)."""
    doc = yaml.safe_load(DEMO_CONFIG_FILE.read_text(encoding="utf-8"))
    doc.pop("notifications", None)
    return doc


def write_yaml(path: Path, doc: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(doc), sort_keys=False), encoding="utf-8")
    return path


def typed_config(path: Path | str) -> Config:
    config, _ = load_config(path, SANDBOX_ENV, mode="validate")
    return config


# -- a sandbox started by the test ------------------------------------------------------------


class RecordingSandbox(Sandbox):
    """A Sandbox that also keeps every request it processed and its answer (even one whose
    connection the fault injector then drops), so tests can see what reached the vendor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[str, str, Any, int, bool]] = []  # method, path, body, status, mutated
        self.created: list[str] = []  # emails Mailchimp answered as new members (batch subscribe)
        self._log_lock = threading.Lock()

    def _handle(self, vendor: Any, request: Request) -> Response:
        response = super()._handle(vendor, request)
        try:
            body = request.json()
        except ValueError:
            body = None
        with self._log_lock:
            self.log.append((request.method, request.path, body, response.status, response.mutated))
            if isinstance(response.body, dict) and isinstance(response.body.get("new_members"), list):
                self.created.extend(str(m.get("email_address", "")).lower() for m in response.body["new_members"])
        return response

    def mutations(self) -> list[tuple[str, str, Any, int, bool]]:
        with self._log_lock:
            return [entry for entry in self.log if entry[4]]


@dataclass
class Env:
    """A started sandbox, a config written into `root` that points at it, and a CLI runner."""

    root: Path
    sandbox: RecordingSandbox
    config_doc: dict[str, Any]
    config_path: Path = field(init=False)

    def __post_init__(self) -> None:
        doc = copy.deepcopy(self.config_doc)
        doc.setdefault("hubspot", {})
        doc.setdefault("mailchimp", {})
        doc["hubspot"].update(token="${HUBSPOT_TOKEN}", base_url=self.sandbox.base_url)
        doc["mailchimp"].update(api_key="${MAILCHIMP_API_KEY}", base_url=self.sandbox.mailchimp_base_url)
        self.config_path = write_yaml(self.root / "config" / "reconciler.yaml", doc)

    def cli(self, *argv: str) -> Run:
        return run_cli(*argv, "--config", str(self.config_path), env=SANDBOX_ENV)

    @property
    def view(self) -> "VendorView":
        return VendorView(self.sandbox.base_url)

    @property
    def config(self) -> Config:
        return typed_config(self.config_path)

    def writes(self) -> dict[str, int]:
        return {k: n for k, n in self.sandbox.counters().items() if is_write(k) and n}


@contextmanager
def started(root: Path, seed: Mapping[str, Any], config_doc: Mapping[str, Any],
            options: SandboxOptions = SandboxOptions()) -> Iterator[Env]:
    sandbox = RecordingSandbox(copy.deepcopy(dict(seed)), options=options)
    sandbox.start()
    try:
        yield Env(root, sandbox, copy.deepcopy(dict(config_doc)))
    finally:
        sandbox.stop()


@contextmanager
def embedded_state(root: Path) -> Iterator["VendorView"]:
    """The vendor state an earlier `--sandbox` run left in `.reconciler/sandbox-state.json`, served over HTTP."""
    sandbox = Sandbox(state_file=str(root / STATE_FILE))
    sandbox.start()
    try:
        yield VendorView(sandbox.base_url)
    finally:
        sandbox.stop()


def is_write(endpoint: str) -> bool:
    """Classified by endpoint name: HubSpot's batch/read and searches are POSTs that only read."""
    method, _, path = endpoint.partition(" ")
    if method in ("GET", "HEAD"):
        return False
    return not (path.endswith("/batch/read") or path.endswith("/search"))


# -- reading vendor state through the vendors' APIs -------------------------------------------


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MemberView:
    email: str
    status: str
    tags: frozenset[str]
    merge_fields: Mapping[str, Any]


class VendorView:
    """Reads HubSpot and Mailchimp state over HTTP, the way an operator would check it."""

    def __init__(self, base_url: str, token: str = HS_TOKEN, api_key: str = MC_KEY) -> None:
        self.base = base_url
        self.http = requests.Session()
        self.hs = {"Authorization": f"Bearer {token}"}
        self.mc = ("anystring", api_key)

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request, tried again on what a faulty sandbox injects (5xx, 429, dropped connections)."""
        for attempt in range(20):
            try:
                response = self.http.request(method, url, timeout=30, **kwargs)
            except requests.ConnectionError:
                continue
            if response.status_code not in (429, 500, 502, 503):
                return response
            time.sleep(min(0.05 * attempt, 0.5))
        raise AssertionError(f"{method} {url}: no answer after 20 tries")

    def _get(self, url: str, **kwargs: Any) -> Any:
        response = self._send("GET", url, **kwargs)
        response.raise_for_status()
        return response.json()

    # Mailchimp
    def members(self, list_id: str = LIST_ID) -> dict[str, MemberView]:
        """Every member, archived ones included (they are listed only with status=archived)."""
        out: dict[str, MemberView] = {}
        for status in (None, "archived"):
            offset = 0
            while True:
                params: dict[str, Any] = {"count": 1000, "offset": offset}
                if status:
                    params["status"] = status
                page = self._get(f"{self.base}/3.0/lists/{list_id}/members", auth=self.mc, params=params)
                for raw in page["members"]:
                    email = raw["email_address"].lower()
                    out[email] = MemberView(email, raw["status"], frozenset(t["name"] for t in raw.get("tags", [])),
                                            dict(raw.get("merge_fields") or {}))
                offset += len(page["members"])
                if not page["members"] or offset >= page["total_items"]:
                    break
        return out

    def member(self, email: str, list_id: str = LIST_ID) -> MemberView | None:
        response = self._send("GET", f"{self.base}/3.0/lists/{list_id}/members/{subscriber_hash(email)}",
                              auth=self.mc)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        raw = response.json()
        return MemberView(raw["email_address"].lower(), raw["status"],
                          frozenset(t["name"] for t in raw.get("tags", [])), dict(raw.get("merge_fields") or {}))

    # HubSpot
    def list_members(self, list_id: str) -> set[str]:
        ids: set[str] = set()
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 250}
            if after:
                params["after"] = after
            page = self._get(f"{self.base}/crm/v3/lists/{list_id}/memberships", headers=self.hs, params=params)
            ids.update(str(r["recordId"]) for r in page["results"])
            after = (page.get("paging") or {}).get("next", {}).get("after")
            if not after:
                return ids

    def contact(self, email: str, properties: Sequence[str] = ()) -> dict[str, Any] | None:
        props = ",".join(["email", "hs_email_optout", f"hs_email_optout_{MARKETING}", *properties])
        response = self._send("GET", f"{self.base}/crm/v3/objects/contacts/{email}", headers=self.hs,
                              params={"idProperty": "email", "properties": props})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def contact_id(self, email: str) -> str | None:
        found = self.contact(email)
        return str(found["id"]) if found else None

    def subscription(self, email: str, sid: str = MARKETING) -> dict[str, Any] | None:
        """The v3 status of one subscription ({status, legalBasis, legalBasisExplanation}), None if never asked."""
        response = self._send("GET", f"{self.base}/communication-preferences/v3/status/email/{email}",
                              headers=self.hs)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        for status in response.json()["subscriptionStatuses"]:
            if str(status["id"]) == sid:
                return status
        return None

    def opted_out(self, email: str, sids: Sequence[str]) -> bool:
        """Opted out in HubSpot (SPEC §4 terms): NOT_SUBSCRIBED from one of `sids`, or out of all email."""
        found = self.contact(email)
        if found is None:
            return False
        props = found["properties"]
        if props.get("hs_email_optout") == "true":
            return True
        return any(props.get(f"hs_email_optout_{sid}") == "true" or
                   (self.subscription(email, sid) or {}).get("status") == "NOT_SUBSCRIBED" for sid in sids)

    def add_to_list(self, list_id: str, ids: Sequence[str]) -> None:
        response = self.http.put(f"{self.base}/crm/v3/lists/{list_id}/memberships/add", headers=self.hs,
                                 json=list(ids), timeout=30)
        response.raise_for_status()

    def end_state(self, config: Config, emails: Sequence[str] = ()) -> dict[str, Any]:
        """A comparable picture of everything the config touches: members, list memberships, statuses."""
        lists = set(config.exclusions.critical)
        for audience in config.audiences.values():
            for stream in audience.streams:
                lists.update(s.list for s in stream.sources)
                for name in stream.exclude:
                    lists.update(config.exclusions.hard.get(name, ()))
            for handover in audience.handover:
                lists.add(handover.to_list)
                lists.update(handover.remove_from)
        members = {a.mailchimp_list_id: {e: (m.status, sorted(m.tags), dict(sorted(m.merge_fields.items())))
                                         for e, m in self.members(a.mailchimp_list_id).items()}
                   for a in config.audiences.values()}
        everyone = sorted({*emails, *(e for ms in members.values() for e in ms)})
        statuses = {}
        for email in everyone:
            status = self.subscription(email)
            statuses[email] = None if status is None else (status["status"], status["legalBasis"],
                                                           status["legalBasisExplanation"])
        return {"members": members, "lists": {lid: sorted(self.list_members(lid)) for lid in sorted(lists)},
                "subscriptions": statuses}


# -- the compliance invariants of the brief ---------------------------------------------------


def assert_compliance(view: VendorView, config: Config, before: Mapping[str, Mapping[str, MemberView]] | None = None,
                      *, converged: bool = True) -> None:
    """After an apply: (1) nobody opted out is subscribed/pending (set, restored or sent a confirmation);
    (2) no critical contact has a subscribed, pending or transactional member; (3) every Mailchimp
    opt-out reached HubSpot (when `converged`); (4) an unsubscribed member is archived only once its
    opt-out is in HubSpot. `before` (list id -> members before the apply) lets (1), (3) and (4) see
    opt-outs the apply has since archived."""
    critical_ids: set[str] = set()
    for lid in config.exclusions.critical:
        critical_ids.update(view.list_members(lid))
    problems: list[str] = []
    for name, audience in config.audiences.items():
        lid = audience.mailchimp_list_id
        now = view.members(lid)
        earlier = dict((before or {}).get(lid, {}))
        # R4 sets members to unsubscribed only with `from_hubspot` on (SPEC §4 R4); off, an opted-out
        # person's member keeps its status (and gets no other write, checked by the tests themselves).
        r4 = audience.opt_outs.from_hubspot if audience.opt_outs.from_hubspot_enabled else ()
        to_hs = audience.opt_outs.to_hubspot
        for email, m in now.items():
            was = earlier.get(email)
            if m.status in ("subscribed", "pending"):
                if was is not None and was.status in OPTED_OUT:
                    problems.append(f"(1) {email} was {was.status} in {lid} and is now {m.status}")
                if r4 and view.opted_out(email, r4):
                    problems.append(f"(1) {email} is opted out in HubSpot but {m.status} in {lid}")
            if m.status in LIVE:
                cid = view.contact_id(email)
                if cid is not None and cid in critical_ids:
                    problems.append(f"(2) critical contact {email} has a {m.status} member in {lid}")
        if to_hs is None:
            continue
        opted_out_emails = {e for e, m in now.items() if m.status in to_hs.statuses}
        opted_out_emails |= {e for e, m in earlier.items() if m.status in to_hs.statuses}
        for email in sorted(opted_out_emails):
            if view.contact(email) is None:
                continue  # reported, not changed (or created by create_missing_contacts and then checked)
            missing = [sid for sid in to_hs.subscriptions
                       if (view.subscription(email, sid) or {}).get("status") != "NOT_SUBSCRIBED"]
            if not missing:
                continue
            archived_now = now.get(email) is not None and now[email].status == "archived"
            was_out = email in earlier and earlier[email].status in OPTED_OUT
            if archived_now and was_out:
                problems.append(f"(4) {email} was archived in {lid} before its opt-out reached HubSpot ({missing})")
            elif converged:
                problems.append(f"(3) {email}'s Mailchimp opt-out in {lid} has not reached HubSpot ({missing})")
    assert not problems, "compliance invariants broken:\n" + "\n".join(problems)


def members_by_list(view: VendorView, config: Config) -> dict[str, dict[str, MemberView]]:
    return {a.mailchimp_list_id: view.members(a.mailchimp_list_id) for a in config.audiences.values()}
