"""With Redis, the failed-password and failed-key budgets are one budget for every instance:
two instances (two sets of services on one database and one Redis) spread the failures and
still refuse after the budget, not after twice it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import GatewayError, TooManyRequests
from gateway.keys import format as keyformat
from gateway.services import Services, open_services
from tests.conftest import make_settings

PASSWORD = "a good long password"


@pytest.fixture
async def pair(sqlite_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[list[Services]]:
    settings = make_settings(
        sqlite_url,
        redis_url=redis_url,
        redis_namespace=f"kg{uuid.uuid4().hex[:8]}",
        login_max_failures=3,
        key_max_failures=4,
        data_dir=tmp_path,
    )
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_services(settings))
        second = await stack.enter_async_context(open_services(settings, migrate=False))
        yield [first, second]


async def test_failed_passwords_are_one_budget_across_instances(pair: list[Services]) -> None:
    """Three wrong passwords for one account, alternating instances: the fourth attempt, even
    with the right password, is 429 on both."""
    await pair[0].users.create(email="a@example.com", password=PASSWORD, actor="test")
    for i in range(3):
        assert await pair[i % 2].check_password("a@example.com", "wrong", f"10.0.0.{i}") is None
    for services in pair:
        with pytest.raises(TooManyRequests):
            await services.check_password("a@example.com", PASSWORD, "10.0.0.9")


async def test_failed_keys_are_one_budget_across_instances(pair: list[Services]) -> None:
    """Four unknown keys from one address, alternating instances: the next lookup on either
    is refused with 429 before any lookup."""
    for i in range(4):
        text = keyformat.generate("apk").text
        services = pair[i % 2]
        with pytest.raises(GatewayError) as caught:
            await services.lookup_key(text, services.verifier.digest(text), "10.1.1.1")
        assert caught.value.code == "key-unknown"
    for services in pair:
        text = keyformat.generate("apk").text
        with pytest.raises(TooManyRequests) as over:
            await services.lookup_key(text, services.verifier.digest(text), "10.1.1.1")
        assert over.value.code == "too-many-failed-keys"
    # another address is not affected
    text = keyformat.generate("apk").text
    with pytest.raises(GatewayError) as other:
        await pair[0].lookup_key(text, pair[0].verifier.digest(text), "10.1.1.2")
    assert other.value.code == "key-unknown"
