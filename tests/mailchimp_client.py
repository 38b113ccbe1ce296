"""Test helper for the Mailchimp emulator: a seed and a small client that drives MailchimpApi the
way the server does (admit, handle, release), so contract tests read like HTTP calls.

Every write also checks that `Response.mutated` agrees with a before/after diff of the state,
since the server's journal trusts that flag.
"""

from __future__ import annotations

import base64
import json as jsonlib
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode

from reconciler.sandbox.http import CaseInsensitiveDict, Request, SandboxOptions
from reconciler.sandbox.mailchimp import MailchimpApi
from reconciler.sandbox.mailchimp_state import MailchimpState

KEY = "sandboxkey-us1"
LIST = "abc123def4"
BASIC = "Basic " + base64.b64encode(f"anystring:{KEY}".encode()).decode()


def seed(members: list[dict[str, Any]] | None = None, **audience: Any) -> dict[str, Any]:
    """A SPEC §7 `mailchimp:` seed: three subscribed, one unsubscribed, one cleaned, one archived."""
    if members is None:
        members = [
            {"email": "ann@example.com", "status": "subscribed", "merge_fields": {"FNAME": "Ann", "LNAME": "Lee"}, "tags": ["Recruitment"]},
            {"email": "bob@example.com", "status": "unsubscribed", "merge_fields": {"FNAME": "Bob", "LNAME": "Doe"}, "tags": ["Recruitment"]},
            {"email": "carl@example.com", "status": "cleaned", "merge_fields": {"LNAME": "Cole"}},
            {"email": "dana@example.com", "status": "subscribed", "merge_fields": {"LNAME": "Dunn"}},
            {"email": "eve@example.org", "status": "subscribed", "merge_fields": {"LNAME": "Eve"}},
            {"email": "arch@example.com", "status": "archived", "merge_fields": {"LNAME": "Arch"}},
        ]
    return {
        "api_key": KEY,
        "audiences": [
            {
                "id": LIST,
                "name": "Main",
                "double_optin": True,
                "merge_fields": [
                    {"tag": "FNAME", "type": "text"},
                    {"tag": "LNAME", "type": "text", "required": True},
                    {"tag": "REGION", "type": "dropdown", "choices": ["North", "South"]},
                ],
                "members": members,
                **audience,
            }
        ],
    }


@dataclass
class Reply:
    status: int
    headers: CaseInsensitiveDict
    raw: bytes
    mutated: bool

    @property
    def body(self) -> Any:
        return jsonlib.loads(self.raw) if self.raw else None


class Client:
    """In-process client: builds Requests, runs admit/handle/release like the server."""

    def __init__(self, api: MailchimpApi) -> None:
        self.api = api
        self.state = api.state

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: str | None = BASIC,
    ) -> Reply:
        merged = {"Host": "127.0.0.1:8025"}
        if auth:
            merged["Authorization"] = auth
        merged.update(headers or {})
        body = data if data is not None else (jsonlib.dumps(json).encode() if json is not None else b"")
        query = Request.parse_query(urlencode(params or {}))
        request = Request(method, path, query, CaseInsensitiveDict(merged), body)
        refused = self.api.admit(request)
        if refused is not None:
            return _reply(refused)
        before = self.state.to_json()
        try:
            response = self.api.handle(request)
        finally:
            self.api.release(request)
        changed = self.state.to_json() != before
        assert response.mutated == changed, f"{method} {path}: mutated={response.mutated} but state changed={changed}"
        assert response.endpoint.startswith(method.upper()) or "X-HTTP-Method-Override" in merged
        return _reply(response)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def put(self, path: str, **kw: Any) -> Reply:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Reply:
        return self.request("PATCH", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)


def _reply(response: Any) -> Reply:
    headers = CaseInsensitiveDict({**response.headers, "Content-Type": response.content_type})
    return Reply(response.status, headers, response.encoded(), response.mutated)


def make_client(
    seed_data: dict[str, Any] | None = None,
    options: SandboxOptions | None = None,
    clock: Callable[[], float] | None = None,
    state: MailchimpState | None = None,
) -> Client:
    if state is None:
        state = MailchimpState.from_seed(seed_data or seed(), clock) if clock else MailchimpState.from_seed(seed_data or seed())
    return Client(MailchimpApi(state, options or SandboxOptions()))
