"""Hashing-secret and key-prefix changes, through the real `gateway` command and `gateway
serve` on both stores: a different secret is refused at start with one line; previous_secrets
verifies old keys and re-hashes them; accepted_key_prefixes keeps keys of a former prefix."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from gateway.errors import Unauthenticated
from gateway.keys import format as keyformat
from gateway.keys.hashing import fingerprint
from gateway.services import open_services
from gateway.settings import load_settings
from tests.integration.test_cli import EXAMPLE, base_env, fails, ok, runner
from tests.integration.test_serve import START_SECONDS, client, started, stop, wait_healthy

SECRET_A = "A" * 20 + "first-secret-of-this-db"
SECRET_B = "B" * 20 + "second-secret-replacing"
FP_A, FP_B = fingerprint(SECRET_A.encode()), fingerprint(SECRET_B.encode())
OWNER = "robot@example.com"
ROUTE = "/api/reports/daily"  # demo.reports.read, forwarded to the demo upstream


def setup_key(tmp_path: Path, env: dict[str, str]) -> str:
    """A service user with a reports key, made with the environment's secret and prefix."""
    gateway = runner(tmp_path, env)
    ok(gateway("users", "create", OWNER, "--service", "--grant", "demo.reports.read"))
    made = gateway("keys", "create", "--user", OWNER, "--permission", "demo.reports.read")
    return ok(made).strip()


