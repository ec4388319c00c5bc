"""Leaked keys: the GitHub secret scanning partner endpoint with a generated P-256 key pair
(valid signature, bad signature, replay, a token with a bad checksum, a token of another
prefix, an already revoked key), the keys refreshed from a URL, each `leak_action`, and
`gateway keys disclose`."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.cli import main
from gateway.keys import format as keyformat
from gateway.keys.leaks import PublicKeys
from tests.conftest import make_settings
from tests.integration.upstream import free_port
from tests.openapi_check import Gateway, start_gateway

ROOT = Path(__file__).resolve().parents[2]
PATH = "/v1/secret-scanning/github"


class Signer:
    """A P-256 key pair standing in for GitHub's, and its public key document."""

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        self.private = ec.generate_private_key(ec.SECP256R1())

    def document(self) -> dict[str, Any]:
        pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "public_keys": [
                {"key_identifier": self.identifier, "key": pem.decode(), "is_current": True}
            ]
        }

    def headers(self, body: bytes) -> dict[str, str]:
        signature = self.private.sign(body, ec.ECDSA(hashes.SHA256()))
        return {
            "Github-Public-Key-Identifier": self.identifier,
            "Github-Public-Key-Signature": base64.b64encode(signature).decode(),
            "Content-Type": "application/json",
        }


def report(*tokens: str) -> bytes:
    return json.dumps(
        [
            {
                "token": t,
                "type": "keygate_api_key",
                "url": "https://github.com/o/r/commit/1",
                "source": "commit",
            }
            for t in tokens
        ]
    ).encode()


@pytest.fixture
def signer() -> Signer:
    return Signer("90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a")


async def start(
    aiohttp_client: Any, sqlite_url: str, tmp_path: Path, signer: Signer, **settings: Any
) -> Gateway:
    keys = tmp_path / "github-keys.json"
    keys.write_text(json.dumps(signer.document()))
    return await start_gateway(
        aiohttp_client,
        make_settings(sqlite_url, secret_scanning_keys_file=keys, **settings),
    )


async def post(gw: Gateway, body: bytes, headers: dict[str, str]) -> Any:
    return await gw.api.post(PATH, data=body, headers=headers)


async def test_a_signed_report_revokes_real_keys_and_labels_every_token(
    aiohttp_client: Any, sqlite_url: str, tmp_path: Path, signer: Signer
) -> None:
    """A real key is a true positive and revoked (audited as key.leaked with the source); a
    token with a bad checksum, one of another prefix and an already revoked key are false
    positives; the answer follows the program's format, token by token."""
    gw = await start(aiohttp_client, sqlite_url, tmp_path, signer)
    owner = await gw.user("shop@example.com", grants=("demo.reports.read",))
    live = await gw.key(owner, ["demo.reports.read"])
    gone = await gw.key(owner, ["demo.reports.read"])
    await gw.services.keys.revoke(gone.record, actor=None)
    bad_checksum = live.text[:-1] + ("A" if live.text[-1] != "A" else "B")
    other_prefix = "ghp_" + live.text.partition("_")[2]
    body = report(live.text, bad_checksum, other_prefix, gone.text)
    reply = await post(gw, body, signer.headers(body))
    assert reply.status == 200, reply.text()
    assert [(a["token_raw"], a["label"]) for a in reply.json()] == [
        (live.text, "true_positive"),
        (bad_checksum, "false_positive"),
        (other_prefix, "false_positive"),
        (gone.text, "false_positive"),
    ]
    assert {a["token_type"] for a in reply.json()} == {"keygate_api_key"}
    assert await gw.services.store.get_key(live.record.id) is None
    [entry] = await gw.services.store.list_audit(target=f"key:{live.record.id}", limit=1)
    assert (entry.action, entry.actor) == ("key.leaked", "system:secret-scanning")
    assert entry.detail["effect"] == "revoke"
    assert entry.detail["url"] == "https://github.com/o/r/commit/1"
    assert entry.subject_user == owner.id  # the owner sees it in his Activity
    assert live.text not in json.dumps(dict(entry.detail))


