"""The user and key services every surface shares: validation, the minting rules (never
beyond the owner or the creator), authentication, and invalidation of changed keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway import passwords
from gateway.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from gateway.keys.manage import KeyService, NewKey
from gateway.policy.evaluate import Principal
from gateway.services import Services
from gateway.store.base import User

VIEW = "demo.store.canviewinvoices"
MODIFY = "demo.store.canmodifystoresettings"
REPORTS = "demo.reports.read"
LEGACY = "demo.legacy.access"
PASSWORD = "a good long password"


async def make_user(
    s: Services,
    email: str = "bob@example.com",
    grants: tuple[str, ...] = (REPORTS, f"{VIEW}:S1"),
    **flags: bool,
) -> User:
    password = None if flags.get("is_service") else PASSWORD
    return await s.users.create(
        email=email, password=password, actor="cli", grants=list(grants), **flags
    )


async def mint(s: Services, owner: User, *perms: str, **kw: object) -> NewKey:
    return await s.keys.create(
        owner=owner,
        creator=kw.pop("creator", None),  # type: ignore[arg-type]
        label=kw.pop("label", "test"),
        permissions=list(perms),
        **kw,  # type: ignore[arg-type]
    )


def invalid_paths(info: pytest.ExceptionInfo[Invalid]) -> list[str]:
    return [path for path, _ in info.value.errors]


# ---- users ------------------------------------------------------------------------------


async def test_create_user_normalises_email_and_grants(services: Services) -> None:
    """A new user keeps the trimmed email and the grants in catalog form, first seen first."""
    user = await services.users.create(
        email="  Bob@Example.com ",
        password=PASSWORD,
        actor="cli",
        grants=[f" {REPORTS.upper()} ", f"{VIEW}:S1", REPORTS],
    )
    assert user.email == "Bob@Example.com"
    assert user.grants == (REPORTS, f"{VIEW}:S1")
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in repr(user)


async def test_duplicate_email_is_a_conflict(services: Services) -> None:
    """A second account for the same mailbox, in any case, is a 409 user-exists."""
    await make_user(services, "bob@example.com")
    with pytest.raises(Conflict) as info:
        await make_user(services, "BOB@example.COM")
    assert info.value.code == "user-exists"
    assert info.value.status == 409


@pytest.mark.parametrize(
    "email", ["", "bob", "bob@", "@example.com", "bob@example", "b ob@example.com", "a@b@c.io"]
)
async def test_bad_email_is_invalid(services: Services, email: str) -> None:
    """Something that is not an email address is refused, naming the email field."""
    with pytest.raises(Invalid) as info:
        await services.users.create(email=email, password=PASSWORD, actor="cli")
    assert invalid_paths(info) == ["email"]


async def test_short_password_is_invalid(services: Services) -> None:
    """A password under the minimum length is refused before anything is stored."""
    with pytest.raises(Invalid) as info:
        await services.users.create(email="bob@example.com", password="short", actor="cli")
    assert invalid_paths(info) == ["password"]
    assert await services.store.list_users() == []


async def test_find_by_id_or_email_and_unknown_users(services: Services) -> None:
    """find takes an id or an email in any case; unknown ones are 404 user-not-found."""
    bob = await make_user(services)
    assert await services.users.find(bob.id) == bob
    assert await services.users.find("BOB@example.com") == bob
    for unknown in ("nobody@example.com", "0" * 32, "", "bob"):
        with pytest.raises(NotFound) as info:
            await services.users.find(unknown)
        assert info.value.code == "user-not-found"


async def test_grants_outside_the_catalog_are_refused(services: Services) -> None:
    """Unknown or malformed grants are 422, each named by its index, on create and on grant."""
    with pytest.raises(Invalid) as info:
        await make_user(services, grants=(REPORTS, "demo.nothing", f"{REPORTS}:S1", f"{VIEW}:"))
    assert invalid_paths(info) == ["grants[1]", "grants[2]", "grants[3]"]
    bob = await make_user(services)
    with pytest.raises(Invalid) as info:
        await services.users.grant(bob, [VIEW, "nope"], actor="cli")
    assert invalid_paths(info) == ["grants[1]"]
    assert (await services.users.find(bob.id)).grants == bob.grants


async def test_grant_and_revoke_grants(services: Services) -> None:
    """grant adds (without duplicates), revoke_grants removes."""
    bob = await make_user(services, grants=(REPORTS,))
    bob = await services.users.grant(bob, [REPORTS, f"{VIEW}:S2"], actor="cli")
    assert bob.grants == (REPORTS, f"{VIEW}:S2")
    bob = await services.users.revoke_grants(bob, [REPORTS.upper()], actor="cli")
    assert bob.grants == (f"{VIEW}:S2",)


# ---- authentication ---------------------------------------------------------------------


async def test_authenticate_with_the_right_password(services: Services) -> None:
    """The right password returns the user (email in any case); a wrong one returns None."""
    bob = await make_user(services)
    assert await services.users.authenticate("bob@example.com", PASSWORD) == bob
    assert await services.users.authenticate("Bob@Example.com", PASSWORD) == bob
    assert await services.users.authenticate("bob@example.com", PASSWORD + "x") is None
    assert await services.users.authenticate("bob@example.com", "") is None


async def test_authenticate_unknown_email_does_the_same_hashing_work(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown email returns None after an Argon2id verification against a dummy hash."""
    monkeypatch.setattr(passwords, "_DUMMY_HASH", None)
    assert await services.users.authenticate("nobody@example.com", PASSWORD) is None
    dummy = passwords._DUMMY_HASH
    assert dummy is not None
    assert dummy.startswith("$argon2id$")  # the same kind of hash a real account has
    assert await services.users.authenticate("x" * 400 + "@example.com", PASSWORD) is None


