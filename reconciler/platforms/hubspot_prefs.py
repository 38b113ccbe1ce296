"""HubSpot communication preferences for the client: v3 (`legacy`) and the dated, v4-shaped statuses (`2026-03`).

Apart from hubspot.py because opt-outs are the compliance-critical writes. Every status write goes
through `Preferences._write`, the one place that sends to HubSpot, and it refuses (before sending)
anything but an unsubscribe: the dated versions, unlike v3, re-subscribe an opted-out contact when
asked, and the product never asks.

Dated API facts (HubSpot's OpenAPI `Communication Preferences/Subscriptions/Rollouts/176901/2026-03`):
`GET statuses/{email}?channel=EMAIL` and `POST statuses/{email}` answer `{status, results:
[PublicStatus], startedAt, completedAt}`; `POST statuses/batch/write` takes `{inputs: [{subscriberIdString,
channel, statusState, subscriptionId, legalBasis?, legalBasisExplanation?}]}` and answers 200 with
`results` and, for failed inputs, `errors`/`numErrors`. [UNCONFIRMED]: the batch size limit (100
here), how HubSpot answers a repeated unsubscribe (200 with `setStatusSuccessReason:
NO_STATUS_CHANGE`, or a 400 "already unsubscribed" like v3: both are `already`), and which context
key a per-input error names the email under (an input the answer does not account for is sent
again on its own). The batch endpoints need Marketing Hub Enterprise and their own scopes
(reference, "Facts added after review"); on any 403 from them the client sends one request per
contact instead, for the rest of the run.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from reconciler.errors import DailyLimitReached, PermanentVendorError, VendorError
from reconciler.platforms.http import VendorResponse, VendorSession
from reconciler.platforms.hubspot_paths import ApiPaths
from reconciler.platforms.results import ALREADY, APPLIED, FAILED, WriteResult

log = logging.getLogger(__name__)

UNSUBSCRIBED = "UNSUBSCRIBED"
NO_STATUS_CHANGE = "NO_STATUS_CHANGE"
STATUS_BATCH = 100  # inputs per statuses/batch/write: HubSpot's cap is [UNCONFIRMED]; the sandbox takes 100
NOT_FOUND_CATEGORY = "OBJECT_NOT_FOUND"


class SubscribeRefused(RuntimeError):
    """A communication-preferences write that is not an unsubscribe reached the client.

    A programming error, never a vendor answer: nothing was sent. The product must never send a
    subscribe status (the dated versions would re-subscribe an opted-out contact).
    """


@dataclass(frozen=True, slots=True)
class OptOut:
    """One R11 opt-out: unsubscribe `email` from one subscription type, with the legal basis.

    `not_found_retries`: how often a 404 (no such contact) is asked again, for a contact created
    moments before (HubSpot may not know it yet), `not_found_delay` seconds times the attempt apart.
    """

    email: str
    subscription_id: str
    legal_basis: str = ""
    explanation: str = ""
    not_found_retries: int = 0
    not_found_delay: float = 1.0

    @property
    def key(self) -> tuple[str, str]:
        return self.email.strip().lower(), str(self.subscription_id)


def _already(exc: PermanentVendorError) -> bool:
    """HubSpot's 400 for an unsubscribe already made (v3, and the dated versions should they answer so)."""
    return exc.status == 400 and "already unsubscribed" in exc.detail.lower()


