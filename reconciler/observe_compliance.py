"""Observe's compliance reads: the other holders of an email (R1), evidence of consent (R8), and
the opt-outs of the audiences a run does not plan (R4, R7 across audiences).

Separate from observe.py because each is a small, targeted read decided from what the main reads
found: which emails could have a duplicate that changes an outcome, which archived members could
be restored, which audiences were left out by `--audience`.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Callable, Collection, Iterable, Mapping

from reconciler.errors import PermanentVendorError
from reconciler.model import OPTED_OUT_STATUSES, Member, is_valid_email, normalise_email
from reconciler.platforms.hubspot import ContactRecord, HubSpotClient
from reconciler.platforms.hubspot_search import SEARCH_PER_SECOND, request_parts
from reconciler.platforms.mailchimp import MailchimpClient
from reconciler.settings import Audience, Config

Report = Callable[[str, int, "int | None"], None]
SEARCH_WORKERS = min(3, SEARCH_PER_SECOND)  # enough to keep 5 requests a second going at real latency
ConsentKnown = Callable[[str, str], bool]  # (mailchimp list id, email) -> the audit log gives evidence


def holders(contacts: Iterable[ContactRecord]) -> dict[str, set[str]]:
    """Normalised email -> ids of the contacts read so far that hold it."""
    out: dict[str, set[str]] = {}
    for record in contacts:
        email = normalise_email(record.properties.get("email"))
        if email:
            out.setdefault(email, set()).add(record.id)
    return out


def worth_searching(emails: Iterable[str], known: Mapping[str, set[str]], critical_ids: Collection[str]
                    ) -> dict[str, set[str]]:
    """The emails whose other holders could change an outcome, with the ids already read for each.

    Skipped: invalid emails (R1 skips them anyway) and emails whose known holders are all on a
    critical list (R2 already decides the strictest outcome; a duplicate cannot add to it).
    """
    out: dict[str, set[str]] = {}
    for email in emails:
        if email in out or not is_valid_email(email):
            continue
        ids = known.get(email, set())
        if ids and all(i in critical_ids for i in ids):
            continue
        out[email] = ids
    return out


def search_other_holders(hubspot: HubSpotClient, pool: Executor, wanted: Mapping[str, set[str]],
                         properties: list[str], report: Report, step: str) -> list[ContactRecord]:
    """Contacts holding one of `wanted`'s emails that were not read yet (HubSpot search, up to
    500 emails a request, at most 5 requests a second)."""
    emails = sorted(wanted)
    parts = request_parts(wanted)
    found: list[ContactRecord] = []
    done = 0
    report(step, 0, len(emails))
    reads = pool.map(lambda part: hubspot.search_other_contacts({e: wanted[e] for e in part}, properties), parts)
    for part, records in zip(parts, reads):
        found += records
        done += len(part)
        report(step, done, len(emails))
    return found


def restore_candidates(config: Config, audiences: Iterable[Audience], members: Mapping[str, Mapping[str, Member]],
                       lists_of: Mapping[str, set[str]], contacts: Iterable[ContactRecord],
                       consent_known: ConsentKnown | None) -> list[str]:
    """Emails whose consent R8 may need: archived members of an audience with `restore_archived`,
    held by a contact in one of that audience's source lists, without evidence in the audit log.

    `members`: audience name -> its members by email; `lists_of`: contact id -> configured lists.
    """
    by_email = holders(contacts)
    wanted: dict[str, None] = {}
    for audience in audiences:
        if not audience.restore_archived:
            continue
        sources = set(audience.source_lists)
        for email, member in (members.get(audience.name) or {}).items():
            if member.status != "archived" or email in wanted:
                continue
            if not any(sources & lists_of.get(cid, set()) for cid in by_email.get(email, ())):
                continue
            if consent_known is not None and consent_known(audience.mailchimp_list_id, email):
                continue
            wanted[email] = None
    return sorted(wanted)


def read_consent(hubspot: HubSpotClient, pool: Executor, emails: list[str], report: Report) -> dict[str, frozenset[str]]:
    """Email -> subscription ids it is explicitly SUBSCRIBED to, one status read per email; emails
    with none are left out (as is every email not read)."""
    step = "hubspot consent of restore candidates"
    consent: dict[str, frozenset[str]] = {}
    report(step, 0, len(emails))
    for done, (email, subscribed) in enumerate(zip(emails, pool.map(hubspot.subscribed_to, emails)), start=1):
        if subscribed:
            consent[email] = subscribed
        report(step, done, len(emails))
    return consent


def read_opt_outs(mailchimp: MailchimpClient, pool: Executor, audience: Audience, report: Report) -> dict[str, Member]:
    """The unsubscribed and cleaned members of an audience the run does not plan (status filter).

    A Mailchimp opt-out keeps the person out of every audience of the config, so `--audience`
    still needs these; an audience that cannot be read stops the run rather than be ignored.
    """
    list_id = audience.mailchimp_list_id
    found: dict[str, Member] = {}
    for status in sorted(OPTED_OUT_STATUSES):
        step = f"mailchimp {audience.name} {status} members (opt-outs only)"
        try:
            members = mailchimp.members(list_id, status, executor=pool, progress=lambda d, t: report(step, d, t))
        except PermanentVendorError as exc:
            raise PermanentVendorError(
                f"mailchimp: audience {audience.name} ({list_id}) could not be read for its opt-outs, which keep "
                f"people out of every audience of the config: {exc.detail or exc}; fix its mailchimp_list_id",
                system="mailchimp", status=exc.status, detail=exc.detail) from exc
        found.update((m.email, m) for m in members if m.status in OPTED_OUT_STATUSES)
    return found
