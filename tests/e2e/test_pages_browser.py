"""The hosted pages in headless Chromium: login, keys, the authorize flow, the code flow."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import requests

from gateway.pages.pkce import s256
from tests.e2e.support import PASSWORD, add_store, make_user, shot

KEY_RE = re.compile(r"apk_[0-9A-Za-z]{54}")
VERIFIER = "e2e-verifier-" + "x" * 40


def setup_alice(live: Any, grants: list[str] | None = None) -> None:
    grants = grants or ["demo.reports.read", "demo.store.canviewinvoices"]
    live.run(make_user(live.services, "alice@example.com", grants=grants))
    live.run(add_store(live.services, "S1", "Main shop"))
    live.run(add_store(live.services, "S2", "Outlet"))


def log_in(page: Any, name: str | None = None) -> None:
    """Fill the login form the browser is on and submit it."""
    page.get_by_label("Email").fill("alice@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    if name:
        shot(page, name)
    page.get_by_role("button", name="Log in").click()


def authorize_url(live: Any, *pairs: tuple[str, str]) -> str:
    return f"{live.base}/api-keys/authorize?{urlencode(pairs)}"


def keys_of(live: Any) -> list[Any]:
    alice = live.run(live.services.users.find("alice@example.com"))
    return list(live.run(live.services.keys.list_for(alice.id)))


def test_log_in_and_create_a_key_shown_once(live: Any, page: Any) -> None:
    """Log in, create a key, see it once with a copy button; the list shows it masked."""
    setup_alice(live)
    page.goto(f"{live.base}/account/api-keys")
    assert page.url.startswith(f"{live.base}/login")
    log_in(page, "01-login")
    page.wait_for_url(f"{live.base}/account/api-keys")
    shot(page, "02-keys-empty")
    page.get_by_role("link", name="Create a key").first.click()
    page.get_by_label("Label").fill("Nightly reports")
    page.get_by_label("Read reports").check()
    page.get_by_label("Limit to paths").fill("/api/reports")
    shot(page, "03-key-new")
    page.get_by_role("button", name="Create key").click()
    key_box = page.get_by_label("API key “Nightly reports”")
    key_text = key_box.input_value()
    assert KEY_RE.fullmatch(key_text)
    assert key_text not in page.url
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    shot(page, "04-key-created")
    page.get_by_role("link", name="Done, back to your keys").click()
    body = page.content()
    assert key_text not in body
    assert "Nightly reports" in body
    assert "/api/reports" in body
    shot(page, "05-keys-list")
    verified = live.run(live.services.verifier.verify(key_text))
    assert verified.email == "alice@example.com"


def test_authorize_strict_posts_the_key_to_the_application(live: Any, page: Any) -> None:
    """Logged out → login → consent → the browser POSTs apiKey/userId/permissions[] back."""
    setup_alice(live)
    callback = f"{live.callback_base}/gozo/callback"
    page.goto(
        authorize_url(
            live,
            ("applicationName", "Gozo <script>alert(1)</script>"),
            ("redirect", callback),
            ("applicationIdentifier", "gozo"),
            ("permissions", "demo.reports.read"),
        )
    )
    log_in(page)
    page.get_by_role("heading", name=re.compile("wants an API key")).wait_for()
    assert page.get_by_text("Gozo <script>alert(1)</script>").count() == 1  # shown as text
    assert live.callback_base.removeprefix("http://") in page.content()
    shot(page, "06-authorize-strict")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(callback)
    assert page.get_by_text("Gozo received the key").is_visible()
    [(path, fields)] = live.callback.posts
    assert path == "/gozo/callback"
    names = [name for name, _ in fields]
    assert names == ["apiKey", "userId", "permissions[]"]
    values = dict(fields)
    assert values["permissions[]"] == "demo.reports.read"
    verified = live.run(live.services.verifier.verify(values["apiKey"]))
    assert verified.user_id == values["userId"]


def test_handoff_works_with_scripts_off(live: Any, browser: Any) -> None:
    """Without JavaScript the hand-off page shows a button that makes the same POST."""
    setup_alice(live)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    callback = f"{live.callback_base}/noscript"
    page.goto(authorize_url(live, ("redirect", callback), ("permissions", "demo.reports.read")))
    log_in(page)
    page.get_by_role("button", name="Authorize").click()
    page.get_by_role("button", name=re.compile("Continue to")).wait_for()
    shot(page, "07-handoff-noscript")
    page.get_by_role("button", name=re.compile("Continue to")).click()
    page.wait_for_url(callback)
    assert [p for p, _ in live.callback.posts] == ["/noscript"]
    context.close()


def test_non_strict_and_store_selection(live: Any, page: Any) -> None:
    """strict=false lets the user untick a permission; selectiveStores picks the stores."""
    setup_alice(live)
    callback = f"{live.callback_base}/stores"
    page.goto(
        authorize_url(
            live,
            ("applicationName", "Shop helper"),
            ("redirect", callback),
            ("permissions", "demo.store.canviewinvoices"),
            ("permissions", "demo.reports.read"),
            ("strict", "false"),
            ("selectiveStores", "true"),
        )
    )
    log_in(page)
    page.get_by_role("group", name="Which stores?").wait_for()
    page.get_by_role("checkbox", name=re.compile("^Read reports")).uncheck()
    page.get_by_role("checkbox", name=re.compile("^Outlet")).check()
    shot(page, "08-authorize-non-strict-stores")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(callback)
    [(_, fields)] = live.callback.posts
    assert [v for n, v in fields if n == "permissions[]"] == ["demo.store.canviewinvoices:S2"]


def test_strict_request_beyond_the_users_grants_is_blocked(live: Any, page: Any) -> None:
    """A strict request for a permission the user lacks cannot be authorized."""
    setup_alice(live, ["demo.reports.read"])
    page.goto(
        authorize_url(
            live,
            ("applicationName", "Greedy app"),
            ("permissions", "demo.reports.read"),
            ("permissions", "demo.legacy.access"),
        )
    )
    log_in(page)
    page.locator("#blocked").wait_for()
    assert page.get_by_role("button", name="Authorize").is_disabled()
    shot(page, "09-authorize-blocked")


def test_reauthorize_replaces_and_cancel_creates_nothing(live: Any, page: Any) -> None:
    """The same app and origin asking again gets a replacement; cancel makes no key."""
    setup_alice(live)
    callback = f"{live.callback_base}/gozo"
    request = (
        ("applicationName", "Gozo"),
        ("redirect", callback),
        ("applicationIdentifier", "gozo"),
        ("permissions", "demo.reports.read"),
    )
    page.goto(authorize_url(live, *request))
    log_in(page)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(callback)
    old_key = dict(live.callback.posts[0][1])["apiKey"]

    page.goto(authorize_url(live, *request))
    page.locator("#existing-key").wait_for()
    shot(page, "10-authorize-replace")
    page.get_by_role("button", name="Replace the key").click()
    page.wait_for_url(callback)
    posted = dict(live.callback.posts[1][1])
    new_key = posted["apiKey"]
    assert new_key != old_key
    retired, key = keys_of(live)
    assert new_key.startswith(key.id)
    assert retired.replaced_by == key.id
    assert posted["previousKeyExpiresAt"]

    page.goto(
        authorize_url(live, ("applicationName", "Other"), ("permissions", "demo.reports.read"))
    )
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_url(f"{live.base}/account/api-keys")
    assert len(keys_of(live)) == 2


def test_code_flow_with_pkce(live: Any, page: Any) -> None:
    """response_type=code: the app gets code+state by POST and exchanges it for the key."""
    setup_alice(live)
    callback = f"{live.callback_base}/code"
    page.goto(
        authorize_url(
            live,
            ("applicationName", "Gozo"),
            ("redirect", callback),
            ("permissions", "demo.reports.read"),
            ("response_type", "code"),
            ("state", "abc123"),
            ("code_challenge", s256(VERIFIER)),
            ("code_challenge_method", "S256"),
        )
    )
    log_in(page)
    assert "one-time code" in page.content()
    shot(page, "11-authorize-code")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(callback)
    [(_, fields)] = live.callback.posts
    values = dict(fields)
    assert set(values) == {"code", "state"}
    assert values["state"] == "abc123"
    exchange = requests.post(
        f"{live.base}/api-keys/token",
        data={"code": values["code"], "code_verifier": VERIFIER},
        timeout=10,
    )
    assert exchange.status_code == 200
    body = exchange.json()
    assert body["permissions"] == ["demo.reports.read"]
    assert KEY_RE.fullmatch(body["apiKey"])
    replay = requests.post(
        f"{live.base}/api-keys/token",
        data={"code": values["code"], "code_verifier": VERIFIER},
        timeout=10,
    )
    assert replay.json()["error"] == "invalid_grant"


def test_pages_read_well_on_a_phone(live: Any, browser: Any) -> None:
    """The consent page and key list fit a phone screen (no sideways scrolling)."""
    setup_alice(live)
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(
        authorize_url(
            live,
            ("applicationName", "Gozo"),
            ("redirect", f"{live.callback_base}/cb"),
            ("permissions", "demo.store.canviewinvoices"),
            ("selectiveStores", "true"),
        )
    )
    log_in(page, "12-phone-login")
    page.get_by_role("heading", name=re.compile("wants an API key")).wait_for()
    shot(page, "13-phone-authorize")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    page.goto(f"{live.base}/account/api-keys")
    shot(page, "14-phone-keys")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    context.close()


def test_error_page_for_a_bad_redirect(live: Any, page: Any) -> None:
    """A javascript: redirect is a readable error page, and nothing runs."""
    setup_alice(live)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    response = page.goto(authorize_url(live, ("redirect", "JavaScript:alert(1)")))
    assert response is not None
    assert response.status == 400
    assert page.get_by_role("heading", name="This request cannot be used").is_visible()
    shot(page, "15-error-bad-redirect")
    assert dialogs == []
