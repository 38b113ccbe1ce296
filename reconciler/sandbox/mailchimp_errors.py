"""Mailchimp's RFC 7807 problem documents, as the emulator sends them.

Kept apart so state changes (which raise `Problem`) and request handling (which turns it into
a response) use one definition of every title and detail the reference sheet records.
"""

from __future__ import annotations

import uuid
from typing import Any

from reconciler.sandbox.http import Response

ERROR_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
PROBLEM_CONTENT_TYPE = "application/problem+json; charset=utf-8"
DESCRIBED_BY = '<https://{dc}.api.mailchimp.com/schema/3.0/ProblemDetailDocument.json>; rel="describedBy"'
VALIDATION_DETAIL = "The resource submitted could not be validated. For field-specific details, see the 'errors' array."


class Problem(Exception):
    """A vendor error: raised by state changes and handlers, answered as a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def response(self, dc: str, request_id: str | None = None) -> Response:
        instance = request_id or str(uuid.uuid4())
        body: dict[str, Any] = {
            "type": ERROR_TYPE,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        headers = {"X-Request-Id": instance, "Link": DESCRIBED_BY.format(dc=dc), **self.headers}
        return Response(self.status, body, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def not_found() -> Problem:
    return Problem(404, "Resource Not Found", "The requested resource could not be found.")


def invalid(errors: list[dict[str, str]], detail: str = VALIDATION_DETAIL) -> Problem:
    return Problem(400, "Invalid Resource", detail, errors)


def field_error(field: str, message: str) -> Problem:
    return invalid([{"field": field, "message": message}])


def compliance(email: str) -> Problem:
    return Problem(
        400,
        "Member In Compliance State",
        f"{email} is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed.",
    )


def forgotten(email: str) -> Problem:
    return Problem(
        400,
        "Forgotten Email Not Subscribed",
        f"{email} was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list.",
    )


def member_exists(email: str) -> Problem:
    return Problem(400, "Member Exists", f"{email} is already a list member. Use PUT to insert or update list members.")


def fake_email(email: str) -> Problem:
    return Problem(400, "Invalid Resource", f"{email} looks fake or invalid, please enter a real email address.")


def json_parse() -> Problem:
    return Problem(400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error.")


def method_not_allowed(detail: str = "The requested method and resource are not compatible. See the Allow header for this resource's available methods.", allow: list[str] | None = None) -> Problem:
    return Problem(405, "Method Not Allowed", detail, headers={"Allow": ", ".join(allow)} if allow else None)


def key_missing() -> Problem:
    return Problem(401, "API Key Missing", "Your request did not include an API key.")


def key_invalid() -> Problem:
    return Problem(401, "API Key Invalid", "Your API key may be invalid, or you've attempted to access the wrong datacenter.")


def too_many_requests(limit: int, retry_after: bool) -> Problem:
    return Problem(
        429,
        "Too Many Requests",
        f"You have exceeded the limit of {limit} simultaneous connections.",
        headers={"Retry-After": "1"} if retry_after else None,
    )


SERVER_ERRORS = {
    500: ("Internal Server Error", "An unexpected internal error has occurred. Please contact Support for more information."),
    502: ("Bad Gateway", "The server received an invalid response from an upstream server."),
    503: ("Service Unavailable", "This method has been disabled."),
}

# X-Trigger-Error test hook (reference §2): the legacy glossary names the client may ask for.
TRIGGERS = {
    "APIKeyMissing": key_missing,
    "APIKeyInvalid": key_invalid,
    "Forbidden": lambda: Problem(403, "Forbidden", "You don't have permission to access this resource."),
    "ResourceNotFound": not_found,
    "TooManyRequests": lambda: too_many_requests(10, False),
    "InternalServerError": lambda: Problem(500, *SERVER_ERRORS[500]),
}
