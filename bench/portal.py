"""The benchmark's synthetic portal: a deterministic HubSpot + Mailchimp seed, its config, and the drift.

Separate from the driver (bench/run.py) so the shape of the portal (which share of contacts sits on
which list, which members exist and how they drift) is one readable place, reusable by tests.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

import requests

MARKETING = "289137112"
AUDIENCE = "bench00001"
SOURCE_A, SOURCE_B, CRITICAL, EXCLUDED, HANDOVER_TO = "719", "987", "762", "717", "947"
TOKEN = "bench-token"
API_KEY = "benchkey-us1"
FIRST = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lia")
LAST = ("Lee", "Ng", "Ortiz", "Park", "Quinn", "Rossi", "Sato", "Tan")


@dataclass(frozen=True)
class Shape:
    """Shares of the N contacts (each drawn independently, deterministic for one `seed`)."""

    contacts: int
    seed: int = 7
    members: float = 0.6  # eligible contacts that already have a member
    drift: float = 0.02  # existing members out of date (stale first name or missing tag)
    critical: float = 0.005
    excluded: float = 0.03
    hubspot_optout: float = 0.02
    mc_unsubscribed: float = 0.01
    archived: float = 0.005
    leavers: float = 0.005  # managed members whose contact left every source list
    unmanaged: float = 0.01  # members with no managed tag and no contact
    handover: float = 0.001


def email_of(i: int) -> str:
    return f"contact{i:07d}@example.com"


def _tag_for(branches: str, on_a: bool) -> str:
    return ("General Multi" if int(branches) > 1 else "Recruitment") if on_a else "General Single"


def make_seed(shape: Shape) -> dict[str, Any]:
    """The SPEC §7 seed of the portal (plain dicts, loaded by `Sandbox(seed)` in-process)."""
    rng = random.Random(shape.seed)
    n = shape.contacts
    contacts: list[dict[str, Any]] = []
    lists: dict[str, list[str]] = {SOURCE_A: [], SOURCE_B: [], CRITICAL: [], EXCLUDED: [], HANDOVER_TO: []}
    members: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        cid = str(i)
        branches = "2" if rng.random() < 0.2 else "1"
        props = {"firstname": rng.choice(FIRST), "lastname": rng.choice(LAST), "branches": branches}
        on_a = rng.random() < 0.7
        lists[SOURCE_A if on_a else SOURCE_B].append(cid)
        if on_a and rng.random() < 0.15:
            lists[SOURCE_B].append(cid)  # on both sources: the first (719) gives the tag
        critical = rng.random() < shape.critical
        excluded = rng.random() < shape.excluded
        opted_out = rng.random() < shape.hubspot_optout
        if critical:
            lists[CRITICAL].append(cid)
        if excluded:
            lists[EXCLUDED].append(cid)
        contact: dict[str, Any] = {"id": cid, "email": email_of(i), "properties": props}
        if opted_out:
            contact["unsubscribed"] = [MARKETING]
        else:
            contact["subscribed"] = [MARKETING]
        contacts.append(contact)
        if rng.random() >= shape.members:
            continue
        tag = _tag_for(branches, on_a)
        merge = {"FNAME": props["firstname"], "LNAME": props["lastname"]}
        tags = [tag]
        r = rng.random()
        if r < shape.drift / 2:
            merge["FNAME"] = "Stale"
        elif r < shape.drift:
            tags = []
        if rng.random() < shape.handover:
            tags = [tag, "Recruitment Finished"]
        r = rng.random()
        status = ("unsubscribed" if r < shape.mc_unsubscribed
                  else "archived" if r < shape.mc_unsubscribed + shape.archived else "subscribed")
        members.append({"email": email_of(i), "status": status, "merge_fields": merge, "tags": tags})
    for j in range(int(n * shape.leavers)):
        members.append({"email": f"leaver{j:06d}@example.org", "status": "subscribed",
                        "merge_fields": {"FNAME": "Left"}, "tags": ["Recruitment"]})
    for j in range(int(n * shape.unmanaged)):
        members.append({"email": f"newsletter{j:06d}@example.org", "status": "subscribed",
                        "merge_fields": {"FNAME": "News"}, "tags": ["Newsletter"]})
    names = {SOURCE_A: "Recruitment", SOURCE_B: "General Single", CRITICAL: "Compliance Hold",
             EXCLUDED: "Active Deals", HANDOVER_TO: "Sales Handover"}
    return {
        "hubspot": {
            "token": TOKEN,
            "subscriptions": [{"id": MARKETING, "name": "Marketing Information"}],
            "properties": ["branches", "import_list"],
            "lists": [{"id": lid, "name": names[lid], "processing_type": "MANUAL", "members": ids}
                      for lid, ids in lists.items()],
            "contacts": contacts,
        },
        "mailchimp": {
            "api_key": API_KEY,
            "audiences": [{"id": AUDIENCE, "name": "Bench", "double_optin": False,
                           "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"}],
                           "members": members}],
        },
    }


def config_yaml(hubspot_url: str, mailchimp_url: str, audit_path: str, *, requests_per_window: int = 100,
                window_seconds: float = 10.0) -> str:
    """The reconciler config pointing at the sandbox (credentials from the environment, as in production)."""
    return f"""version: 1
