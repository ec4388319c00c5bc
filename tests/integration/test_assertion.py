"""Signed identity assertions: what the upstream receives, and how it verifies it."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.app import create_app
from gateway.assertion import AssertionSigner
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.integration.upstream import EchoUpstream

POLICY = """
permissions:
  - {{name: t.read, title: Read}}
upstreams:
  main: {{url: "{main}"}}
  other: {{url: "{other}"}}
routes:
  - {{path: /api/**, upstream: main, permission: t.read}}
  - {{path: /other/**, upstream: other, permission: t.read}}
"""


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Verify a compact EdDSA JWT against a JWK Set the way an upstream would."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(_unb64(header_b64))
    assert header["alg"] == "EdDSA"
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    public = Ed25519PublicKey.from_public_bytes(_unb64(jwk["x"]))
    public.verify(_unb64(signature_b64), f"{header_b64}.{payload_b64}".encode())
    claims: dict[str, Any] = json.loads(_unb64(payload_b64))
    return claims


async def _gateway(
    aiohttp_client: Any,
    sqlite_url: str,
    tmp_path: Path,
    upstream: EchoUpstream,
    other: EchoUpstream | None = None,
    **kw: Any,
) -> tuple[Any, str, str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(main=upstream.url, other=(other or upstream).url))
    client = await aiohttp_client(create_app(make_settings(sqlite_url, policy=(policy,), **kw)))
    services = client.app[SERVICES]
    user = await services.users.create(
        email="r@example.com", password=None, actor="t", is_service=True, grants=["t.read"]
    )
    new = await services.keys.create(owner=user, creator=None, label="r", permissions=["t.read"])
    return client, new.text, new.record.id, user.id


async def test_upstream_gets_a_verifiable_assertion(
    aiohttp_client: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """With assertions on, the upstream receives a JWT that verifies against the published
    JWKS and names the user, the key and the effective permissions; a client's own
    X-Gateway-Assertion never gets through."""
    async with EchoUpstream() as upstream:
        client, key, key_id, user_id = await _gateway(
            aiohttp_client, sqlite_url, tmp_path, upstream, identity_assertion=True
        )
        reply = await client.get(
            "/api/x", headers={"X-API-KEY": key, "X-Gateway-Assertion": "forged.token.here"}
        )
        assert reply.status == 200
        (token,) = upstream.received[-1].header("X-Gateway-Assertion")
        assert token != "forged.token.here"
        jwks = await (await client.get("/.well-known/jwks.json")).json()
        claims = _verify(token, jwks)
        assert claims["sub"] == user_id
        assert claims["key_id"] == key_id
        assert claims["permissions"] == ["t.read"]
        assert claims["iss"] == "keygate"
        assert claims["aud"] == "main"  # the upstream's name in the policy
        assert claims["iat"] <= time.time() < claims["exp"]


async def test_each_upstream_gets_an_assertion_of_its_own(
    aiohttp_client: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """The audience is the upstream the request went to, so an assertion one upstream
    received cannot be replayed to another that checks `aud`."""
    async with EchoUpstream() as main, EchoUpstream() as other:
        client, key, _, _ = await _gateway(
            aiohttp_client, sqlite_url, tmp_path, main, other, identity_assertion=True
        )
        jwks = await (await client.get("/.well-known/jwks.json")).json()
        for path, upstream, audience in (("/api/x", main, "main"), ("/other/x", other, "other")):
            for _ in range(2):  # the second request reuses the cached assertion
                assert (await client.get(path, headers={"X-API-KEY": key})).status == 200
                (token,) = upstream.received[-1].header("X-Gateway-Assertion")
                assert _verify(token, jwks)["aud"] == audience
        main_token = main.received[-1].header("X-Gateway-Assertion")
        assert main_token != other.received[-1].header("X-Gateway-Assertion")


async def test_tampered_assertion_fails_verification() -> None:
    """Changing a claim breaks the signature: an upstream can tell a forged assertion."""
    signer = AssertionSigner(b"s" * 32, ttl=60)
    token, _ = signer.sign("u1", "apk_x", ("t.read",), "main")
    header, payload, signature = token.split(".")
    claims = json.loads(_unb64(payload))
    claims["permissions"] = ["unrestricted"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    try:
        _verify(f"{header}.{forged_payload}.{signature}", signer.jwks())
    except InvalidSignature:
        return
    raise AssertionError("a tampered assertion verified")


def test_every_instance_derives_the_same_key_and_a_new_secret_rotates_it() -> None:
    """The signing key comes from the shared secret: same secret, same kid; new secret, new kid."""
    assert AssertionSigner(b"a" * 32, ttl=60).kid == AssertionSigner(b"a" * 32, ttl=60).kid
    assert AssertionSigner(b"a" * 32, ttl=60).kid != AssertionSigner(b"b" * 32, ttl=60).kid


async def test_assertions_off_by_default(
    aiohttp_client: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """Without the setting there is no assertion header and the JWKS endpoint is a 404 problem."""
    async with EchoUpstream() as upstream:
        client, key, _, _ = await _gateway(aiohttp_client, sqlite_url, tmp_path, upstream)
        assert (await client.get("/api/x", headers={"X-API-KEY": key})).status == 200
        assert upstream.received[-1].header("X-Gateway-Assertion") == []
        missing = await client.get("/.well-known/jwks.json")
        assert missing.status == 404
        assert missing.headers["Content-Type"].startswith("application/problem+json")
