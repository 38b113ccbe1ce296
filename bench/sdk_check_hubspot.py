"""Points HubSpot's official Python SDK (`hubspot-api-client`) at a running sandbox to check wire compatibility.

Not a test and not a project dependency: run it from a throwaway venv that has the SDK and this
repository on its path, e.g.
    python -m venv /tmp/sdkvenv && /tmp/sdkvenv/bin/pip install hubspot-api-client
    PYTHONPATH=. /tmp/sdkvenv/bin/python bench/sdk_check_hubspot.py
It starts an in-process Sandbox from config/sandbox/example-seed.yaml unless --base-url is given,
runs each check, prints one line per check, and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from hubspot import HubSpot  # type: ignore[import-not-found]
from hubspot.crm.contacts import BatchReadInputSimplePublicObjectId, SimplePublicObjectId  # type: ignore[import-not-found]
from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIPTION = "289137112"


def checks(client: Any) -> list[tuple[str, Callable[[], str]]]:
    def memberships() -> str:
        page = client.crm.lists.memberships_api.get_page(list_id="719", limit=2)
        ids = [m.record_id for m in page.results]
        after = page.paging.next.after if page.paging and page.paging.next else None
        rest = client.crm.lists.memberships_api.get_page(list_id="719", limit=2, after=after)
        return f"page 1 {ids}, page 2 {[m.record_id for m in rest.results]}, next after={after!r}"

    def list_read() -> str:
        found = client.crm.lists.lists_api.get_by_id(list_id="720")
        return f"list 720 {found.list.name!r} processingType={found.list.processing_type}"

    def membership_add() -> str:
        answer = client.crm.lists.memberships_api.add(list_id="719", request_body=["104", "999999"])
        return f"added={answer.records_ids_added} missing={answer.record_ids_missing}"

    def batch_read_by_email() -> str:
        body = BatchReadInputSimplePublicObjectId(
            id_property="email", properties=["firstname", f"hs_email_optout_{SUBSCRIPTION}"], properties_with_history=[],
            inputs=[SimplePublicObjectId(id="ann@example.com"), SimplePublicObjectId(id="cora@example.org"),
                    SimplePublicObjectId(id="ghost@example.com")])
        answer = client.crm.contacts.batch_api.read(batch_read_input_simple_public_object_id=body)
        people = {r.properties["firstname"]: r.properties[f"hs_email_optout_{SUBSCRIPTION}"] for r in answer.results}
        errors = [(e.category, e.context) for e in (getattr(answer, "errors", None) or [])]
        return f"{type(answer).__name__}: opt-outs {people}, errors {errors}"

    def status() -> str:
        answer = client.communication_preferences.status_api.get_email_status(email_address="cora@example.org")
        return f"{answer.recipient}: {[(s.id, s.status) for s in answer.subscription_statuses]}"

    def definitions() -> str:
        answer = client.communication_preferences.definition_api.get_page()
        return f"{[(d.id, d.name) for d in answer.subscription_definitions]}"

    def unsubscribe_twice() -> str:
        request = PublicUpdateSubscriptionStatusRequest(email_address="bob@example.com", subscription_id=SUBSCRIPTION,
                                                        legal_basis="LEGITIMATE_INTEREST_OTHER",
                                                        legal_basis_explanation="sdk check")
        first = client.communication_preferences.status_api.unsubscribe(public_update_subscription_status_request=request)
        try:
            client.communication_preferences.status_api.unsubscribe(public_update_subscription_status_request=request)
        except Exception as exc:  # the SDK raises ApiException for the 400
            return f"first {first.status}; repeat raised {type(exc).__name__} {getattr(exc, 'status', '?')}: " \
                   f"{getattr(exc, 'body', '')[:90]}"
        return f"first {first.status}; repeat did NOT raise"

    return [("lists: read a list", list_read), ("lists: page memberships", memberships),
            ("lists: add members", membership_add), ("contacts: batch read by email", batch_read_by_email),
            ("comm prefs: definitions", definitions), ("comm prefs: status by email", status),
            ("comm prefs: unsubscribe, then repeat", unsubscribe_twice)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a running sandbox (default: start one in-process)")
    parser.add_argument("--token", default="sandbox-token")
    args = parser.parse_args(argv)
    sandbox = None
    base_url = args.base_url
    if base_url is None:
        sys.path.insert(0, str(ROOT))
        from reconciler.sandbox import Sandbox
        from reconciler.sandbox.seed import load_seed

        sandbox = Sandbox(load_seed(ROOT / "config/sandbox/example-seed.yaml")).start()
        base_url = sandbox.base_url
    client = HubSpot(access_token=args.token, host=base_url)
    failed = 0
    try:
        for name, check in checks(client):
            try:
                print(f"ok    {name}: {check()}")
            except Exception as exc:  # report and go on: the point is to see every incompatibility at once
                failed += 1
                print(f"FAIL  {name}: {type(exc).__name__}: {str(exc)[:300]}")
                if "--debug" in sys.argv:
                    traceback.print_exc()
        if sandbox is not None:
            print(f"sandbox counters: {sandbox.counters()}")
    finally:
        if sandbox is not None:
            sandbox.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
