"""The data plane's pure decision: request line, headers and memory in; Allowed, Refused or
NeedsLookup out, and after a lookup the same code resumes. No I/O, no fixtures."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.credentials import KeyCredential, PasswordCredential
from gateway.keys import format as keyformat
from gateway.keys.hashing import KeyHasher
from gateway.keys.state import verified_key
from gateway.keys.verify import KeyState, VerifiedKey
from gateway.policy.evaluate import Principal, owner_grants
from gateway.policy.loader import load_policy
from gateway.proxy.decision import Allowed, NeedsLookup, Refused, decide, resume

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"
POLICY = load_policy([EXAMPLE])
REPORTS = "/api/reports/daily?format=csv"


class Memory:
    """The in-process side of key verification, as `KeyVerifier` has it: a real keyed hash
    and the records already verified, counting how often a key is hashed."""

    def __init__(self) -> None:
        self.hasher = KeyHasher(secrets.token_bytes(32))
        self.records: dict[bytes, VerifiedKey] = {}
        self.hashed = 0

    def digest(self, text: str) -> bytes:
        self.hashed += 1
        return self.hasher.digest(text)

    def known(self, digest: bytes) -> VerifiedKey | None:
        return self.records.get(digest)

    def remember(self, text: str, state: KeyState) -> VerifiedKey:
        verified = verified_key(state, POLICY.catalog)
        self.records[self.hasher.digest(text)] = verified
        return verified


def state(
    key: str,
    permissions: tuple[str, ...],
    path_rule: str | None = None,
    networks: tuple[str, ...] | None = None,
    owner_networks: tuple[str, ...] | None = None,
) -> KeyState:
    return KeyState(
        key_id=key[:20],
        user_id="u1",
        email="u1@example.com",
        label="test",
        status="active",
        expires_at=None,
        owner_disabled=False,
        is_admin=False,
        permissions=permissions,
        grants=permissions,
        path_rule=path_rule,
        networks=networks,
        owner_networks=owner_networks,
    )


def headers(**given: str) -> dict[str, tuple[str, ...]]:
    return {name.replace("_", "-").lower(): (value,) for name, value in given.items()}


def values_of(table: dict[str, tuple[str, ...]]):  # type: ignore[no-untyped-def]
    return lambda name: table.get(name.lower(), ())


PEER = "192.0.2.10"


def peer() -> str:
    return PEER


def run(memory: Memory, target: str, method: str = "GET", **given: str):  # type: ignore[no-untyped-def]
    return decide(POLICY, memory, method, target, values_of(headers(**given)), peer)


def test_a_bad_target_is_refused_before_anything_else() -> None:
    """A target the canonicaliser rejects is a 400 with no instance, and no key is hashed."""
    memory = Memory()
    out = run(memory, "/api/reports/a%2Fb", x_api_key=keyformat.generate().text)
    assert isinstance(out, Refused)
    assert (out.error.status, out.instance, out.outcome) == (400, None, "bad-target")
    assert out.error.code.startswith("bad-target-")
    assert memory.hashed == 0


def test_an_unrouted_request_is_404_without_hashing_the_key() -> None:
    """No route is a 404 named no-route, decided before the credential is looked at."""
    memory = Memory()
    out = run(memory, "/nowhere", x_api_key=keyformat.generate().text)
    assert isinstance(out, Refused)
    assert (out.error.status, out.error.code, out.instance) == (404, "no-route", "/nowhere")
    assert memory.hashed == 0


def test_a_public_route_is_allowed_with_no_principal() -> None:
    """An `auth: none` route is Allowed without a credential, even with two of them."""
    memory = Memory()
    out = run(memory, "/public/a/../b", x_api_key="x", authorization="Bearer y")
    assert isinstance(out, Allowed)
    assert out.principal is None
    assert out.target.path == "/public/b"
    assert out.upstream is POLICY.upstreams["demo"]
    assert memory.hashed == 0


def test_a_missing_credential_is_a_401_with_www_authenticate() -> None:
    """No credential on a protected route is refused at once: 401, WWW-Authenticate."""
    out = run(Memory(), REPORTS)
    assert isinstance(out, Refused)
    assert (out.error.status, out.error.code, out.instance) == (
        401,
        "credential-missing",
        "/api/reports/daily",
    )
    assert "WWW-Authenticate" in out.error.headers


def test_two_credentials_are_a_400() -> None:
    """A key in two carriers is refused as duplicate-credential before any hashing."""
    memory = Memory()
    key = keyformat.generate().text
    out = run(memory, REPORTS, x_api_key=key, authorization=f"Bearer {key}")
    assert isinstance(out, Refused)
    assert (out.error.status, out.error.code) == (400, "duplicate-credential")
    assert memory.hashed == 0


def test_a_password_where_none_is_accepted_is_refused_without_a_lookup() -> None:
    """Basic email:password on a key-only route is a 401 decided in memory: no oracle."""
    basic = base64.b64encode(b"u1@example.com:secret").decode()
    out = run(Memory(), REPORTS, authorization=f"Basic {basic}")
    assert isinstance(out, Refused)
    assert (out.error.status, out.error.code) == (401, "password-not-allowed")


def test_a_password_route_needs_a_lookup_then_resumes() -> None:
    """A password on a `passwords: true` route needs its check; resuming with the user allows."""
    basic = base64.b64encode(b"u1@example.com:secret").decode()
    out = run(Memory(), "/legacy/x", authorization=f"Basic {basic}")
    assert isinstance(out, NeedsLookup)
    assert isinstance(out.credential, PasswordCredential)
    assert out.digest is None
    user = Principal.of(
        user_id="u1",
        email="u1@example.com",
        grants=owner_grants(POLICY.catalog, ["demo.legacy.access"], is_admin=False),
        via="password",
    )
    allowed = resume(out, user, peer)
    assert isinstance(allowed, Allowed)
    assert (allowed.target.path, allowed.principal) == ("/legacy/x", user)


def test_a_key_not_in_memory_needs_a_lookup_carrying_its_hash() -> None:
    """A miss hashes the key once and hands on the target, route, credential and hash."""
    memory = Memory()
    key = keyformat.generate().text
    out = run(memory, REPORTS, x_api_key=key)
    assert isinstance(out, NeedsLookup)
    assert memory.hashed == 1
    assert out.digest == memory.hasher.digest(key)
    assert out.credential == KeyCredential(key, "x-api-key")
    assert (out.method, out.target.path, out.target.query) == (
        "GET",
        "/api/reports/daily",
        "format=csv",
    )
    assert out.match.route.upstream == "demo"
    assert key not in repr(out)
    assert out.digest.hex() not in repr(out)


def test_resuming_after_the_lookup_allows_or_refuses_like_a_hit() -> None:
    """After the lookup the same code decides: allowed with the permission, 403 without."""
    memory = Memory()
    key = keyformat.generate().text
    needs = run(memory, REPORTS, x_api_key=key)
    assert isinstance(needs, NeedsLookup)
    found = memory.remember(key, state(key, ("demo.reports.read",)))
    allowed = resume(needs, found, peer)
    assert allowed == run(memory, REPORTS, x_api_key=key)  # the hit decides the same
    assert isinstance(allowed, Allowed)
    assert allowed.principal is found
    narrow = memory.remember(key, state(key, ("demo.legacy.access",)))
    refused = resume(needs, narrow, peer)
    assert isinstance(refused, Refused)
    assert (refused.error.status, refused.outcome, refused.key_id) == (
        403,
        "missing-permission",
        key[:20],
    )
    assert refused.error.extra == {"missingPermission": "demo.reports.read"}


def test_a_key_in_memory_is_decided_at_once_and_hashed_once() -> None:
    """A hit is Allowed with the cached principal; the key is hashed exactly once."""
    memory = Memory()
    key = keyformat.generate().text
    found = memory.remember(key, state(key, ("demo.reports.read",)))
    out = run(memory, REPORTS, authorization=f"token {key}")
    assert isinstance(out, Allowed)
    assert out.principal is found
    assert memory.hashed == 1


def test_a_path_rule_denial_names_the_rule() -> None:
    """A key limited to another path is a 403 path-not-allowed naming its rule."""
    memory = Memory()
    key = keyformat.generate().text
    memory.remember(key, state(key, ("demo.reports.read",), path_rule="/api/reports/weekly"))
    out = run(memory, REPORTS, x_api_key=key)
    assert isinstance(out, Refused)
    assert (out.error.status, out.error.code) == (403, "path-not-allowed")
    assert out.error.extra == {"allowedPath": "/api/reports/weekly"}


PATHS = st.sampled_from(
    ["/api/reports/daily", "/api/reports/x/y", "/api/v1/stores/S1/invoices", "/legacy/a", "/x"]
)
PERMISSIONS = st.lists(
    st.sampled_from(
        ["demo.reports.read", "demo.store.canviewinvoices:S1", "demo.legacy.access", "nope"]
    ),
    max_size=3,
).map(tuple)


@given(path=PATHS, method=st.sampled_from(["GET", "POST"]), permissions=PERMISSIONS)
def test_resuming_a_miss_equals_deciding_the_hit(
    path: str, method: str, permissions: tuple[str, ...]
) -> None:
    """For any request and key record, miss + lookup + resume decides as the cached hit does."""
    memory = Memory()
    key = keyformat.generate().text
    first = run(memory, path, method, x_api_key=key)
    found = memory.remember(key, state(key, permissions))
    hit = run(memory, path, method, x_api_key=key)
    if isinstance(first, NeedsLookup):
        first = resume(first, found, peer)
    assert summary(first) == summary(hit)


def summary(out: Allowed | Refused | NeedsLookup) -> object:
    """What a client would see of a decision (errors compare by identity, so by their fields)."""
    if isinstance(out, Refused):
        return (out.error.status, out.error.code, out.error.extra, out.instance, out.outcome)
    return out


@given(
    target=st.text(max_size=40),
    key=st.text(max_size=300),
    carrier=st.sampled_from(["x_api_key", "authorization"]),
)
def test_any_input_gets_one_of_the_three_answers(target: str, key: str, carrier: str) -> None:
    """Arbitrary targets and credentials never raise, and a key is hashed at most once."""
    memory = Memory()
    out = run(memory, target, **{carrier: key})
    assert isinstance(out, Allowed | Refused | NeedsLookup)
    assert memory.hashed <= 1
    if isinstance(out, Refused):
        assert 400 <= out.error.status < 500


# -- IP allow-lists --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("networks", "owner_networks", "allowed"),
    [
        (("192.0.2.0/24",), None, True),
        (("198.51.100.0/24",), None, False),
        (None, ("192.0.2.0/28",), True),
        (None, ("2001:db8::/32",), False),
        (("192.0.2.0/24",), ("192.0.2.8/29",), True),
        (("192.0.2.0/24",), ("192.0.2.16/29",), False),
        (("2001:db8::/32", "192.0.2.10/32"), None, True),
    ],
)
def test_the_allow_lists_of_key_and_owner_both_bound_the_address(
    networks: tuple[str, ...] | None, owner_networks: tuple[str, ...] | None, allowed: bool
) -> None:
    """The client address must be in the key's list and in the owner's; a refusal is 403
    `ip-not-allowed`, names nothing of either list, and comes before the permission check."""
    memory = Memory()
    key = keyformat.generate().text
    memory.remember(
        key, state(key, ("demo.legacy.access",), networks=networks, owner_networks=owner_networks)
    )
    out = run(memory, REPORTS, x_api_key=key)  # the key lacks the route's permission
    assert isinstance(out, Refused)
    if allowed:
        assert out.outcome == "missing-permission"
        return
    assert (out.error.status, out.error.code, out.outcome) == (
        403,
        "ip-not-allowed",
        "ip-not-allowed",
    )
    for text in (*(networks or ()), *(owner_networks or ()), PEER):
        assert text.split("/")[0] not in out.error.message


def test_the_address_is_asked_only_for_a_key_with_an_allow_list() -> None:
    """Keys without a list never pay for resolving the client address (X-Forwarded-For)."""
    memory = Memory()
    key = keyformat.generate().text
    memory.remember(key, state(key, ("demo.reports.read",)))
    asked = []

    def address() -> str:
        asked.append(1)
        return PEER

    values = values_of(headers(x_api_key=key))
    assert isinstance(decide(POLICY, memory, "GET", REPORTS, values, address), Allowed)
    assert asked == []
    memory.remember(key, state(key, ("demo.reports.read",), networks=("192.0.2.0/24",)))
    assert isinstance(decide(POLICY, memory, "GET", REPORTS, values, address), Allowed)
    assert asked == [1]
