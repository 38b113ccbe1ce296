"""Merge-field values normalised by type (SPEC R13), so an unchanged contact never shows a diff.

Separate so that the rules (which compare) and the engine (which sends) share one canonical
form: strings stripped, text cut to 255 bytes on a UTF-8 boundary, numbers as decimals, dates
as YYYY-MM-DD. `None` means "empty": an empty HubSpot value never blanks a Mailchimp value.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

TEXT_LIMIT_BYTES = 255

_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
_SLASH_YMD = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$")
_SLASH_MDY = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_DASH_DMY = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{4})$")
_EPOCH_MILLIS = re.compile(r"^-?\d{6,}$")


def cut_utf8(text: str, limit: int = TEXT_LIMIT_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never in the middle of a character."""
    if len(text) * 4 <= limit:  # no character takes more than 4 bytes: nothing to cut
        return text
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    # The input is valid UTF-8, so "ignore" only drops the partial character at the cut.
    return data[:limit].decode("utf-8", errors="ignore")


def normalise_text(value: Any) -> str | None:
    text = value.strip() if isinstance(value, str) else _as_string(value)
    if not text:
        return None
    # Stripped again after the cut: a space left at the cut would read back as a difference.
    return cut_utf8(text).rstrip() or None


def normalise_string(value: Any) -> str | None:
    text = value.strip() if isinstance(value, str) else _as_string(value)
    return text or None


def normalise_number(value: Any) -> str | None:
    """A canonical decimal string (`"2"`, `"2.5"`, `"-0.125"`); None when empty or not a number."""
    if isinstance(value, bool):
        return None
    text = _as_string(value) if not isinstance(value, str) else value.strip()
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    if number == 0:
        return "0"
    result = format(number.normalize(), "f")
    return result


def normalise_date(value: Any) -> str | None:
    """YYYY-MM-DD from HubSpot's epoch milliseconds, ISO strings, or Mailchimp's date formats."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return _from_millis(int(value))
    if isinstance(value, datetime):
        return _date_of(value)
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    if not text:
        return None
    if _EPOCH_MILLIS.match(text):
        return _from_millis(int(text))
    if "T" in text or " " in text:
        try:
            return _date_of(datetime.fromisoformat(text.replace(" ", "T", 1)))
        except ValueError:
            pass
    for pattern, order in ((_ISO_DATE, "ymd"), (_SLASH_YMD, "ymd"), (_SLASH_MDY, "mdy"), (_DASH_DMY, "dmy")):
        found = pattern.match(text)
        if found:
            parts = dict(zip(order, (int(g) for g in found.groups())))
            try:
                return date(parts["y"], parts["m"], parts["d"]).isoformat()
            except ValueError:
                return None
    return None


def normalise(value: Any, field_type: str) -> str | None:
    """The canonical form of a merge-field value of Mailchimp type `field_type`, or None if empty."""
    if value is None:
        return None
    if field_type == "text":
        return normalise_text(value)
    if field_type == "number":
        return normalise_number(value)
    if field_type == "date":
        return normalise_date(value)
    return normalise_string(value)


def _as_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _from_millis(millis: int) -> str | None:
    try:
        return datetime.fromtimestamp(millis / 1000, tz=timezone.utc).date().isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def _date_of(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.date().isoformat()