async def test_bad_signatures_and_replays_are_refused_before_anything_changes(
    aiohttp_client: Any, sqlite_url: str, tmp_path: Path, signer: Signer
) -> None:
    """A signature over another body, by an unknown key, by another key pair, malformed, or
    missing is a 401; the same signed report twice is a 409 the second time; the key is
    untouched by every refused request."""
    gw = await start(aiohttp_client, sqlite_url, tmp_path, signer)
    owner = await gw.user("shop@example.com", grants=("demo.reports.read",))
    key = await gw.key(owner, ["demo.reports.read"])
    body = report(key.text)
    good = signer.headers(body)
    impostor = Signer(signer.identifier)
    refused = [
        signer.headers(report(key.text, "x")),  # signs another body
        {**good, "Github-Public-Key-Identifier": "unknown"},
        impostor.headers(body),  # right identifier, wrong key pair
        {**good, "Github-Public-Key-Signature": "not base64!"},
        {k: v for k, v in good.items() if k != "Github-Public-Key-Signature"},
    ]
    for headers in refused:
        reply = await post(gw, body, headers)
        assert (reply.status, reply.json()["code"]) == (401, "bad-signature")
        assert "WWW-Authenticate" not in reply.headers
    assert await gw.services.store.get_key(key.record.id) is not None
    assert (await post(gw, body, good)).status == 200
    again = await post(gw, body, good)
    assert (again.status, again.json()["code"]) == (409, "report-replayed")


async def test_disable_and_notify_keep_the_key_and_show_it_leaked(
    aiohttp_client: Any, sqlite_url: str, tmp_path: Path, signer: Signer
) -> None:
    """`leak_action: disable` disables the key; `notify` only marks it; both show leakedAt
    on the key (page and API) and audit it."""
    for action, status in (("disable", "disabled"), ("notify", "active")):
        folder = tmp_path / action
        folder.mkdir()
        gw = await start(
            aiohttp_client, f"sqlite:///{folder / 'k.db'}", folder, signer, leak_action=action
        )
        owner = await gw.user("shop@example.com", grants=("demo.reports.read",))
        key = await gw.key(owner, ["demo.reports.read"])
        body = report(key.text)
        assert (await post(gw, body, signer.headers(body))).json()[0]["label"] == "true_positive"
        stored = await gw.services.store.get_key(key.record.id)
        assert stored is not None
        assert (stored.status, stored.leak_source) == (status, "github: commit")
        assert stored.leaked_at is not None


async def test_signing_keys_are_refreshed_from_the_configured_url(
    aiohttp_client: Any, sqlite_url: str, tmp_path: Path, signer: Signer
) -> None:
    """A report signed by a key the file does not hold refreshes the keys from the URL and
    is then accepted."""
    rotated = Signer("new-key-identifier")
    served = web.Application()

    async def keys(_: web.Request) -> web.Response:
        return web.json_response(rotated.document())

    served.router.add_get("/meta/public_keys/secret_scanning", keys)
    runner = web.AppRunner(served)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}/meta/public_keys/secret_scanning"
        gw = await start(aiohttp_client, sqlite_url, tmp_path, signer, secret_scanning_keys_url=url)
        body = report("apk_" + "0" * 54)
        reply = await post(gw, body, rotated.headers(body))
        assert reply.status == 200, reply.text()
        assert reply.json()[0]["label"] == "false_positive"
    finally:
        await runner.cleanup()


async def test_the_endpoint_is_off_without_signing_keys(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """No keys file and no URL: 404 `secret-scanning-off` for a signed-looking report; a
    report without the signature headers is refused first, as when scanning is on."""
    gw = await start_gateway(aiohttp_client, make_settings(sqlite_url))
    signed = {
        "Content-Type": "application/json",
        "Github-Public-Key-Identifier": "abc",
        "Github-Public-Key-Signature": "MEUCIQ==",
    }
    reply = await gw.api.post(PATH, data=b"[]", headers=signed)
    assert (reply.status, reply.json()["code"]) == (404, "secret-scanning-off")
    bare = await gw.api.post(PATH, data=b"[]", headers={"Content-Type": "application/json"})
    assert bare.status == 401


def test_public_keys_refuse_other_curves() -> None:
    """Only P-256 keys are accepted from a key document."""
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(ValueError, match="P-256"):
        PublicKeys.from_document({"public_keys": [{"key_identifier": "x", "key": pem}]})


def test_the_cli_discloses_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gateway keys disclose KEY` revokes a real key and says so; a token that is not one of
    ours is one line and exit 1, and is never echoed."""
    monkeypatch.setenv("GATEWAY_MODE", "development")
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_POLICY", str(ROOT / "policies" / "example.yaml"))
    assert main(["users", "create", "svc@example.com", "--service"]) == 0
    capsys.readouterr()
    assert main(["keys", "create", "--user", "svc@example.com"]) == 0
    key = capsys.readouterr().out.strip()
    key_id = keyformat.parse(key).key_id
    assert main(["keys", "disclose", key]) == 0
    assert capsys.readouterr().out.strip() == f"true_positive: {key_id} (revoke)"
    assert main(["keys", "disclose", key]) == 1
    err = capsys.readouterr().err
    assert "false_positive" in err
    assert key not in err
    assert main(["keys", "list", "--user", "svc@example.com"]) == 0
    assert key_id not in capsys.readouterr().out
