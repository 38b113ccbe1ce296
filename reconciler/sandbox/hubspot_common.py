"""HubSpot wire details shared by the emulator's resource modules: error bodies, timestamps, JSON.

Kept apart so contacts, lists and communication preferences answer errors in one shape, and so the
in-memory state can raise the same `ApiError` the request handlers turn into responses.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from .http import Request, Response

# Observed on api.hubapi.com; the exact casing is [UNCONFIRMED] in the reference.
CONTENT_TYPE = "application/json;charset=utf-8"
BATCH_LIMIT = 100  # contacts batch endpoints: "Batch operations are limited to 100 records at a time."


class ApiError(Exception):
    """A HubSpot error answer: raised by state and handlers, turned into a Response by `hubspot.py`."""

    def __init__(self, status: int, message: str, category: str | None = "VALIDATION_ERROR", **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"status": "error", "message": message}
        if category is not None:
            self.body["category"] = category
        self.body.update(extra)


def now_ms(request: Request | None = None) -> int:
    """The request's time in epoch milliseconds (replays carry the original time)."""
    at = request.time if request is not None and request.time is not None else time.time()
    return int(at * 1000)


@lru_cache(maxsize=1 << 16)  # every contact read renders ~4 stamps; most contacts share a few (~25% of a 100k read's CPU)
def iso(ms: int) -> str:
    """HubSpot's timestamp format: ISO-8601 UTC with milliseconds, e.g. 2024-01-17T19:55:04.281Z."""
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_time_ms(value: str) -> int | None:
    """Epoch milliseconds from a search filter value (epoch ms, or an ISO date/time), else None."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return int(stamp.timestamp() * 1000)


def new_id() -> str:
    return str(uuid.uuid4())


def ok(body: Any, status: int = 200, mutated: bool = False) -> Response:
    return Response(status=status, body=body, content_type=CONTENT_TYPE, mutated=mutated)


def json_body(request: Request) -> Any:
    """The parsed body, or the 400 HubSpot answers for malformed JSON."""
    try:
        return request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Invalid input JSON on line 1, column 1: {exc}") from None


def json_object(request: Request) -> dict[str, Any]:
    body = json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid input JSON: expected a JSON object")
    return body


def batch_inputs(body: dict[str, Any], limit: int = BATCH_LIMIT) -> list[Any]:
    """`inputs` of a batch body, refusing more than `limit`.

    The body HubSpot sends for an oversized batch is [UNCONFIRMED]; this emulator answers 400
    VALIDATION_ERROR with an invented message naming the size and the limit.
    """
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise ApiError(400, "Invalid input JSON: 'inputs' is required and must be an array")
    if len(inputs) > limit:
        raise ApiError(
            400,
            f"Batch input size {len(inputs)} exceeds the maximum of {limit} inputs",
            errors=[{"message": f"inputs: size must be between 0 and {limit}", "in": "inputs"}],
        )
    return inputs


def not_found_group(object_type: str, ids: list[str]) -> dict[str, Any]:
    """The single grouped error a 207 batch answer carries for every missing id."""
    return {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": f"Could not get some {object_type} objects, they may be deleted or not exist. Check that ids are valid.",
        "context": {"ids": ids},
    }


def batch_answer(results: list[Any], errors: list[dict[str, Any]], started_ms: int, ok_status: int = 200,
                 mutated: bool = False) -> Response:
    """A BatchResponse (200/201) or BatchResponseWithErrors (207 Multi-Status)."""
    body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": iso(started_ms),
                            "completedAt": iso(now_ms())}
    status = ok_status
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
        status = 207
    return ok(body, status=status, mutated=mutated)
