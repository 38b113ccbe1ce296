"""HubSpot CRM contact search by email: the vendor's search limits and how a query is cut to fit them.

Apart from the client because search has limits of its own (5 requests a second, 200 a page,
10,000 results a query, filter-group and value counts) and its own filter language.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

from reconciler.errors import PermanentVendorError

SEARCH_PER_SECOND = 5  # per account, apart from (and exempt from) the ten-secondly window
SEARCH_PAGE = 200  # `limit` maximum
SEARCH_RESULT_CAP = 10_000  # results one query can page through; beyond, HubSpot answers 400
SEARCH_GROUPS = 5  # filterGroups a request (each <= 6 filters, <= 18 in all: we send 2 a group)
SEARCH_VALUES = 100  # values in one IN / NOT_IN filter: the cap is [UNCONFIRMED]; third-party code uses 100


def search_groups(emails: Mapping[str, Collection[str]]) -> list[dict[str, Any]]:
    """Filter groups of `email IN [...]` AND `hs_object_id NOT_IN [known ids]` within the value cap.

    Emails nobody is known to hold go in groups without the NOT_IN (an empty one is not valid).
    Beyond 100 known ids for one email, the rest may come back: harmless, callers keep new ids.
    """
    groups: list[dict[str, Any]] = []
    for with_ids in (True, False):
        batch: list[str] = []
        ids: list[str] = []
        for email in sorted(e for e, known in emails.items() if bool(known) == with_ids):
            own = sorted(set(emails[email]))[:SEARCH_VALUES]
            if batch and (len(batch) == SEARCH_VALUES or len(ids) + len(own) > SEARCH_VALUES):
                groups.append(filter_group(batch, ids))
                batch, ids = [], []
            batch.append(email)
            ids += own
        if batch:
            groups.append(filter_group(batch, ids))
    return groups


def request_parts(emails: Mapping[str, Collection[str]]) -> list[list[str]]:
    """The emails each request of a search for `emails` asks about, in order, so that callers can
    spread the requests over workers: each part, searched alone, is exactly one request's groups."""
    groups = search_groups(emails)
    return [[email for g in groups[start:start + SEARCH_GROUPS] for email in g["filters"][0]["values"]]
            for start in range(0, len(groups), SEARCH_GROUPS)]


def filter_group(emails: list[str], known_ids: list[str]) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [{"propertyName": "email", "operator": "IN", "values": list(emails)}]
    if known_ids:
        filters.append({"propertyName": "hs_object_id", "operator": "NOT_IN", "values": list(known_ids)})
    return {"filters": filters}


def halves(groups: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """A search split in two: by group, else the one group's emails (its known ids kept)."""
    if len(groups) > 1:
        middle = len(groups) // 2
        return [groups[:middle], groups[middle:]]
    filters = groups[0]["filters"]
    emails = filters[0]["values"]
    if len(emails) < 2:
        raise PermanentVendorError(f"hubspot: more than {SEARCH_RESULT_CAP} contacts have the email {emails[0]}; "
                                   "merge the duplicates in HubSpot", system="hubspot")
    middle = len(emails) // 2
    return [[{"filters": [{**filters[0], "values": part}, *filters[1:]]}] for part in (emails[:middle], emails[middle:])]