hubspot:
  token: ${{HUBSPOT_TOKEN}}
  base_url: {hubspot_url}
  rate_limit: {{requests: {requests_per_window}, per_seconds: {window_seconds}}}
mailchimp:
  api_key: ${{MAILCHIMP_API_KEY}}
  base_url: {mailchimp_url}
  max_connections: 8
subscriptions:
  marketing: "{MARKETING}"
exclusions:
  critical: ["{CRITICAL}"]
  hard:
    active_deals: ["{EXCLUDED}"]
audiences:
  bench:
    mailchimp_list_id: "{AUDIENCE}"
    new_member_status: subscribed
    merge_fields: {{FNAME: firstname, LNAME: lastname}}
    streams:
      - name: general
        exclude: [active_deals]
        sources:
          - list: "{SOURCE_A}"
            tag: Recruitment
            tag_rules:
              - {{when: {{property: branches, op: gt, value: 1}}, tag: General Multi}}
          - {{list: "{SOURCE_B}", tag: General Single}}
    tag_policy: first_tag_wins
    on_leave: archive
    exempt: {{tags: [VIP]}}
    source_cleanup: true
    restore_archived: true
    handover:
      - {{tag: Recruitment Finished, to_list: "{HANDOVER_TO}", remove_from: ["{SOURCE_A}"],
         set_properties: {{import_list: "{{source_list_name}}"}}}}
    opt_outs:
      to_hubspot:
        statuses: [unsubscribed]
        subscriptions: [marketing]
        legal_basis: LEGITIMATE_INTEREST_OTHER
        explanation: Contact unsubscribed in Mailchimp
      from_hubspot: true
audit:
  path: {audit_path}
"""


class _Patient(requests.Session):
    """A session that waits out 429s (the drift is made between timed phases, possibly under rate limits)."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        while True:
            response = super().request(*args, **kwargs)
            if response.status_code != 429:
                return response
            time.sleep(0.25)


def apply_drift(base_url: str, share: float, n: int, seed: int) -> dict[str, int]:
    """Changes `share` of the N contacts through the vendors' own APIs, as people and other tools would.

    Of the drifted contacts: 40% get a new first name, 20% join the exclusion list, 20% are new
    contacts added to a source list, 10% unsubscribe in Mailchimp, 10% opt out in HubSpot.
    """
    rng = random.Random(seed * 7919 + 1)
    total = max(10, int(n * share))
    picks = rng.sample(range(1, n + 1), min(n, total))
    k_names, k_excl, k_new, k_mc = (int(total * 0.4), int(total * 0.2), int(total * 0.2), int(total * 0.1))
    renamed, excluded = picks[:k_names], picks[k_names:k_names + k_excl]
    mc_unsub = picks[k_names + k_excl:k_names + k_excl + k_mc]
    hs_optout = picks[k_names + k_excl + k_mc:total - k_new]
    hs = _Patient()
    hs.headers["Authorization"] = f"Bearer {TOKEN}"
    mc = _Patient()
    mc.auth = ("bench", API_KEY)
    contacts = f"{base_url}/crm/v3/objects/contacts"

    def ok(response: requests.Response) -> None:
        if response.status_code >= 300:
            raise RuntimeError(f"drift: {response.request.method} {response.url} -> {response.status_code} {response.text[:200]}")

    for start in range(0, len(renamed), 100):
        inputs = [{"id": str(i), "properties": {"firstname": "Renamed"}} for i in renamed[start:start + 100]]
        ok(hs.post(f"{contacts}/batch/update", json={"inputs": inputs}))
    ok(hs.put(f"{base_url}/crm/v3/lists/{EXCLUDED}/memberships/add", json=[str(i) for i in excluded]))
    new_ids: list[str] = []
    for start in range(0, k_new, 100):
        inputs = [{"properties": {"email": f"new{n + j:07d}@example.com", "firstname": "New", "lastname": "Joiner",
                                  "branches": "1"}} for j in range(start, min(k_new, start + 100))]
        response = hs.post(f"{contacts}/batch/create", json={"inputs": inputs})
        ok(response)
        new_ids += [str(r["id"]) for r in response.json()["results"]]
    if new_ids:
        ok(hs.put(f"{base_url}/crm/v3/lists/{SOURCE_A}/memberships/add", json=new_ids))
    for i in mc_unsub:
        h = hashlib.md5(email_of(i).encode()).hexdigest()
        response = mc.patch(f"{base_url}/3.0/lists/{AUDIENCE}/members/{h}", json={"status": "unsubscribed"})
        if response.status_code not in (200, 404):  # 404: the contact never became a member
            ok(response)
    for i in hs_optout:
        response = hs.post(f"{base_url}/communication-preferences/v3/unsubscribe",
                           json={"emailAddress": email_of(i), "subscriptionId": MARKETING,
                                 "legalBasis": "LEGITIMATE_INTEREST_OTHER", "legalBasisExplanation": "bench drift"})
        if response.status_code not in (200, 400):  # 400: already unsubscribed
            ok(response)
    hs.close()
    mc.close()
    return {"renamed": len(renamed), "excluded": len(excluded), "new_contacts": len(new_ids),
            "mailchimp_unsubscribed": len(mc_unsub), "hubspot_opted_out": len(hs_optout)}
