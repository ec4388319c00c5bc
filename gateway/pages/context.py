"""State the pages keep per application (not per request): the login throttles."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.settings import Settings
from gateway.throttle import Throttle

# A whole office behind one NAT address mistypes more than one person does: the per-address
# limit is a multiple of the per-account one.
IP_LIMIT_FACTOR = 4


@dataclass(slots=True)
class PagesState:
    login_by_ip: Throttle
    login_by_account: Throttle

    @classmethod
    def from_settings(cls, settings: Settings) -> PagesState:
        limit, window = settings.login_max_failures, settings.login_window
        return cls(
            login_by_ip=Throttle(limit=limit * IP_LIMIT_FACTOR, window_seconds=window),
            login_by_account=Throttle(limit=limit, window_seconds=window),
        )


# Kept beside the pages rather than in gateway/state.py: only the pages use it.
PAGES = web.AppKey("keygate_pages", PagesState)
