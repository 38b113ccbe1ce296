"""Injected faults of the sandbox (`--fault-rate`, `--seed-random`): 500/502/503, dropped connections,
and, for reliability tests, 429s, slow answers, malformed JSON and partial batch failures.

Separate from the server so the draw sequence is one seeded generator behind one lock: the same
seed and the same order of requests give the same faults, which makes client retry tests repeatable.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import replace
from typing import Any, Callable, Sequence

from .http import Response

# Fault kinds, drawn uniformly once a request is chosen for a fault
# (SandboxOptions.variants["fault_kinds"] narrows them, e.g. ["drop"] for one test).
KINDS = ("500", "502", "503", "drop", "process_then_drop")
# Opt-in kinds (only through variants["fault_kinds"]; `--fault-rate` alone never draws them):
# "429" a rate-limit answer in the vendor's shape; "slow" processed after `variants["slow_ms"]`
# (default 1500) and then dropped, as a client that timed out sees it; "malformed" processed, then
# answered with half its JSON body; "hubspot_207" a HubSpot batch call of which the last third of
# inputs fails (207); "member_errors" a Mailchimp batch subscribe or bulk tag call of which the
# last third of members fails. The last two are drawn only for the requests they apply to.
EXTRA_KINDS = ("429", "slow", "malformed", "hubspot_207", "member_errors")
DROP = "drop"  # connection closed before anything is processed
PROCESS_THEN_DROP = "process_then_drop"  # handled (and journaled), then closed with no answer
HUBSPOT_BATCHES = ("/batch/read", "/batch/create", "/batch/update", "/batch/archive", "/batch/upsert")
MAILCHIMP_BATCHES = ("POST /3.0/lists/{list_id}", "POST /3.0/lists/{list_id}/segments/{segment_id}")
ITEM_ERROR_HUBSPOT = "An internal error occurred while processing this record; try again"
ITEM_ERROR_MAILCHIMP = "A temporary error occurred while processing this contact; try again"

# What an edge proxy in front of either vendor answers when the origin fails: HTML, not JSON.
EDGE_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n")


class FaultInjector:
    def __init__(self, rate: float, seed: int | None, kinds: Sequence[str] = KINDS) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate {rate} must be between 0 and 1")
        unknown = [k for k in kinds if k not in KINDS + EXTRA_KINDS]
        if unknown or not kinds:
            raise ValueError(f"fault kinds {list(kinds)} must be a non-empty subset of {KINDS + EXTRA_KINDS}")
        self.rate = rate
        self.kinds = tuple(kinds)
        self.injected: Counter[str] = Counter()  # faults served, by kind (read by tests)
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self, endpoint: str = "") -> str | None:
        """The fault for the next request, or None. Always draws twice so the sequence is stable.

        Kinds that do not apply to `endpoint` (the counter key) are left out; a request none apply
        to draws nothing."""
        if self.rate <= 0.0:
            return None
        kinds = [k for k in self.kinds if applies(k, endpoint)]
        if not kinds:
            return None
        with self._lock:
            hit = self._random.random() < self.rate
            kind = self._random.choice(kinds)
            if hit:
                self.injected[kind] += 1
        return kind if hit else None


def applies(kind: str, endpoint: str) -> bool:
    if kind == "hubspot_207":
        return endpoint.startswith("POST /crm/") and endpoint.endswith(HUBSPOT_BATCHES)
    if kind == "member_errors":
        return endpoint in MAILCHIMP_BATCHES
    return True


def edge_502() -> Response:
    return Response(502, EDGE_502, content_type="text/html")


def too_many_requests(vendor: str, window_seconds: float) -> Response:
    """A 429 as each vendor sends it when its limit is reached (HubSpot: the rolling window)."""
    if vendor == "hubspot":
        return Response(429, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                              "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"},
                        headers={"X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window_seconds * 1000))})
    return Response(429, {"type": "https://mailchimp.com/developer/marketing/docs/errors/", "title": "Too Many Requests",
                          "status": 429, "detail": "You have exceeded the limit of 10 simultaneous connections.",
                          "instance": ""}, content_type="application/problem+json; charset=utf-8")


def malformed(response: Response) -> Response:
    """The same answer with its JSON body cut in half (a proxy or a truncated transfer)."""
    payload = response.encoded()
    if not payload or response.content_type.startswith("text/html"):
        return response
    return replace(response, body=payload[: max(1, len(payload) // 2)])


def partial_batch(endpoint: str, request: Any, handle: Callable[[Any], Response]) -> Response:
    """Process the first two thirds of a batch's items and answer the rest as failed items."""
    try:
        body = request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return handle(request)
    if endpoint.startswith("POST /crm/"):
        return _hubspot_partial(body, request, handle)
    if endpoint.endswith("{segment_id}"):
        return _segment_partial(body, request, handle)
    return _subscribe_partial(body, request, handle)


