"""A key's quota on the APIs: its own limits and credits, shown with the key and set through
`PATCH /v1/apikeys/{id}` (and at creation) or the administration API.

    "limits": ["standard"],                  # the key's own limits (policy names)
    "credits": {"balance": 950, "refill": "daily", "refillAmount": 1000,
                "refillMode": "replace"}      # or null: the key spends no credits

Limits are checked against what the policy allows the key's owner (422 above it); credits
only an administrator may set (403 for anyone else), in the body as the same object (a
`balance`, optional `refill`, `refillAmount`, `refillMode`) or null to remove them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.api.schemas import v1_key
from gateway.errors import Forbidden, Invalid
from gateway.limits.quota import QuotaError, check_credits, check_key_limits
from gateway.services import Services
from gateway.store.base import ApiKey, KeyQuota

QUOTA_FIELDS = ("limits", "credits")
_CREDIT_FIELDS = {"balance", "refill", "refillAmount", "refillMode"}


async def key_view(services: Services, key: ApiKey, text: str | None = None) -> dict[str, Any]:
    """The key as `/v1/apikeys/{id}` shows it, with its quota."""
    quota = await services.quota.get(key.id)
    idle_days = services.settings.idle_key_days
    return {**v1_key(key, text, idle_days=idle_days), **(await quota_view(services, quota))}


async def quota_view(services: Services, quota: KeyQuota | None) -> dict[str, Any]:
    credits = None
    if quota is not None and quota.credits is not None:
        credits = {
            "balance": await services.quota.balance(quota),
            "refill": quota.refill,
            "refillAmount": quota.refill_amount,
            "refillMode": quota.refill_mode,
        }
    return {"limits": list(quota.limits) if quota else [], "credits": credits}


def key_limits(services: Services, raw: object, *, owner_is_admin: bool) -> tuple[str, ...]:
    """The `limits` member checked against the policy (422 naming the problem)."""
    if not isinstance(raw, list):
        raise Invalid([("limits", "must be an array of limit names")])
    policy = services.policy
    ceiling = policy.key_limit_admin_max if owner_is_admin else policy.key_limit_max
    try:
        return check_key_limits(raw, policy.limits, ceiling)
    except QuotaError as exc:
        raise Invalid([("limits", str(exc))]) from None


async def apply(
    services: Services,
    key: ApiKey,
    body: Mapping[str, Any],
    *,
    actor: str,
    owner_is_admin: bool,
    caller_is_admin: bool,
) -> None:
    """Set the quota members present in `body` (`limits`, `credits`)."""
    limits = None
    if "limits" in body:
        limits = key_limits(services, body["limits"], owner_is_admin=owner_is_admin)
    if "credits" not in body:
        if limits is not None:
            await services.quota.set(key.id, actor=actor, limits=limits)
        return
    if not caller_is_admin:
        raise Forbidden("only administrators set a key's credits", code="credits-admin-only")
    raw = body["credits"]
    if raw is None:
        await services.quota.set(key.id, actor=actor, limits=limits, credits=None)
        return
    if not isinstance(raw, dict) or not set(raw) <= _CREDIT_FIELDS or "balance" not in raw:
        raise Invalid(
            [("credits", "must be {balance, refill?, refillAmount?, refillMode?} or null")]
        )
    try:
        credits = check_credits(
            raw["balance"], raw.get("refill"), raw.get("refillAmount"), raw.get("refillMode")
        )
    except QuotaError as exc:
        raise Invalid([("credits", str(exc))]) from None
    await services.quota.set(key.id, actor=actor, limits=limits, credits=credits)
