"""`gateway keys quota` and `gateway keys create --limit`: a key's own limits and credits from
the operator's command line (the operator stands for the owner's administrators).

    gateway keys quota apk_...                      show the key's limits and credits
    gateway keys quota apk_... --limit slow         set its own limits (repeat; --no-limits)
    gateway keys quota apk_... --credits 1000 --refill daily [--refill-mode add]
    gateway keys quota apk_... --no-credits
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from gateway.limits.quota import QuotaError, check_credits, check_key_limits
from gateway.services import Services
from gateway.store.base import User


def add_arguments(keys: Any) -> None:
    """Add `quota` to the `keys` subcommands (argparse's subparser action: untyped there)."""
    quota = keys.add_parser("quota", help="show or set a key's own limits and credits")
    quota.add_argument("key_id")
    quota.add_argument("--limit", action="append", default=[], metavar="NAME")
    quota.add_argument("--no-limits", action="store_true", help="remove the key's own limits")
    quota.add_argument("--credits", type=int, metavar="N", help="set the balance")
    quota.add_argument("--refill", choices=["daily", "monthly", "never"], default="never")
    quota.add_argument("--refill-amount", type=int, metavar="N")
    quota.add_argument("--refill-mode", choices=["replace", "add"], default="replace")
    quota.add_argument("--no-credits", action="store_true", help="the key spends no credits")


def limits_for(s: Services, owner: User, names: list[str]) -> tuple[str, ...]:
    """`--limit` names checked against what the policy allows the owner's keys."""
    policy = s.policy
    ceiling = policy.key_limit_admin_max if owner.is_admin else policy.key_limit_max
    try:
        return check_key_limits(names, policy.limits, ceiling)
    except QuotaError as exc:
        raise ValueError(f"--limit: {exc}") from None


async def run(s: Services, args: argparse.Namespace, say: Callable[[str], None]) -> None:
    key = await s.keys.get_owned(args.key_id, None)
    owner = await s.users.find(key.user_id)
    limits: tuple[str, ...] | None = None
    if args.no_limits:
        limits = ()
    elif args.limit:
        limits = limits_for(s, owner, args.limit)
    changes: dict[str, object] = {}
    if args.no_credits:
        changes["credits"] = None
    elif args.credits is not None:
        refill = None if args.refill == "never" else args.refill
        try:
            changes["credits"] = check_credits(
                args.credits, refill, args.refill_amount, args.refill_mode
            )
        except QuotaError as exc:
            raise ValueError(f"--credits: {exc}") from None
    if limits is not None or changes:
        await s.quota.set(key.id, actor="cli", limits=limits, **changes)
    quota = await s.quota.get(key.id)
    shown = ", ".join(quota.limits) if quota and quota.limits else "none of its own"
    say(f"{key.id}  limits: {shown}")
    if quota is None or quota.credits is None:
        say(f"{key.id}  credits: none (the key spends no credits)")
        return
    refill = (
        f"refill {quota.refill} {quota.refill_amount} ({quota.refill_mode})"
        if quota.refill
        else "never refilled"
    )
    say(f"{key.id}  credits: {await s.quota.balance(quota)} left, {refill}")
