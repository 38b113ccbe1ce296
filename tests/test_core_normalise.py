"""R13: merge-field values normalised by type, so an unchanged contact never shows a diff."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.normalise import TEXT_LIMIT_BYTES, cut_utf8, normalise


@pytest.mark.parametrize("value, field_type, expected", [
    ("  Ann ", "text", "Ann"),
    ("", "text", None),
    ("   ", "text", None),
    (None, "text", None),
    (42, "text", "42"),
    ("é" * 200, "text", "é" * 127),  # 2 bytes each: 254 bytes, never half a character
    ("a" * 254 + " b", "text", "a" * 254),  # cut, then the trailing space stripped
    ("2", "number", "2"),
    ("2.0", "number", "2"),
    (" 2.50 ", "number", "2.5"),
    (3, "number", "3"),
    (2.5, "number", "2.5"),
    ("-0", "number", "0"),
    ("1e3", "number", "1000"),
    ("x", "number", None),
    ("", "number", None),
    (True, "number", None),
    ("1706659200000", "date", "2024-01-31"),  # HubSpot epoch millis (midnight UTC)
    (1706659200000, "date", "2024-01-31"),
    ("2024-01-31", "date", "2024-01-31"),
    ("2024-01-31T23:30:00Z", "date", "2024-01-31"),
    ("2024-01-31T23:30:00-05:00", "date", "2024-02-01"),  # in UTC
    ("2024/01/31", "date", "2024-01-31"),
    ("01/31/2024", "date", "2024-01-31"),
    ("31-01-2024", "date", "2024-01-31"),
    ("2024-02-30", "date", None),
    ("soon", "date", None),
    (" +44 20 7946 0000 ", "phone", "+44 20 7946 0000"),
    (" https://example.com ", "url", "https://example.com"),
])
def test_r13_normalise_by_type(value, field_type: str, expected) -> None:
    assert normalise(value, field_type) == expected


@pytest.mark.parametrize("text, limit", [("abc", 2), ("日本語", 4), ("😀😀", 5), ("a😀", 4)])
def test_cut_utf8_never_splits_a_character(text: str, limit: int) -> None:
    cut = cut_utf8(text, limit)
    assert len(cut.encode("utf-8")) <= limit
    assert text.startswith(cut)
    assert len(cut_utf8(text, limit + 4).encode("utf-8")) > len(cut.encode("utf-8")) or cut == text


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.none()),
       st.sampled_from(["text", "number", "date", "phone", "url"]))
def test_r13_normalise_is_idempotent_and_text_fits(value, field_type: str) -> None:
    once = normalise(value, field_type)
    assert normalise(once, field_type) == once  # what we write reads back as unchanged
    if once is not None and field_type == "text":
        assert len(once.encode("utf-8")) <= TEXT_LIMIT_BYTES
        assert once == once.strip()
