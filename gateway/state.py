"""Every typed application and request key, in one place."""

from __future__ import annotations

from aiohttp import web

from gateway.proxy.forward import Forwarder
from gateway.services import Services
from gateway.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)

FORWARDER = web.AppKey("forwarder", Forwarder)
