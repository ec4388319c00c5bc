"""The pages people see: login, account API keys, the authorize consent flow.

Templates live in `gateway/templates/` and assets in `gateway/static/` (package data, so an
installed wheel has them); assets are served under `/_keygate/static/`, away from paths an
upstream is likely to use.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.pages import account, authorize, codes, lifecycle, login
from gateway.pages.render import STATIC_PREFIX, page

PACKAGE = Path(__file__).resolve().parent.parent


def setup(app: web.Application) -> None:
    """Register the page routes (before the data plane's catch-all)."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("gateway", "templates"),
        # Every template is HTML: escape everything, whatever the file name.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    r = app.router
    r.add_get(login.LOGIN_PATH, page(login.login_form))
    r.add_post(login.LOGIN_PATH, page(login.login_submit))
    r.add_post(login.LOGOUT_PATH, page(login.logout))
    r.add_get(account.KEYS_PATH, page(account.list_keys))
    r.add_post(account.KEYS_PATH, page(account.create_key))
    r.add_get(account.NEW_PATH, page(account.new_key_form))
    r.add_post(account.KEYS_PATH + "/{key_id}/status", page(account.set_status))
    r.add_get(account.KEYS_PATH + "/{key_id}/delete", page(account.confirm_delete))
    r.add_post(account.KEYS_PATH + "/{key_id}/delete", page(account.delete_key))
    r.add_post(account.KEYS_PATH + "/{key_id}/rotate", page(lifecycle.rotate_key))
    r.add_post(account.KEYS_PATH + "/{key_id}/networks", page(lifecycle.set_networks))
    r.add_get(lifecycle.ACTIVITY_PATH, page(lifecycle.activity))
    r.add_get(authorize.AUTHORIZE_PATH, page(authorize.authorize_page))
    r.add_post(authorize.AUTHORIZE_PATH, page(authorize.authorize_submit))
    r.add_post(codes.TOKEN_PATH, codes.token)
    r.add_static(STATIC_PREFIX, PACKAGE / "static", append_version=False)
