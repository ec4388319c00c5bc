"""Statuses are chosen in gateway/errors.py: policy denials, upstream failures and the HTTP/1.1
core's protocol errors each map to one error of the tree, and render as problem+json."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import (
    GatewayError,
    denial_error,
    problem_parts,
    protocol_error,
    upstream_error,
)
from gateway.policy.evaluate import Denied
from gateway.policy.model import Perm
from gateway.policy.pathrule import parse_path_rule
from gateway.proxy.h1.errors import (
    BadChunk,
    HeadTooLarge,
    MalformedMessage,
    ProtocolError,
    TooManyFields,
    UnsupportedVersion,
)
from gateway.proxy.upstream_http import (
    ClientRequestError,
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

DENIALS = [
    ("no-route", 404),
    ("method-not-allowed", 404),
    ("unauthenticated", 401),
    ("path-not-allowed", 403),
    ("missing-permission", 403),
    ("no-requirement", 500),
]
UPSTREAM = [
    (UpstreamTimeout, 504, "gateway-timeout"),
    (UpstreamUnreachable, 502, "bad-gateway"),
    (UpstreamClosed, 502, "bad-gateway"),
    (UpstreamProtocolError, 502, "bad-gateway"),
    (ClientRequestError, 400, "bad-client-request"),
]
PROTOCOL = [
    (MalformedMessage, 400, "bad-request"),
    (BadChunk, 400, "bad-request"),
    (HeadTooLarge, 431, "head-too-large"),
    (TooManyFields, 431, "too-many-headers"),
    (UnsupportedVersion, 505, "http-version-not-supported"),
]


@pytest.mark.parametrize(("reason", "status"), DENIALS)
def test_each_denial_reason_has_its_status(reason: str, status: int) -> None:
    """A denial's reason alone chooses its status; the reason is the problem's code."""
    error = denial_error(Denied(reason, "why"))
    assert (error.status, error.code, error.message) == (status, reason, "why")
    assert ("WWW-Authenticate" in error.headers) == (status == 401)


def test_a_denial_names_the_missing_permission_and_the_path_rule() -> None:
    """missingPermission and allowedPath reach the problem body; the rule only for its reason."""
    rule = parse_path_rule("/api/reports")
    missing = denial_error(Denied("missing-permission", "x", Perm("demo.reports.read")), rule)
    assert missing.extra == {"missingPermission": "demo.reports.read"}
    path = denial_error(Denied("path-not-allowed", "x"), rule)
    assert path.extra == {"allowedPath": "/api/reports"}


@pytest.mark.parametrize(("kind", "status", "code"), UPSTREAM)
def test_each_upstream_failure_has_its_status(
    kind: type[UpstreamError], status: int, code: str
) -> None:
    """Timeouts are 504, a broken client side 400, every other upstream failure 502."""
    error = upstream_error(kind("the upstream failed"))
    assert (error.status, error.code, error.message) == (status, code, "the upstream failed")


@pytest.mark.parametrize(("kind", "status", "code"), PROTOCOL)
def test_each_protocol_error_has_its_status(
    kind: type[ProtocolError], status: int, code: str
) -> None:
    """The HTTP/1.1 core's errors: 400 malformed, 431 too large, 505 wrong version."""
    error = protocol_error(kind("the head is broken"))
    assert (error.status, error.code, error.message) == (status, code, "the head is broken")


@given(message=st.text(max_size=80), index=st.integers(0, len(PROTOCOL) - 1))
def test_problem_parts_render_any_protocol_error(message: str, index: int) -> None:
    """problem+json carries the chosen status and code, whatever the message."""
    kind, status, code = PROTOCOL[index]
    answer, headers, body = problem_parts(protocol_error(kind(message)), "/x")
    problem = json.loads(body)
    assert answer == status == problem["status"]
    assert (problem["code"], problem["detail"], problem["instance"]) == (code, message, "/x")
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Cache-Control"] == "no-store"


def test_an_unknown_failure_stays_a_500() -> None:
    """A bare GatewayError is an internal error: never mistaken for a client's fault."""
    assert GatewayError("boom").status == 500