async def test_service_users_have_no_password_and_never_authenticate(services: Services) -> None:
    """A service user is created without a password and can never log in."""
    svc = await make_user(services, "robot@example.com", is_service=True)
    assert svc.is_service is True
    assert svc.password_hash is None
    assert await services.users.authenticate("robot@example.com", "") is None
    assert await services.users.authenticate("robot@example.com", PASSWORD) is None
    with pytest.raises(Invalid) as info:
        await services.users.create(
            email="robot2@example.com", password=PASSWORD, actor="cli", is_service=True
        )
    assert invalid_paths(info) == ["password"]
    with pytest.raises(Invalid):
        await services.users.set_password(svc, PASSWORD, actor="cli")


async def test_disabled_users_never_authenticate(services: Services) -> None:
    """A disabled user's right password is refused; enabling him restores it."""
    bob = await make_user(services)
    bob = await services.users.set_disabled(bob, True, actor="cli")
    assert await services.users.authenticate("bob@example.com", PASSWORD) is None
    await services.users.set_disabled(bob, False, actor="cli")
    assert await services.users.authenticate("bob@example.com", PASSWORD) is not None


async def test_set_password_replaces_the_old_one(services: Services) -> None:
    """After set_password only the new password works."""
    bob = await make_user(services)
    await services.users.set_password(bob, "a different password", actor="cli")
    assert await services.users.authenticate("bob@example.com", PASSWORD) is None
    assert await services.users.authenticate("bob@example.com", "a different password")


# ---- minting keys -----------------------------------------------------------------------


async def test_minted_key_verifies_and_stops_after_revoke(services: Services) -> None:
    """A new key verifies to its owner and permissions; after revoke it is unknown."""
    bob = await make_user(services)
    new = await mint(services, bob, REPORTS, path_rule="/api/reports")
    assert new.text not in repr(new)
    assert new.record.id in new.text
    assert new.record.key_hash == services.hasher.digest(new.text)
    verified = await services.verifier.verify(new.text)
    p = verified
    assert (p.user_id, p.key_id, p.email) == (bob.id, new.record.id, bob.email)
    assert [str(x) for x in p.key_permissions or ()] == [REPORTS]
    assert str(p.path_rule) == "/api/reports"
    await services.keys.revoke(new.record, actor=None)
    with pytest.raises(Unauthenticated) as info:
        await services.verifier.verify(new.text)
    assert info.value.code == "key-unknown"


async def test_disable_and_enable_take_effect_at_once(services: Services) -> None:
    """Disabling a cached key refuses it on the next request; enabling restores it."""
    bob = await make_user(services)
    new = await mint(services, bob, REPORTS)
    await services.verifier.verify(new.text)  # now cached in-process
    await services.keys.set_status(new.record, "disabled", actor=None)
    with pytest.raises(Unauthenticated) as info:
        await services.verifier.verify(new.text)
    assert info.value.code == "key-disabled"
    await services.keys.set_status(new.record, "active", actor=None)
    assert (await services.verifier.verify(new.text)).status == "active"


async def test_user_changes_reach_cached_keys_at_once(services: Services) -> None:
    """Disabling the owner or changing his grants shows on his cached keys immediately."""
    bob = await make_user(services)
    new = await mint(services, bob, REPORTS)
    await services.verifier.verify(new.text)
    bob = await services.users.revoke_grants(bob, [REPORTS], actor="cli")
    verified = await services.verifier.verify(new.text)
    assert REPORTS not in verified.facts.grants  # the texts; and the parsed grants:
    assert all(str(g) != REPORTS for g in verified.grants)
    await services.users.set_disabled(bob, True, actor="cli")
    with pytest.raises(Unauthenticated) as info:
        await services.verifier.verify(new.text)
    assert info.value.code == "owner-disabled"


