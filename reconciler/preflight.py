"""Preflight: SPEC §3's live checks of a config against both platforms, before any plan.

Separate from observe (which reads what a plan needs) because these reads are of definitions
(lists, subscription types, properties, merge fields) and answer with problems and warnings.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from reconciler.errors import PermanentVendorError
from reconciler.model import WRITABLE_LIST_TYPES, MergeField
from reconciler.observe import OPTOUT_PREFIX, _selected, configured_lists, mapped_properties, subscription_ids
from reconciler.platforms.hubspot import HubSpotClient
from reconciler.platforms.mailchimp import AudienceInfo, MailchimpClient
from reconciler.settings import Config

SUPPORTED_MERGE_TYPES = ("text", "number", "phone", "url", "date")
T = TypeVar("T")
_MISSING = re.compile(r"Missing scope\(s\): (.+)\.\s*$")


def live_checks(config: Config, hubspot: HubSpotClient, mailchimp: MailchimpClient,
                audiences: list[str] | None = None) -> tuple[list[str], list[str]]:
    """SPEC §3's live checks: (problems, warnings), each one line naming the place and what to do.

    Reads: the lists (one call per 100), the subscription definitions, the contact properties, and
    each audience's settings and merge fields, all at once.
    """
    selected = _selected(config, audiences)
    roles = configured_lists(config, audiences)
    problems: list[str] = []
    warnings: list[str] = []
    with ThreadPoolExecutor(4 + 2 * len(selected), thread_name_prefix="preflight") as pool:
        lists_f = pool.submit(hubspot.get_lists, list(roles))
        defs_f = pool.submit(hubspot.subscription_definitions)
        props_f = pool.submit(hubspot.contact_properties)
        info_f = {a.name: pool.submit(mailchimp.get_list, a.mailchimp_list_id) for a in selected}
        fields_f = {a.name: pool.submit(mailchimp.merge_fields, a.mailchimp_list_id) for a in selected}
        lists = _granted(lists_f, problems)
        definitions = _granted(defs_f, problems)
        props = _granted(props_f, problems)
        audience_reads: dict[str, tuple[AudienceInfo, list[MergeField]] | str] = {}
        for a in selected:
            try:
                audience_reads[a.name] = (info_f[a.name].result(), fields_f[a.name].result())
            except PermanentVendorError as exc:
                if exc.status != 404:
                    raise
                audience_reads[a.name] = str(exc.detail)

    for list_id, where in roles.items() if lists is not None else ():
        info = lists.get(list_id)
        if info is None:
            problems.append(f"hubspot list {list_id} ({'; '.join(where)}) does not exist: check the id "
                            "(Lists v3 ILS id, not the legacy v1 id)")
            continue
        if info.processing_type in WRITABLE_LIST_TYPES:
            continue
        kind = list_kind(info.processing_type)
        if any(w.startswith("handover to_list") for w in where):
            problems.append(f"hubspot list {list_id} {info.name!r} is {kind} and cannot be a handover to_list "
                            "(R14: only MANUAL and SNAPSHOT lists are written): use a MANUAL list")
        else:
            warnings.append(f"hubspot list {list_id} {info.name!r} ({'; '.join(where)}) is {kind}: it is read "
                            "but never written (R14)")

    for sid in subscription_ids(config, audiences) if definitions is not None and props is not None else ():
        name = config.subscription_name(sid)
        if sid not in definitions:
            problems.append(f"subscriptions.{name}: HubSpot has no subscription type {sid} "
                            "(its subscription types: HubSpot Settings, Marketing, Email, Subscriptions)")
        elif OPTOUT_PREFIX + sid not in props:
            problems.append(f"subscriptions.{name}: HubSpot has no contact property {OPTOUT_PREFIX}{sid}, so "
                            "opt-outs from it cannot be read")
    for prop, where in mapped_properties(config, audiences).items() if props is not None else ():
        if prop not in props:
            problems.append(f"{where[0]}: HubSpot has no contact property {prop!r}: create it or fix the name")

    for audience in selected:
        read = audience_reads[audience.name]
        place = f"audiences.{audience.name}"
        if isinstance(read, str):
            problems.append(f"{place}.mailchimp_list_id: Mailchimp has no audience "
                            f"{audience.mailchimp_list_id} ({read})")
            continue
        info, fields = read
        by_tag = {f.tag.upper(): f for f in fields}
        for tag in audience.merge_fields:
            field_ = by_tag.get(tag.upper())
            if field_ is None:
                problems.append(f"{place}.merge_fields.{tag}: the audience {info.name!r} has no merge field {tag}")
            elif field_.type not in SUPPORTED_MERGE_TYPES:
                problems.append(f"{place}.merge_fields.{tag}: merge field type {field_.type!r} is not supported "
                                f"(supported: {', '.join(SUPPORTED_MERGE_TYPES)})")
        mapped = {t.upper() for t in audience.merge_fields}
        for f in fields:
            if f.required and f.tag.upper() not in mapped and f.tag.upper() != "EMAIL":
                problems.append(f"{place}.merge_fields: the audience requires merge field {f.tag}: map it to a "
                                "HubSpot property")
        if audience.new_member_status == "subscribed" and info.double_optin:
            warnings.append(f"{place}.new_member_status: subscribed skips the double opt-in that audience "
                            f"{info.name!r} has on; use pending to send confirmations")
    return problems, warnings


def _granted(future: Future[T], problems: list[str]) -> T | None:
    """A HubSpot read's result, or None with a problem naming the missing scope when HubSpot
    answered 403 (a token without the scope): every such read is reported, not only the first."""
    try:
        return future.result()
    except PermanentVendorError as exc:
        if exc.status != 403:
            raise
        scopes = _MISSING.search(exc.detail or "")
        request = str(exc).split(" answered ", 1)[0].removeprefix("hubspot: ")
        if scopes:
            problems.append(f"hubspot.token: the token lacks the scope(s) {scopes.group(1)} (HubSpot answered 403 "
                            f"MISSING_SCOPES to {request}): add them to the private app or service key (README: "
                            "Access to HubSpot and Mailchimp) and run --plan again")
        else:
            problems.append(f"hubspot.token: HubSpot answered 403 to {request}: {exc.detail}")
        return None


def list_kind(processing_type: str) -> str:
    """How a list that R14 never writes is named in messages: DYNAMIC, or why its type is unknown."""
    if processing_type == "DYNAMIC":
        return "DYNAMIC"
    if not processing_type:
        return "of unknown type (HubSpot sent no processingType)"
    return f"of unknown type (processingType {processing_type!r})"
