"""Email masking for everything shown to people (SPEC §5): `a***@example.com`.

Separate so every renderer (text, JSON to stdout, Markdown) masks the same way, and so the one
rule deciding *whether* to mask (`should_redact`) lives in one place the CLI can call.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

MISSING_EMAIL = "(no email)"
_STARS = "***"

# Anything shaped like `local@domain` inside free text (reasons, merge field values). Broad on
# purpose: masking a harmless `x@y` costs nothing, letting a real address through does. Words
# end only at characters an unquoted address cannot hold (RFC 5322 specials, whitespace), so
# `o'brien@example.com` is masked whole.
_BREAK = r"\s<>()\[\]\\,;:\""
_NOT_EMAIL = _BREAK + "@"
# The look-behind starts a match only where a word starts, which keeps long reasons linear-time.
EMAIL_PATTERN = re.compile(rf"(?<![^{_NOT_EMAIL}])[^{_NOT_EMAIL}]*@[^{_NOT_EMAIL}]*")
_SEPARATOR = re.compile(rf"[{_BREAK}]")
_LAST_WORD = re.compile(rf"(?<![^{_BREAK}])[^{_BREAK}]+$")  # `@` included: a cut email goes whole


def mask_email(email: str | None) -> str:
    """`ann@example.com` -> `a***@example.com`; the stars never reveal the local part's length.

    A value without `@` (an invalid email reported by R1) keeps only its first character; a
    missing or empty email becomes `(no email)`.
    """
    if email is None or email == "":
        return MISSING_EMAIL
    local, at, domain = email.rpartition("@")
    if not at:
        return email[0] + _STARS
    return (local[0] if local else "") + _STARS + "@" + domain


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, never ending inside a word (half an email is still personal)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if not _SEPARATOR.match(text, limit):
        cut = _LAST_WORD.sub("", cut)
    return cut + "…"


def mask_text(text: str, limit: int | None = None) -> str:
    """Free text with every email-shaped substring masked (reasons may name a duplicate's email).

    `limit` clips the text first: display cuts it anyway, and masking megabytes costs time.
    """
    if limit is not None:
        text = clip(text, limit)
    if "@" not in text:
        return text
    return EMAIL_PATTERN.sub(lambda m: mask_email(m.group(0)), text)


def mask_value(value: Any) -> Any:
    """A plain JSON-able value (mappings, sequences, strings) with emails in every string masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_value(item) for item in value]
    return value


def should_redact(stdout_isatty: bool, env: Mapping[str, str], no_redact: bool) -> bool:
    """Whether emails are masked on stdout (SPEC §5).

    Shown only to a person at a terminal outside CI, or when `--no-redact` asks. `CI` counts as
    set whenever it is present, even empty: when in doubt, mask (CI logs outlive the run).
    """
    if no_redact:
        return False
    return not (stdout_isatty and "CI" not in env)


def show_email(email: str | None, redact: bool) -> str:
    """The email as a renderer shows it: masked when `redact`, `(no email)` when missing."""
    if redact or not email:
        return mask_email(email)
    return email
