"""Test helper for the Mailchimp emulator: a seed, and a client that talks HTTP to a started
Sandbox (or, in-process, drives MailchimpApi's admit/handle/release as the server does).

`Reply.mutated` is whether the request changed the emulator's state (a before/after diff). In
process the client also checks that `Response.mutated`, which the server's journal trusts, agrees.
"""

from __future__ import annotations

import base64
import json as jsonlib
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlencode

import pytest
import requests

from reconciler.sandbox.http import CaseInsensitiveDict, Request, SandboxOptions
from reconciler.sandbox.mailchimp import MailchimpApi
from reconciler.sandbox.mailchimp_state import MailchimpState
from reconciler.sandbox.server import Sandbox

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
    headers: Any  # case-insensitive
    raw: bytes
    mutated: bool

    @property
    def body(self) -> Any:
        return jsonlib.loads(self.raw) if self.raw else None


class Client:
    """HTTP client of a started Sandbox, or (sandbox None) an in-process driver of the API."""

    def __init__(self, api: MailchimpApi, sandbox: Sandbox | None = None) -> None:
        self.api = api
        self.state = api.state
        self.sandbox = sandbox
        self.session = requests.Session() if sandbox else None

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
        if self.sandbox is not None and self.session is not None:
            before = self.state.to_json()
            reply = self.session.request(method, self.sandbox.base_url + path, params=params, data=body, headers=merged, timeout=30)
            return Reply(reply.status_code, reply.headers, reply.content, self.state.to_json() != before)
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

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        if self.sandbox is not None:
            self.sandbox.stop()

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


_STARTED: list[Client] = []


def make_client(
    seed_data: dict[str, Any] | None = None,
    options: SandboxOptions | None = None,
    state: MailchimpState | None = None,
    http: bool = True,
) -> Client:
    """A client of a fresh emulator; over HTTP a Sandbox is started (stopped by `stop_sandboxes`)."""
    if http and state is None:
        sandbox = Sandbox({"mailchimp": seed_data or seed()}, options=options or SandboxOptions()).start()
        assert sandbox.mailchimp_api is not None, "the sandbox did not load the Mailchimp emulator"
        client = Client(sandbox.mailchimp_api, sandbox)  # type: ignore[arg-type]
        _STARTED.append(client)
        return client
    return Client(MailchimpApi(state or MailchimpState.from_seed(seed_data or seed()), options or SandboxOptions()))


@pytest.fixture(autouse=True)
def stop_sandboxes() -> Iterator[None]:
    """Import into a test module: stops every Sandbox its tests started."""
    yield
    while _STARTED:
        client = _STARTED.pop()
        client.close()