async def test_revoke_disable_enable_call_the_invalidation_hook(services: Services) -> None:
    """Every change to a key hands exactly that key's hash to the invalidation hook."""
    calls: list[list[bytes]] = []

    async def record(digests: list[bytes]) -> None:
        calls.append(list(digests))

    keys = KeyService(
        store=services.store,
        catalog=services.policy.catalog,
        hasher=services.hasher,
        prefix=services.settings.key_prefix,
        invalidate=record,
    )
    bob = await make_user(services)
    new = await keys.create(owner=bob, creator=None, label="x", permissions=[REPORTS])
    assert calls == []  # a new key was never cached
    digest = new.record.key_hash
    await keys.set_status(new.record, "disabled", actor=None)
    await keys.set_status(new.record, "active", actor=None)
    await keys.rename(new.record, "renamed", actor=None)
    await keys.revoke(new.record, actor=None)
    assert calls == [[digest], [digest], [digest], [digest]]
    with pytest.raises(NotFound):
        await keys.revoke(new.record, actor=None)
    assert len(calls) == 4


async def test_key_permissions_outside_the_catalog_are_refused(services: Services) -> None:
    """Unknown or malformed key permissions are 422, each named permissions[i]."""
    bob = await make_user(services)
    with pytest.raises(Invalid) as info:
        await mint(services, bob, REPORTS, "demo.nothing", f"{REPORTS}:S1", "", 42)  # type: ignore[arg-type]
    assert invalid_paths(info) == [
        "permissions[1]",
        "permissions[2]",
        "permissions[3]",
        "permissions[4]",
    ]
    assert await services.keys.list_for(bob.id) == []


async def test_key_beyond_its_owner_is_forbidden(services: Services) -> None:
    """A key may not hold what its owner does not: 403 naming the missing permission."""
    bob = await make_user(services, grants=(f"{VIEW}:S1",))
    for wanted in (VIEW, f"{VIEW}:S2", MODIFY, "unrestricted", REPORTS):
        with pytest.raises(Forbidden) as info:
            await mint(services, bob, f"{VIEW}:S1", wanted)
        assert info.value.code == "missing-permission"
        assert info.value.extra["missingPermission"] == wanted
    assert await services.keys.list_for(bob.id) == []
    ok = await mint(services, bob, f"{VIEW}:S1")
    assert ok.record.permissions == (f"{VIEW}:S1",)


async def test_admin_may_mint_anything(services: Services) -> None:
    """An admin holds `unrestricted`, so any catalog permission (or unrestricted) may be minted."""
    admin = await make_user(services, "admin@example.com", grants=(), is_admin=True)
    new = await mint(services, admin, "unrestricted", MODIFY, f"{VIEW}:S9")
    assert new.record.permissions == ("unrestricted", MODIFY, f"{VIEW}:S9")


async def creator_of(s: Services, new: NewKey) -> Principal:
    return await s.verifier.verify(new.text)


async def test_a_key_cannot_mint_a_stronger_key(services: Services) -> None:
    """A key creating a key hands on only what it holds itself, even if the owner holds more."""
    bob = await make_user(services, grants=(MODIFY, REPORTS))
    parent = await mint(services, bob, f"{VIEW}:S1")
    creator = await creator_of(services, parent)
    for wanted in (f"{VIEW}:S2", VIEW, f"{MODIFY}:S1", REPORTS):
        with pytest.raises(Forbidden) as info:
            await mint(services, bob, wanted, creator=creator)
        assert info.value.code == "missing-permission"
    child = await mint(services, bob, f"{VIEW}:S1", creator=creator)
    assert child.record.permissions == (f"{VIEW}:S1",)
    audit = await services.store.list_audit(limit=1)
    assert audit[0].actor == f"key:{parent.record.id}"


async def test_a_key_cannot_mint_a_wider_path_rule(services: Services) -> None:
    """A path-limited key can only mint keys limited to within its own path."""
    bob = await make_user(services)
    parent = await mint(services, bob, REPORTS, path_rule="/api/reports")
    creator = await creator_of(services, parent)
    for wider in (None, "/", "/api", "/api/reportsX", "=/api/other"):
        with pytest.raises(Forbidden) as info:
            await mint(services, bob, REPORTS, creator=creator, path_rule=wider)
        assert info.value.code == "path-not-allowed"
    for within in ("/api/reports", "/api/reports/daily", "=/api/reports/daily"):
        new = await mint(services, bob, REPORTS, creator=creator, path_rule=within)
        assert new.record.path_rule == within


