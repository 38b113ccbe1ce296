"""What the predecessor scripts did, for comparison: per source contact, a read, an upsert and a tag call.

Separate from the product on purpose (it must not share its batching); it talks straight to the
sandbox with plain `requests`, with 8 threads, which is kinder to it than the sequential original.
Usage (through child.py): baseline BASE_URL TOKEN API_KEY AUDIENCE LIST_ID...
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

import requests

WORKERS = 8


def run_baseline(args: list[str], out: TextIO) -> int:
    base_url, token, api_key, audience, *list_ids = args
    local = threading.local()

    def sessions() -> tuple[requests.Session, requests.Session]:
        if not hasattr(local, "hs"):
            local.hs = requests.Session()
            local.hs.headers["Authorization"] = f"Bearer {token}"
            local.mc = requests.Session()
            local.mc.auth = ("baseline", api_key)
        return local.hs, local.mc

    ids: dict[str, str] = {}
    hs, _ = sessions()
    for list_id in list_ids:  # the predecessor paged each source list, then went contact by contact
        after = None
        while True:
            params = {"limit": 250, **({"after": after} if after else {})}
            body = hs.get(f"{base_url}/crm/v3/lists/{list_id}/memberships", params=params).json()
            for row in body.get("results") or []:
                ids.setdefault(str(row["recordId"]), list_id)
            after = ((body.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def one(item: tuple[str, str]) -> None:
        contact_id, list_id = item
        hs, mc = sessions()
        got = hs.get(f"{base_url}/crm/v3/objects/contacts/{contact_id}",
                     params={"properties": "email,firstname,lastname"})
        codes = [got.status_code]
        props = (got.json().get("properties") or {}) if got.status_code == 200 else {}
        email = str(props.get("email") or "").strip().lower()
        if email:
            member = f"{base_url}/3.0/lists/{audience}/members/{hashlib.md5(email.encode()).hexdigest()}"
            put = mc.put(member, json={"email_address": email, "status_if_new": "subscribed",
                                       "merge_fields": {"FNAME": props.get("firstname") or "",
                                                        "LNAME": props.get("lastname") or ""}})
            tag = mc.post(member + "/tags", json={"tags": [{"name": f"list {list_id}", "status": "active"}]})
            codes += [put.status_code, tag.status_code]
        with lock:
            for code in codes:
                statuses[code] = statuses.get(code, 0) + 1

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, ids.items()))
    out.write(json.dumps({"contacts": len(ids), "statuses": statuses}) + "\n")
    return 0