def _split(items: list[Any]) -> tuple[list[Any], list[Any]]:
    failing = len(items) // 3 + 1 if items else 0
    return items[: len(items) - failing], items[len(items) - failing:]


def _with_body(request: Any, body: dict[str, Any]) -> Any:
    return replace(request, body=json.dumps(body).encode("utf-8"))


def _hubspot_partial(body: dict[str, Any], request: Any, handle: Callable[[Any], Response]) -> Response:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return handle(request)
    kept, failing = _split(inputs)
    answer = handle(_with_body(request, {**body, "inputs": kept})) if kept else Response(200, {"results": []})
    if not isinstance(answer.body, dict) or answer.status >= 400:
        return answer
    errors = list(answer.body.get("errors") or [])
    for item in failing:
        context: dict[str, list[str]] = {"ids": [str(item.get("id"))]} if isinstance(item, dict) and "id" in item else {}
        if isinstance(item, dict) and item.get("objectWriteTraceId"):
            context = {"objectWriteTraceId": [str(item["objectWriteTraceId"])]}
        errors.append({"status": "error", "category": "INTERNAL_ERROR", "message": ITEM_ERROR_HUBSPOT,
                       "context": context})
    result = dict(answer.body, errors=errors, numErrors=len(errors), status="COMPLETE")
    result.setdefault("results", [])
    return replace(answer, status=207, body=result, mutated=answer.mutated)


def _subscribe_partial(body: dict[str, Any], request: Any, handle: Callable[[Any], Response]) -> Response:
    members = body.get("members")
    if not isinstance(members, list) or not members:
        return handle(request)
    kept, failing = _split(members)
    answer = handle(_with_body(request, {**body, "members": kept}))
    if not isinstance(answer.body, dict) or answer.status >= 400:
        return answer
    errors = list(answer.body.get("errors") or [])
    errors += [{"email_address": str(m.get("email_address") if isinstance(m, dict) else m),
                "error": ITEM_ERROR_MAILCHIMP, "error_code": "ERROR_GENERIC", "field": "", "field_message": ""}
               for m in failing]
    return replace(answer, body=dict(answer.body, errors=errors, error_count=len(errors)))


def _segment_partial(body: dict[str, Any], request: Any, handle: Callable[[Any], Response]) -> Response:
    adds, removes = body.get("members_to_add"), body.get("members_to_remove")
    if not isinstance(adds, list) or not isinstance(removes, list) or not (adds or removes):
        return handle(request)
    keep_add, fail_add = _split(adds) if adds else ([], [])
    keep_remove, fail_remove = _split(removes) if removes else ([], [])
    answer = handle(_with_body(request, {**body, "members_to_add": keep_add, "members_to_remove": keep_remove}))
    if not isinstance(answer.body, dict) or answer.status >= 400:
        return answer
    errors = list(answer.body.get("errors") or [])
    if fail_add or fail_remove:
        errors.append({"email_addresses": [str(e) for e in fail_add + fail_remove], "error": ITEM_ERROR_MAILCHIMP})
    return replace(answer, body=dict(answer.body, errors=errors, error_count=len(errors)))