async def test_password_creator_is_limited_by_grants(services: Services) -> None:
    """A person (no key) mints within his grants; the audit names him as the actor."""
    bob = await make_user(services)
    person = Principal.of(
        user_id=bob.id,
        email=bob.email,
        grants=services.policy.catalog.parse_all(bob.grants),
        via="password",
    )
    with pytest.raises(Forbidden):
        await mint(services, bob, f"{VIEW}:S2", creator=person)
    await mint(services, bob, f"{VIEW}:S1", creator=person)
    assert (await services.store.list_audit(limit=1))[0].actor == f"user:{bob.id}"


@pytest.mark.parametrize(
    "rule", ["/a/../b", "a/x", "=", "/a%2Fb", "", "=a", "/a//b", "/a/./b", "/a?x=1", "/a#f"]
)
async def test_non_canonical_path_rules_are_refused(services: Services, rule: str) -> None:
    """A path restriction must already be canonical: anything else is 422 on `path`."""
    bob = await make_user(services)
    with pytest.raises(Invalid) as info:
        await mint(services, bob, REPORTS, path_rule=rule)
    assert invalid_paths(info) == ["path"]


@pytest.mark.parametrize(
    "label",
    ["a\x00b", "line\nbreak", "tab\there", "bell\x07", "del\x7f", "x" * 256, 42],
)
async def test_bad_labels_are_refused(services: Services, label: object) -> None:
    """Labels with control characters, over 255 characters, or not text are 422 on `label`."""
    bob = await make_user(services)
    with pytest.raises(Invalid) as info:
        await mint(services, bob, REPORTS, label=label)
    assert invalid_paths(info) == ["label"]


async def test_good_labels(services: Services) -> None:
    """A 255-character label is fine, labels are trimmed, and no label is an empty one."""
    bob = await make_user(services)
    assert (await mint(services, bob, REPORTS, label="x" * 255)).record.label == "x" * 255
    assert (await mint(services, bob, REPORTS, label="  spaced  ")).record.label == "spaced"
    assert (await mint(services, bob, REPORTS, label=None)).record.label == ""
    assert (await mint(services, bob, REPORTS, label="Ünïcode ✓")).record.label == "Ünïcode ✓"


async def test_expiry_must_be_in_the_future(services: Services) -> None:
    """An expiry in the past (or now) is 422 on `expires`; a future one is kept."""
    bob = await make_user(services)
    with pytest.raises(Invalid) as info:
        await mint(services, bob, REPORTS, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert invalid_paths(info) == ["expires"]
    later = datetime.now(UTC) + timedelta(days=30)
    new = await mint(services, bob, REPORTS, expires_at=later)
    assert new.record.expires_at == later
    assert (await services.store.get_key(new.record.id)).expires_at == later  # type: ignore[union-attr]


async def test_no_keys_for_disabled_users(services: Services) -> None:
    """Keys cannot be minted for a disabled user (403 user-disabled)."""
    bob = await services.users.set_disabled(await make_user(services), True, actor="cli")
    with pytest.raises(Forbidden) as info:
        await mint(services, bob, REPORTS)
    assert info.value.code == "user-disabled"
    assert await services.keys.list_for(bob.id) == []


async def test_service_users_own_keys(services: Services) -> None:
    """A service user cannot log in but can own a key that verifies."""
    robot = await make_user(services, "robot@example.com", grants=(REPORTS,), is_service=True)
    new = await mint(services, robot, REPORTS)
    assert (await services.verifier.verify(new.text)).user_id == robot.id


async def test_get_owned_hides_other_users_keys(services: Services) -> None:
    """Another user's key, or an unknown one, is 404 apikey-not-found (never 403)."""
    bob = await make_user(services)
    eve = await make_user(services, "eve@example.com")
    new = await mint(services, bob, REPORTS)
    assert await services.keys.get_owned(new.record.id, bob.id) == new.record
    assert await services.keys.get_owned(new.text, bob.id) == new.record  # the whole key works too
    assert await services.keys.get_owned(new.record.id, None) == new.record  # the operator
    for id_or_key, owner in (
        (new.record.id, eve.id),
        ("apk_0000000000000000", bob.id),
        ("not a key", bob.id),
    ):
        with pytest.raises(NotFound) as info:
            await services.keys.get_owned(id_or_key, owner)
        assert info.value.code == "apikey-not-found"
