"""Mailchimp's compliance rules in the emulator: who may be moved back to `subscribed`, who may be
archived, and the unsubscribe provenance (`unsubscribed_by`) those answers depend on.

Apart from the member writes so the unkind vendor behaviour a product must never count on (an
admin- or API-unsubscribed member can be re-subscribed by the API; pending, cleaned and archived
members cannot be archived) reads in one place, with its `SandboxOptions.variants` switches.
Callers hold `state.lock`.
"""

from __future__ import annotations

from typing import Any, Mapping

from reconciler.sandbox import mailchimp_errors as err
from reconciler.sandbox.mailchimp_state import COMPLIANCE_STATUSES, UNSUBSCRIBE_REASONS, MailchimpState, Member

API_REASON = UNSUBSCRIBE_REASONS["api"]
# Archive refusals: what the vendor answers for members it will not archive (reference, facts
# added after review), and the older recorded answer with an unknown trigger.
NOT_ARCHIVABLE = ("pending", "cleaned")
CANNOT_ARCHIVE = "This list member cannot be removed. Can not archive a contact that is bounced, pending or archived"
CONTACT_SUPPORT = "This list member cannot be removed.  Please contact support."


def was_unsubscribed(member: Member) -> bool:
    """Unsubscribed now, or archived while unsubscribed (the provenance still decides a restore)."""
    return member.status == "unsubscribed" or (member.status == "archived" and member.status_before_archive == "unsubscribed")


def in_compliance_state(member: Member, variants: Mapping[str, Any]) -> bool:
    """Whether Mailchimp refuses to subscribe this member (before an archive: what it was then).

    Cleaned, and unsubscribed by the person themselves, are refused; unsubscribed by an admin or
    the API is not, unless variant `mailchimp_refuse_all_unsubscribed` counts every unsubscribe.
    A provenance missing (an old state file) counts as `self`.
    """
    effective = member.status_before_archive if member.status == "archived" else member.status
    if effective not in COMPLIANCE_STATUSES:
        return False
    if effective == "cleaned" or variants.get("mailchimp_refuse_all_unsubscribed"):
        return True
    return member.unsubscribed_by not in ("admin", "api")


def _refused_targets(variants: Mapping[str, Any]) -> tuple[str, ...]:
    # `pending` from a compliance state is the reported way back (a confirmation email is sent);
    # variant mailchimp_refuse_pending_from_compliance refuses it as well.
    return ("subscribed", "pending") if variants.get("mailchimp_refuse_pending_from_compliance") else ("subscribed",)


def set_status(state: MailchimpState, member: Member, target: str, variants: Mapping[str, Any]) -> bool:
    """Move a member to `target`, refusing what Mailchimp refuses (reference §5); True if it moved.

    A repeated status is no change (no second confirmation email, reference §5 `pending`). A move
    to `unsubscribed` records the API as its author, except an archived unsubscribed member
    restored as unsubscribed, which keeps who unsubscribed it (a self-unsubscribe stays one).
    """
    current = member.status
    if target == current:
        return False
    if target in _refused_targets(variants) and in_compliance_state(member, variants):
        raise err.compliance(member.email)
    now = state.now()
    restored_unsubscribe = target == "unsubscribed" and was_unsubscribed(member)
    member.status = target
    member.status_before_archive = ""
    if target == "pending":
        state.confirmations[member.email.lower()] += 1
    if target == "subscribed":
        member.timestamp_opt = now
    if target == "unsubscribed" and not restored_unsubscribe:
        member.unsubscribed_at = now
        member.unsubscribed_by = "api"
        member.unsubscribe_reason = API_REASON
    elif target != "unsubscribed":
        member.unsubscribed_by = ""
        member.unsubscribe_reason = ""
    return True


def new_unsubscribed(state: MailchimpState, member: Member) -> None:
    """A member created through the API as `unsubscribed` was unsubscribed by the API."""
    member.unsubscribed_at = state.now()
    member.unsubscribed_by = "api"
    member.unsubscribe_reason = API_REASON


def check_archivable(member: Member, variants: Mapping[str, Any]) -> bool:
    """Raise the vendor's 405 for a member it will not archive; False when already archived and
    variant `mailchimp_delete_archived` says "204" (a no-op), True when the archive goes ahead.

    Default: pending, cleaned and archived members answer 405 "Can not archive a contact that is
    bounced, pending or archived". `mailchimp_delete_archived`: "204" (idempotent no-op) or "404"
    for an archived member. `mailchimp_delete_compliance_405`: unsubscribed members get the older
    recorded 405 "Please contact support" too.
    """
    if member.status == "archived":
        answer = str(variants.get("mailchimp_delete_archived", "405"))
        if answer == "404":
            raise err.not_found()
        if answer == "204":
            return False
        raise err.method_not_allowed(CANNOT_ARCHIVE)
    if member.status in NOT_ARCHIVABLE:
        raise err.method_not_allowed(CANNOT_ARCHIVE)
    if member.status == "unsubscribed" and variants.get("mailchimp_delete_compliance_405"):
        raise err.method_not_allowed(CONTACT_SUPPORT)
    return True