def one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused start, which names no secret."""
    line = fails(result, "hashing secret")
    assert SECRET_A not in result.stderr + result.stdout
    assert SECRET_B not in result.stderr + result.stdout
    return line


def serve_settings(env: dict[str, str]) -> dict[str, str]:
    """The GATEWAY_* settings of `env` that `started` does not set itself."""
    own = {"GATEWAY_MODE", "GATEWAY_POLICY"}
    return {k: v for k, v in env.items() if k.startswith("GATEWAY_") and k not in own}


async def data_plane_status(workdir: Path, env: dict[str, str], key: str) -> int:
    """`gateway serve` in a new `workdir` with `env`: the status of one proxied request
    carrying `key`."""
    await asyncio.to_thread(workdir.mkdir)
    with started(workdir, **serve_settings(env)) as server:
        async with client() as session:
            await wait_healthy(server, session)
            async with session.get(server.base + ROUTE, headers={"X-API-KEY": key}) as resp:
                got = resp.status
        assert await stop(server) == 0
        assert key not in server.stdout() + server.stderr()
        assert "Traceback" not in server.stderr()
    return got


def authenticated(status: int) -> bool:
    """The request got past the key check (the demo upstream may or may not be running)."""
    return status not in {401, 403}


async def test_a_different_secret_is_refused_at_every_start(tmp_path: Path, store_url: str) -> None:
    """With a key made under secret A, starting `gateway migrate`, a key-hashing command or
    `gateway serve` with secret B exits non-zero with one line naming A's fingerprint and
    previous_secrets, no traceback and no secret; A still works afterwards."""
    env_a = {**base_env(tmp_path, store_url), "GATEWAY_SECRET": SECRET_A}
    key = setup_key(tmp_path, env_a)
    env_b = {**env_a, "GATEWAY_SECRET": SECRET_B}
    gateway_b = runner(tmp_path, env_b)
    for args in (("migrate",), ("keys", "list", "--user", OWNER), ("keys", "rehash-status")):
        line = one_line_refusal(gateway_b(*args))
        assert FP_A in line
        assert FP_B in line
        assert "previous_secrets" in line

    serve_dir = tmp_path / "serve-refused"
    await asyncio.to_thread(serve_dir.mkdir)
    with started(serve_dir, **serve_settings(env_b)) as server:
        code = await asyncio.to_thread(server.proc.wait, START_SECONDS)
        result = subprocess.CompletedProcess(["serve"], code, server.stdout(), server.stderr())
        assert FP_A in one_line_refusal(result)

    assert "database is up to date" in ok(runner(tmp_path, env_a)("migrate"))
    async with open_services(load_settings(None, environ=env_a)) as s:
        assert (await s.verifier.verify(key)).email == OWNER


async def test_rotation_rehashes_keys_until_the_old_secret_can_go(
    tmp_path: Path, store_url: str
) -> None:
    """Secret B with previous_secrets=A: the old key is accepted by the data plane, re-hashed
    under B on that use (audited, without the key), rehash-status goes from 1 key to none;
    then B alone still accepts it, and A can no longer start."""
    env_a = {**base_env(tmp_path, store_url), "GATEWAY_SECRET": SECRET_A}
    key = setup_key(tmp_path, env_a)
    key_id = keyformat.parse(key).key_id
    rotating = {**env_a, "GATEWAY_SECRET": SECRET_B, "GATEWAY_PREVIOUS_SECRETS": SECRET_A}
    gateway = runner(tmp_path, rotating)
    status = ok(gateway("keys", "rehash-status"))
    assert f"current secret {FP_B}: 0 keys" in status
    assert f"previous secret 1 ({FP_A}): 1 key still depend on it" in status
    assert SECRET_A not in status

    assert authenticated(await data_plane_status(tmp_path / "serve-rotating", rotating, key))

    status = ok(gateway("keys", "rehash-status"))
    assert f"current secret {FP_B}: 1 key" in status
    assert "nothing depends on previous_secrets any more; they can be removed" in status
    only_b = {**env_a, "GATEWAY_SECRET": SECRET_B}
    async with open_services(load_settings(None, environ=only_b)) as s:
        stored = await s.store.get_key(key_id)
        assert stored is not None
        assert stored.secret_fingerprint == FP_B
        assert stored.key_hash == s.hasher.digest(key)
        audit = await s.store.list_audit(target=f"key:{key_id}")
        rehash = [a for a in audit if a.action == "key.rehash"]
        assert len(rehash) == 1
        assert rehash[0].detail == {"from": FP_A, "to": FP_B}
        assert key not in str([a.detail for a in audit])
        assert (await s.verifier.verify(key)).key_id == key_id

    assert authenticated(await data_plane_status(tmp_path / "serve-only-b", only_b, key))
    line = one_line_refusal(runner(tmp_path, env_a)("migrate"))
    assert f"replaced on this database by the one with fingerprint {FP_B}" in line


async def test_unknown_keys_stay_unknown_under_previous_secrets(store_url: str) -> None:
    """previous_secrets widens nothing: a well-formed key no secret hashed is still 401
    key-unknown, and a key revoked before rotating does not come back."""
    env = {
        "GATEWAY_MODE": "development",
        "GATEWAY_DATABASE_URL": store_url,
        "GATEWAY_POLICY": str(EXAMPLE),
        "GATEWAY_SECRET": SECRET_A,
    }
    async with open_services(load_settings(None, environ=env)) as s:
        owner = await s.users.create(
            email=OWNER, password=None, actor="cli", is_service=True, grants=[]
        )
        revoked = await s.keys.create(
            owner=owner, creator=None, label="r", permissions=[], path_rule=None, expires_at=None
        )
        await s.keys.revoke(revoked.record, actor=None)
    rotating = {**env, "GATEWAY_SECRET": SECRET_B, "GATEWAY_PREVIOUS_SECRETS": SECRET_A}
    async with open_services(load_settings(None, environ=rotating)) as s:
        for text in (keyformat.generate().text, revoked.text):
            with pytest.raises(Unauthenticated) as info:
                await s.verifier.verify(text)
            assert info.value.code == "key-unknown"


async def test_accepted_key_prefixes_keep_keys_of_a_former_prefix(
    tmp_path: Path, store_url: str
) -> None:
    """After key_prefix changes from `old` to `kg`, an `old_` key is refused as malformed;
    listing `old` in accepted_key_prefixes makes it work on the data plane and in the CLI
    (by key id), while new keys get the new prefix."""
    env_old = {
        **base_env(tmp_path, store_url),
        "GATEWAY_SECRET": SECRET_A,
        "GATEWAY_KEY_PREFIX": "old",
    }
    key = setup_key(tmp_path, env_old)
    key_id = keyformat.parse(key, "old").key_id
    env_new = {**env_old, "GATEWAY_KEY_PREFIX": "kg"}
    async with open_services(load_settings(None, environ=env_new)) as s:
        with pytest.raises(Unauthenticated) as info:
            await s.verifier.verify(key)
        assert info.value.code == "key-malformed"

    accepting = {**env_new, "GATEWAY_ACCEPTED_KEY_PREFIXES": "old"}
    assert authenticated(await data_plane_status(tmp_path / "serve-accepting", accepting, key))
    gateway = runner(tmp_path, accepting)
    made = ok(gateway("keys", "create", "--user", OWNER, "--permission", "demo.reports.read"))
    assert made.startswith("kg_")
    assert ok(gateway("keys", "disable", key_id)).strip() == f"disabled {key_id}"
    async with open_services(load_settings(None, environ=accepting)) as s:
        with pytest.raises(Unauthenticated) as info:
            await s.verifier.verify(key)
        assert info.value.code == "key-disabled"
        assert (await s.verifier.verify(made.strip())).email == OWNER
