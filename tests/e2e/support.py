"""Helpers shared by the page tests (integration and browser): users, forms, login."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from gateway.services import Services
from gateway.store.base import Audit, Resource, User

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


async def make_user(
    services: Services,
    email: str = "alice@example.com",
    *,
    grants: Sequence[str] = (),
    admin: bool = False,
    service: bool = False,
) -> User:
    return await services.users.create(
        email=email,
        password=None if service else PASSWORD,
        actor="test",
        is_admin=admin,
        is_service=service,
        grants=grants,
    )


async def add_store(services: Services, store_id: str, name: str) -> None:
    await services.store.put_resource(
        Resource("store", store_id, name),
        Audit("test", "resource.put", f"resource:store/{store_id}"),
    )


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    # (name, value, checked, disabled) of every checkbox and radio
    boxes: list[tuple[str, str, bool, bool]] = field(default_factory=list)

    def value(self, name: str) -> str:
        return next(v for n, v in self.fields if n == name)

    def data(self, **changes: Any) -> list[tuple[str, str]]:
        """The fields a browser would submit (checked boxes included), with `changes`."""
        out = list(self.fields) + [(n, v) for n, v, checked, _ in self.boxes if checked]
        for name, value in changes.items():
            out = [(n, v) for n, v in out if n != name]
            values = value if isinstance(value, list) else [value]
            out += [(name, str(v)) for v in values if v is not None]
        return out


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif tag == "input" and self.forms and "name" in a:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                self.forms[-1].boxes.append(
                    (a["name"], a.get("value", "on"), "checked" in a, "disabled" in a)
                )
            elif kind not in ("submit", "button"):
                self.forms[-1].fields.append((a["name"], a.get("value", "")))


def forms(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def form(html: str, action: str) -> Form:
    found = [f for f in forms(html) if f.action == action]
    assert found, f"no form posting to {action!r} in the page"
    return found[0]


async def login(client: Any, email: str = "alice@example.com", password: str = PASSWORD) -> None:
    """Log `client` (a pytest-aiohttp TestClient) in through the login form."""
    page = await client.get("/login")
    login_form = form(await page.text(), "/login")
    response = await client.post(
        "/login",
        data=login_form.data(email=email, password=password),
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot of a Playwright page under test-output/screenshots/ (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
