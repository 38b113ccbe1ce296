"""Shared pytest fixtures: a small sandbox seed and a started Sandbox serving it over real HTTP."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from reconciler.sandbox import Sandbox

HUBSPOT_TOKEN = "sandbox-token"
MAILCHIMP_KEY = "sandboxkey-us1"
MARKETING = "289137112"
EVENTS = "289137113"


def small_seed() -> dict[str, Any]:
    """A fresh small seed (both vendors): five contacts, MANUAL and DYNAMIC lists, one audience."""
    return {
        "hubspot": {
            "token": HUBSPOT_TOKEN,
            "subscriptions": [{"id": MARKETING, "name": "Marketing Information"},
                              {"id": EVENTS, "name": "Event Invitations"}],
            "properties": ["region"],
            "lists": [
                {"id": "719", "name": "Recruitment", "processing_type": "MANUAL", "members": ["101", "102", "103"]},
                {"id": "720", "name": "Active volunteers", "processing_type": "DYNAMIC", "members": ["101", "104"]},
                {"id": "721", "name": "Snapshot 2024", "processing_type": "SNAPSHOT", "members": []},
            ],
            "contacts": [
                {"id": "101", "email": "ann@example.com", "properties": {"firstname": "Ann", "lastname": "Lee",
                                                                         "branches": "2"},
                 "subscribed": [MARKETING]},
                {"id": "102", "email": "bob@example.com", "properties": {"firstname": "Bob", "region": "south"},
                 "subscribed": [MARKETING, EVENTS]},
                {"id": "103", "email": "cora@example.org", "properties": {"firstname": "Cora"},
                 "unsubscribed": [MARKETING]},
                {"id": "104", "email": "dev@example.org", "properties": {}},
                {"id": "105", "email": "eve@example.com", "properties": {"firstname": "Eve"}, "opted_out_of_all": True},
            ],
        },
        "mailchimp": {
            "api_key": MAILCHIMP_KEY,
            "audiences": [{
                "id": "abc123def4", "name": "Main", "double_optin": False,
                "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"}],
                "members": [
                    {"email": "ann@example.com", "status": "subscribed", "merge_fields": {"FNAME": "Ann"},
                     "tags": ["Recruitment"]},
                    {"email": "bob@example.com", "status": "unsubscribed", "merge_fields": {"FNAME": "Bob"}},
                ],
            }],
        },
    }


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A started Sandbox seeded from `small_seed()`, stopped after the test."""
    with Sandbox(small_seed()) as running:
        yield running
