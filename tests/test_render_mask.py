"""Email masking (SPEC §5): the shape of a masked email, when stdout masks, and masking in free text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.render.mask import MISSING_EMAIL, clip, mask_email, mask_text, mask_value, should_redact, show_email


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("ann@example.com", "a***@example.com"),
        ("a@example.com", "a***@example.com"),  # 1-character local part: still stars after it
        ("élodie@exämple.de", "é***@exämple.de"),
        ("李雷@example.org", "李***@example.org"),
        ("o'brien@example.com", "o***@example.com"),
        ("@example.com", "***@example.com"),
        ("no-at-sign", "n***"),  # an invalid email reported by R1
        (None, MISSING_EMAIL),
        ("", MISSING_EMAIL),
    ],
)
def test_mask_email_shapes(email: str | None, masked: str) -> None:
    assert mask_email(email) == masked


def test_mask_email_hides_the_local_part_length() -> None:
    assert mask_email("a@example.com") == mask_email("abcdefghij@example.com")


# SPEC §5: masked unless stdout is a terminal and CI is unset; --no-redact shows them.
@pytest.mark.parametrize(
    ("isatty", "env", "no_redact", "redact"),
    [
        (True, {}, False, False),
        (True, {"CI": "true"}, False, True),
        (True, {"CI": ""}, False, True),  # present but empty: still CI, still masked
        (False, {}, False, True),
        (False, {"CI": "1"}, False, True),
        (True, {}, True, False),
        (True, {"CI": "true"}, True, False),
        (False, {}, True, False),
        (False, {"CI": "1"}, True, False),
    ],
)
def test_should_redact_matrix(isatty: bool, env: dict[str, str], no_redact: bool, redact: bool) -> None:
    assert should_redact(isatty, env, no_redact) is redact


def test_show_email_masks_only_when_asked() -> None:
    assert show_email("ann@example.com", redact=False) == "ann@example.com"
    assert show_email("ann@example.com", redact=True) == "a***@example.com"
    assert show_email(None, redact=False) == MISSING_EMAIL


def test_mask_text_masks_every_email_in_a_reason() -> None:
    reason = "R1 duplicate of ann@example.com, bob.smith@example.org; (carl+x@example.net) [dee@example.com]"
    masked = mask_text(reason)
    for raw in ("ann@example.com", "bob.smith@example.org", "carl+x@example.net", "dee@example.com"):
        assert raw not in masked
    assert "a***@example.com" in masked and "b***@example.org" in masked
    assert masked.startswith("R1 duplicate of ")


def test_mask_text_leaves_text_without_emails_alone() -> None:
    assert mask_text("R2 critical list 762") == "R2 critical list 762"


def test_mask_text_is_fast_enough_on_a_huge_reason() -> None:
    reason = "R6 " + "x" * 200_000 + " ann@example.com " + "y" * 200_000
    masked = mask_text(reason)
    assert "ann@example.com" not in masked and "a***@example.com" in masked


def test_clip_never_ends_inside_a_word() -> None:
    text = "R1 duplicate of annabelle@example.com"
    for limit in range(len(text)):
        clipped = clip(text, limit)
        assert clipped.endswith("…")
        body = clipped[:-1]
        assert text.startswith(body)
        # what remains ends at a space or at the end of a whole word, never inside the address
        assert body == "" or body.endswith(" ") or text[len(body)] == " "
        assert "annab" not in mask_text(text, limit)


def test_mask_value_walks_nested_values() -> None:
    value = {"email": "ann@example.com", "notes": ["see bob@example.org"], "n": 3, "ok": True}
    masked = mask_value(value)
    assert masked == {"email": "a***@example.com", "notes": ["see b***@example.org"], "n": 3, "ok": True}


@settings(max_examples=150, deadline=None)
@given(st.emails(), st.text(max_size=20), st.text(max_size=20))
def test_no_email_survives_mask_text(email: str, before: str, after: str) -> None:
    masked = mask_text(f"{before} {email} {after}")
    assert email not in masked
    assert mask_email(email) in masked