class Preferences:
    """Subscription definitions, consent reads and opt-out writes in the configured API generation.

    Thread-safe. Remembers, for the client's lifetime (one run), that HubSpot refused batch status
    writes, so that it asks only once.
    """

    def __init__(self, session: VendorSession, paths: ApiPaths) -> None:
        self.session = session
        self.paths = paths
        self.base = paths.prefs
        self._lock = threading.Lock()
        self._batch_refused = ""  # HubSpot's words when it refused a batch write ("" while it has not)

    @property
    def batch_refused(self) -> str:
        with self._lock:
            return self._batch_refused

    # ----- reads -------------------------------------------------------------------------------

    def definitions(self) -> dict[str, str]:
        """Subscription id -> name (`GET …/definitions`: v3 `subscriptionDefinitions`, dated `results`)."""
        body = self.session.call("GET", f"{self.base}/definitions").body or {}
        items = body.get("results" if self.paths.dated else "subscriptionDefinitions") or []
        return {str(d["id"]): str(d.get("name") or "") for d in items if isinstance(d, Mapping) and "id" in d}

    def subscribed_to(self, email: str) -> frozenset[str]:
        """Ids of the subscriptions `email` is explicitly SUBSCRIBED to (R8's evidence of consent).
        v3 `GET status/email/{email}`; dated `GET statuses/{email}?channel=EMAIL`. An unknown email
        (404, or 200 with no statuses) has none."""
        address = quote(email, safe="@")
        if self.paths.dated:
            answer = self.session.call("GET", f"{self.base}/statuses/{address}", params={"channel": "EMAIL"},
                                       ok=(200, 404))
            items, id_key = ("results", "subscriptionId")
        else:
            answer = self.session.call("GET", f"{self.base}/status/email/{address}", ok=(200, 404))
            items, id_key = ("subscriptionStatuses", "id")
        body = answer.body if answer.status == 200 and isinstance(answer.body, Mapping) else {}
        return frozenset(str(s[id_key]) for s in body.get(items) or []
                         if isinstance(s, Mapping) and s.get(id_key) is not None
                         and str(s.get("status") or "").upper() == "SUBSCRIBED")

    # ----- the one way out ---------------------------------------------------------------------

    def _write(self, path: str, body: Mapping[str, Any], ok: Sequence[int] = (200, 201, 204, 207)) -> VendorResponse:
        """POST a status write, after checking that it is an unsubscribe: v3 only to `…/unsubscribe`,
        a dated write only with `statusState: UNSUBSCRIBED` (every input of a batch). Anything else
        raises SubscribeRefused before a byte is sent."""
        if "inputs" in body or "statusState" in body:
            inputs = body["inputs"] if "inputs" in body else [body]
            states = [i.get("statusState") if isinstance(i, Mapping) else None
                      for i in (inputs if isinstance(inputs, list) else [None])]
            if not states or any(state != UNSUBSCRIBED for state in states):
                raise SubscribeRefused(f"hubspot: refusing to send statusState {sorted({str(s) for s in states})} "
                                       f"to {path}: the reconciler only ever unsubscribes")
        elif not path.endswith("/unsubscribe"):
            raise SubscribeRefused(f"hubspot: refusing to POST {path}: the reconciler only ever unsubscribes")
        return self.session.call("POST", path, json=dict(body), ok=ok)

    def _status_input(self, item: OptOut, *, batch: bool) -> dict[str, Any]:
        sid = str(item.subscription_id)
        body: dict[str, Any] = {"channel": "EMAIL", "statusState": UNSUBSCRIBED,
                                "subscriptionId": int(sid) if sid.isdigit() else sid}
        if batch:
            body = {"subscriberIdString": item.email, **body}
        if item.legal_basis:
            body["legalBasis"] = item.legal_basis
        if item.explanation:
            body["legalBasisExplanation"] = item.explanation
        return body

    # ----- one contact -------------------------------------------------------------------------

    def unsubscribe(self, item: OptOut) -> WriteResult:
        """Unsubscribe one email from one subscription type (R11), one request (plus 404 retries).

        Idempotent: a repeat (v3's 400 "already unsubscribed"; the dated 200 NO_STATUS_CHANGE or
        that 400) is `already`. A 404 (no such contact) is retried `not_found_retries` times, then
        raised as PermanentVendorError like any other refusal.
        """
        for attempt in range(item.not_found_retries + 1):
            try:
                return self._send_one(item)
            except PermanentVendorError as exc:
                if _already(exc):
                    return WriteResult(item.email, ALREADY, exc.detail)
                if exc.status != 404 or attempt == item.not_found_retries:
                    raise
            time.sleep(item.not_found_delay * (attempt + 1))
        raise AssertionError("unreachable")

    def _send_one(self, item: OptOut) -> WriteResult:
        if not self.paths.dated:
            self._write(f"{self.base}/unsubscribe", {
                "emailAddress": item.email, "subscriptionId": str(item.subscription_id),
                "legalBasis": item.legal_basis, "legalBasisExplanation": item.explanation})
            return WriteResult(item.email, APPLIED)
        path = f"{self.base}/statuses/{quote(item.email, safe='@')}"
        body = self._write(path, self._status_input(item, batch=False)).body or {}
        results = [s for s in body.get("results") or [] if isinstance(s, Mapping)]
        mine = [s for s in results if str(s.get("subscriptionId")) == str(item.subscription_id)] or results
        return self._outcome(item, mine[0]) if mine else WriteResult(item.email, APPLIED)

    @staticmethod
    def _outcome(item: OptOut, status: Mapping[str, Any]) -> WriteResult:
        """A PublicStatus answered for `item`: unsubscribed now (applied), already (NO_STATUS_CHANGE),
        or anything else (failed, with what HubSpot says the status is)."""
        state = str(status.get("status") or "").upper()
        if state != UNSUBSCRIBED:
            return WriteResult(item.email, FAILED, f"HubSpot answered status {state or 'none'} for subscription "
                                                   f"{item.subscription_id}")
        if str(status.get("setStatusSuccessReason") or "") == NO_STATUS_CHANGE:
            return WriteResult(item.email, ALREADY, NO_STATUS_CHANGE)
        return WriteResult(item.email, APPLIED)

    # ----- many contacts -----------------------------------------------------------------------

    def unsubscribe_many(self, items: Sequence[OptOut], *, workers: int = 4) -> list[WriteResult]:
        """One WriteResult per item, in order. Dated: `statuses/batch/write`, ≤ 100 inputs a request
        (an email and subscription asked twice is sent once); after a 403 from it (a missing batch
        scope, or a portal below Marketing Hub Enterprise) one request per contact, for the rest of
        the run. Legacy: one request per contact (`workers` at once), as before.

        Per item, the semantics of `unsubscribe`: a repeat is `already`; an error is `failed` with
        HubSpot's words; an unknown contact is retried on its own when it has `not_found_retries`.
        DailyLimitReached propagates; other vendor errors become `failed`.
        """
        items = list(items)
        by_key: dict[tuple[str, str], list[int]] = {}
        for index, item in enumerate(items):
            by_key.setdefault(item.key, []).append(index)
        done: dict[tuple[str, str], WriteResult] = {}
        alone: list[tuple[str, str]] = []  # keys to send one request each
        if self.paths.dated:
            keys = list(by_key)
            for start in range(0, len(keys), STATUS_BATCH):
                part = keys[start:start + STATUS_BATCH]
                if self.batch_refused:
                    alone += part
                    continue
                answered, again = self._batch(part, {k: items[by_key[k][0]] for k in part})
                done.update(answered)
                alone += again
        else:
            alone = list(by_key)
        done.update(zip(alone, self._each([items[by_key[k][0]] for k in alone], workers)))
        return [WriteResult(item.email, done[item.key].outcome, done[item.key].detail) for item in items]

    def _each(self, items: Sequence[OptOut], workers: int) -> list[WriteResult]:
        def one(item: OptOut) -> WriteResult:
            try:
                return self.unsubscribe(item)
            except DailyLimitReached:
                raise
            except VendorError as exc:
                return WriteResult(item.email, FAILED, str(exc))

        if len(items) <= 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix="optouts") as pool:
            return list(pool.map(one, items))

    def _batch(self, part: Sequence[tuple[str, str]], items: Mapping[tuple[str, str], OptOut]
               ) -> tuple[dict[tuple[str, str], WriteResult], list[tuple[str, str]]]:
        """One batch write: (results by key, keys to send on their own instead)."""
        path = f"{self.base}/statuses/batch/write"
        inputs = [self._status_input(items[key], batch=True) for key in part]
        try:
            answer = self._write(path, {"inputs": inputs}, ok=(200, 201, 207, 403))
        except DailyLimitReached:
            raise
        except PermanentVendorError as exc:
            if exc.status in (400, 404):
                return {}, list(part)  # refused whole (one bad input?): each on its own gets its own answer
            return {key: WriteResult(items[key].email, FAILED, str(exc)) for key in part}, []
        except VendorError as exc:
            return {key: WriteResult(items[key].email, FAILED, str(exc)) for key in part}, []
        if answer.status == 403:
            body = answer.body if isinstance(answer.body, Mapping) else {}
            with self._lock:
                self._batch_refused = str(body.get("message") or "HTTP 403")
            log.info("hubspot: batch status writes refused (%s); sending one request per contact",
                     self._batch_refused)
            return {}, list(part)
        return self._read_batch(path, answer.body if isinstance(answer.body, Mapping) else {}, part, items)

    def _read_batch(self, path: str, body: Mapping[str, Any], part: Sequence[tuple[str, str]],
                    items: Mapping[tuple[str, str], OptOut]) -> tuple[dict[tuple[str, str], WriteResult], list[tuple[str, str]]]:
        wanted = set(part)
        out: dict[tuple[str, str], WriteResult] = {}
        for status in body.get("results") or []:
            if not isinstance(status, Mapping):
                continue
            key = (str(status.get("subscriberIdString") or "").strip().lower(), str(status.get("subscriptionId")))
            if key in wanted:
                out[key] = self._outcome(items[key], status)
        again: list[tuple[str, str]] = []
        for error in body.get("errors") or []:
            if not isinstance(error, Mapping):
                continue
            context = error.get("context")
            named = {str(v).strip().lower() for values in (context.values() if isinstance(context, Mapping) else ())
                     if isinstance(values, list) for v in values}
            message = str(error.get("message") or error.get("category") or "HubSpot reported an error")
            for key in part:
                if key in out or key[0] not in named:
                    continue
                item = items[key]
                if "already unsubscribed" in message.lower():
                    out[key] = WriteResult(item.email, ALREADY, message)
                elif str(error.get("category") or "") == NOT_FOUND_CATEGORY and item.not_found_retries:
                    again.append(key)  # created moments ago: asked again, with its retries
                else:
                    out[key] = WriteResult(item.email, FAILED, f"hubspot: POST {path}: {message}")
        again += [key for key in part if key not in out and key not in again]  # unaccounted for: ask alone
        return out, again
