"""Header rewriting between client and upstream (gateway.proxy.headers): pure, no fixtures."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.proxy.headers import (
    REROUTING_HEADERS,
    Identity,
    Origin,
    connection_tokens,
    normalise,
    request_drop,
    request_headers,
    response_fields,
)

ORIGIN = Origin(client_ip="203.0.113.7", proto="http", host="gw.example")
ALICE = Identity(user_id="u-alice", key_id="apk_abc", permissions=("t.read", "t.write:S1"))


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [n.lower() for n, _ in headers]


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in headers if n.lower() == name.lower()]


def test_ordinary_headers_pass_in_order() -> None:
    """End-to-end headers reach the upstream unchanged and in their order, duplicates kept."""
    out = request_headers(
        [("Accept", "a/b"), ("X-Trace", "1"), ("Accept", "c/d"), ("User-Agent", "x")],
        ORIGIN,
        None,
    )
    assert out[:4] == [("Accept", "a/b"), ("X-Trace", "1"), ("Accept", "c/d"), ("User-Agent", "x")]


def test_hop_by_hop_framing_host_and_expect_are_dropped() -> None:
    """Hop-by-hop headers, framing, Host and Expect never travel upstream as sent."""
    incoming = [
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic x"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"),
        ("Host", "evil.example"),
        ("Content-Length", "5"),
        ("Expect", "100-continue"),
        ("Accept", "*/*"),
    ]
    out = request_headers(incoming, ORIGIN, None)
    assert [n for n, _ in out] == [
        "Accept",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
    ]


def test_headers_named_in_connection_are_dropped() -> None:
    """A header the client lists in Connection is hop-by-hop and is removed, in any spelling."""
    out = request_headers(
        [
            ("Connection", "close, X-Private"),
            ("x_private", "1"),
            ("X-Private", "2"),
            ("X-Kept", "3"),
        ],
        ORIGIN,
        None,
    )
    assert "x-private" not in names(out)
    assert "x_private" not in names(out)
    assert values(out, "X-Kept") == ["3"]


def test_connection_cannot_remove_the_gateways_own_headers() -> None:
    """`Connection: X-Gateway-User, X-Forwarded-For` cannot make the gateway drop what it adds."""
    out = request_headers(
        [("Connection", "X-Gateway-User, X-Gateway-Key-Id, X-Forwarded-For, X-Forwarded-Host")],
        ORIGIN,
        ALICE,
    )
    assert values(out, "X-Gateway-User") == ["u-alice"]
    assert values(out, "X-Gateway-Key-Id") == ["apk_abc"]
    assert values(out, "X-Forwarded-For") == ["203.0.113.7"]
    assert values(out, "X-Forwarded-Host") == ["gw.example"]


def test_client_identity_headers_are_dropped_in_every_spelling() -> None:
    """Client-sent X-Gateway-* (any case, `_` for `-`) never reach the upstream; ours do."""
    spoofed = [
        ("X-Gateway-User", "admin"),
        ("x-gateway-user", "admin"),
        ("x_gateway_user", "admin"),
        ("X_Gateway-Key-Id", "apk_other"),
        ("X-GATEWAY-PERMISSIONS", "unrestricted"),
        ("X-Gateway-Anything-Else", "1"),
    ]
    out = request_headers(spoofed, ORIGIN, ALICE)
    gateway = [(n, v) for n, v in out if normalise(n).startswith("x-gateway-")]
    assert gateway == [
        ("X-Gateway-User", "u-alice"),
        ("X-Gateway-Key-Id", "apk_abc"),
        ("X-Gateway-Permissions", "t.read t.write:S1"),
    ]


def test_spoofed_identity_is_dropped_even_without_a_principal() -> None:
    """On `auth: none` routes no identity header reaches the upstream at all."""
    out = request_headers([("X-Gateway-User", "admin"), ("x_gateway_key_id", "k")], ORIGIN, None)
    assert not [n for n in names(out) if normalise(n).startswith("x-gateway-")]


def test_credentials_are_never_forwarded() -> None:
    """Authorization and X-API-KEY (and `_` spellings) are removed: the key stays at the gateway."""
    out = request_headers(
        [
            ("Authorization", "Bearer apk_secret"),
            ("X-API-KEY", "apk_secret"),
            ("x_api_key", "apk_secret"),
            ("authorization", "Basic eDp5"),
        ],
        ORIGIN,
        ALICE,
    )
    assert not any("apk_secret" in v or "eDp5" in v for _, v in out)
    assert not {"authorization", "x-api-key", "x_api_key"} & set(names(out))


def test_forwarding_headers_are_overwritten_for_untrusted_peers() -> None:
    """A client cannot choose X-Forwarded-*, Forwarded or X-Real-IP: the gateway's values win."""
    out = request_headers(
        [
            ("X-Forwarded-For", "1.2.3.4"),
            ("x_forwarded_for", "1.2.3.4"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Real-IP", "1.2.3.4"),
        ],
        ORIGIN,
        None,
    )
    assert values(out, "X-Forwarded-For") == ["203.0.113.7"]
    assert values(out, "X-Forwarded-Host") == ["gw.example"]
    assert values(out, "X-Forwarded-Proto") == ["http"]
    assert not {"forwarded", "x-real-ip", "x_forwarded_for"} & set(names(out))


def test_trusted_proxy_forwarding_is_kept_and_appended() -> None:
    """Behind a trusted proxy its X-Forwarded-For is extended with the peer, its Proto/Host kept."""
    origin = Origin(client_ip="10.0.0.2", proto="http", host="internal", trusted_peer=True)
    out = request_headers(
        [
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "10.0.0.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "api.example"),
            ("x_forwarded_for", "6.6.6.6"),
        ],
        origin,
        None,
    )
    assert values(out, "X-Forwarded-For") == ["198.51.100.1, 10.0.0.9, 10.0.0.2"]
    assert values(out, "X-Forwarded-Proto") == ["https"]
    assert values(out, "X-Forwarded-Host") == ["api.example"]
    assert "x_forwarded_for" not in names(out)


def test_identity_without_key_has_no_key_id_header() -> None:
    """A password-authenticated principal gets X-Gateway-User and permissions, no key id."""
    out = request_headers([], ORIGIN, Identity("u-bob", None, ("t.read",)))
    assert values(out, "X-Gateway-User") == ["u-bob"]
    assert values(out, "X-Gateway-Key-Id") == []
    assert values(out, "X-Gateway-Permissions") == ["t.read"]


def test_missing_host_and_peer_add_no_empty_forwarding_values() -> None:
    """Without a Host header or a peer address, no empty X-Forwarded-Host/For is invented."""
    out = request_headers([], Origin(client_ip=None, proto="http", host=None), None)
    assert names(out) == ["x-forwarded-proto"]


def test_response_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    """The upstream's hop-by-hop headers and those its Connection names do not reach the client."""
    out = response_fields(
        [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"keep-alive, X-Internal"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Internal", b"secret"),
            (b"x_internal", b"underscore spelling"),
            (b"Proxy-Connection", b"X-Other"),
            (b"X-Other", b"named by Proxy-Connection"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            (b"Content-Length", b"12"),
            (b"Location", b"http://other.example/"),
        ]
    )
    assert out == [
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Length", b"12"),
        (b"Location", b"http://other.example/"),
    ]


def test_connection_tokens_ignore_the_common_ones() -> None:
    """keep-alive and close name nothing extra; other tokens are normalised."""
    assert connection_tokens([("Connection", "keep-alive, close")]) == frozenset()
    assert connection_tokens([("connection", " X_Foo ,, Bar")]) == {"x-foo", "bar"}


def test_gateway_session_cookie_is_never_forwarded() -> None:
    """The gateway's login cookie is cut out of Cookie; the upstream's own cookies pass."""
    out = request_headers([("Cookie", "a=1; keygate_session=secret-token; b=2")], ORIGIN, None)
    cookies = [v for n, v in out if n == "Cookie"]
    assert cookies == ["a=1; b=2"]
    alone = request_headers([("Cookie", "keygate_session=secret-token")], ORIGIN, None)
    assert not [v for n, v in alone if n.lower() == "cookie"]
    assert "secret-token" not in repr(alone)


def test_upstream_cannot_set_the_gateway_session_cookie() -> None:
    """A Set-Cookie for the gateway's login cookie from an upstream is dropped; others pass."""
    out = response_fields(
        [
            (b"Set-Cookie", b"keygate_session=attacker; Path=/"),
            (b"set-cookie", b" keygate_session =; Max-Age=0"),
            (b"Set-Cookie", b"app=1; Path=/"),
        ]
    )
    assert out == [(b"Set-Cookie", b"app=1; Path=/")]


def test_rerouting_headers_are_dropped_even_from_a_trusted_proxy() -> None:
    """X-Original-URL, X-HTTP-Method-Override and the like never pass, whoever sent them."""
    origin = Origin(client_ip="10.0.0.2", proto="http", host="internal", trusted_peer=True)
    incoming = [
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Original-Method", "DELETE"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Forwarded-Uri", "/admin"),
        ("X-Forwarded-Path", "/admin"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Envoy-Original-Path", "/admin"),
        ("Accept", "*/*"),
    ]
    for peer in (ORIGIN, origin):
        out = request_headers(incoming, peer, None)
        assert not set(names(out)) & REROUTING_HEADERS
        assert values(out, "Accept") == ["*/*"]


def test_every_name_with_an_underscore_is_dropped() -> None:
    """SCRIPT_NAME, PATH_INFO and any other `_` name never reach the upstream (nginx's rule)."""
    out = request_headers(
        [("SCRIPT_NAME", "/admin"), ("path_info", "/x"), ("X_Custom", "1"), ("X-Custom", "2")],
        ORIGIN,
        None,
    )
    assert not [n for n in names(out) if "_" in n]
    assert values(out, "X-Custom") == ["2"]


def test_configured_names_are_dropped_in_any_case() -> None:
    """Names from `strip_request_headers` are dropped as the built-in ones are."""
    drop = request_drop(("x-debug-as", "x-tenant"))
    out = request_headers(
        [("X-Debug-As", "root"), ("X-TENANT", "other"), ("X-Trace", "1")], ORIGIN, None, drop
    )
    assert [(n, v) for n, v in out if not n.startswith("X-Forwarded-")] == [("X-Trace", "1")]
    assert drop >= REROUTING_HEADERS


def test_configured_names_cannot_remove_what_the_gateway_adds() -> None:
    """Stripping X-Forwarded-For or X-Gateway-User removes the client's copy, never ours."""
    drop = request_drop(("x-forwarded-for", "x-gateway-user"))
    out = request_headers([("X-Forwarded-For", "6.6.6.6")], ORIGIN, ALICE, drop)
    assert values(out, "X-Forwarded-For") == ["203.0.113.7"]
    assert values(out, "X-Gateway-User") == ["u-alice"]


EXTRA = ("x-debug-as",)
_LISTED = sorted(REROUTING_HEADERS | set(EXTRA))
_SPECIAL = ("x-gateway-", "x-forwarded-")


def _any_case(name: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(name), max_size=len(name))
    return flips.map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(name, up, strict=True))
    )


def _ordinary(name: str) -> bool:
    key = name.lower()
    return (
        key not in request_drop(EXTRA)
        and key not in {"cookie", "forwarded", "x-real-ip"}
        and not key.startswith(_SPECIAL)
    )


_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_listed = st.tuples(st.sampled_from(_LISTED).flatmap(_any_case), _values)
_underscored = st.tuples(
    st.from_regex(r"[A-Za-z0-9-]{0,8}_[A-Za-z0-9_-]{0,8}", fullmatch=True), _values
)
_kept = st.tuples(
    st.from_regex(r"[A-Za-z0-9!#$%&'*+.^`|~-]{1,16}", fullmatch=True).filter(_ordinary), _values
)


@given(st.lists(st.one_of(_listed, _underscored, _kept), max_size=30))
def test_no_listed_or_underscore_name_survives(incoming: list[tuple[str, str]]) -> None:
    """Listed names (any case) and `_` names never survive; every other header passes as sent."""
    out = request_headers(incoming, ORIGIN, None, request_drop(EXTRA))
    # The gateway's own three forwarding headers come last (untrusted peer, no identity).
    assert names(out[-3:]) == ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
    assert out[:-3] == [(n, v) for n, v in incoming if _ordinary(n) and "_" not in n]
