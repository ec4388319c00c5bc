"""Leak reports, pure: reading a report, the offline check of each token, replay digests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.keys import format as keyformat
from gateway.keys.leaks import Finding, ReportError, could_be_ours, parse_report, report_digest


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b"not json",
        b'[{"type": "x"}]',
        b'[{"token": 5}]',
        b"\xff",
        b"[1]",
        b"[" + b"[" * 5000 + b"]" * 5001,
    ],
)
def test_unreadable_reports_are_refused_with_a_sentence(body: bytes) -> None:
    """Anything but a list of objects with a string token is a ReportError."""
    with pytest.raises(ReportError):
        parse_report(body)


def test_a_report_keeps_what_it_needs_and_never_shows_a_token() -> None:
    """Missing or non-string type/url/source become empty; repr holds no token."""
    [finding] = parse_report(b'[{"token": "apk_x", "url": 3, "source": "commit"}]')
    assert finding == Finding("apk_x", "", "", "commit")
    assert "apk_x" not in repr(finding)


@given(st.text(max_size=80))
def test_only_well_formed_keys_of_the_prefix_could_be_ours(text: str) -> None:
    """Arbitrary text is never taken for a key; generated keys always are, and only under
    their own (or an accepted) prefix."""
    assert not could_be_ours(text, "apk") or keyformat.parse(text, "apk")
    key = keyformat.generate("apk").text
    assert could_be_ours(key, "apk")
    assert not could_be_ours(key, "xyz")
    assert could_be_ours(key, "xyz", ("apk",))


def test_replay_digests_bind_body_and_signature() -> None:
    """The same body under another signature (or the reverse) is another report."""
    assert report_digest(b"[]", "c2ln") == report_digest(b"[]", "c2ln")
    assert report_digest(b"[]", "c2ln") != report_digest(b"[ ]", "c2ln")
    assert report_digest(b"[]", "c2ln") != report_digest(b"[]", "c2lo")
