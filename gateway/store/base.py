"""The storage contract: domain records and the `Store` protocol both backends implement.

Exceptions::

    StoreError                  the database failed or cannot be reached
    ├── StoreUnavailable        could not connect / connection lost (readiness, 503)
    └── Conflict                a unique value already exists (duplicate email, ...)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

KeyStatus = Literal["active", "disabled"]


class StoreError(Exception):
    """A storage failure; the message never contains secrets."""


class StoreUnavailable(StoreError):
    """The database cannot be reached."""


class Conflict(StoreError):
    """A unique constraint was violated (e.g. an email that already exists)."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    password_hash: str | None = field(repr=False)
    is_admin: bool
    is_service: bool
    disabled: bool
    grants: tuple[str, ...]
    created_at: datetime
    # Networks (CIDR) the user's keys may be used from, set by administrators; None: any.
    allowed_networks: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Resource:
    type: str
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key. The key itself is never stored; `key_hash` is its keyed hash."""

    id: str  # the public key id, e.g. apk_0123456789abcdef
    key_hash: bytes = field(repr=False)
    user_id: str
    label: str
    permissions: tuple[str, ...]
    path_rule: str | None
    status: KeyStatus
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    application_identifier: str | None = None
    redirect_origin: str | None = None
    encrypted_key: bytes | None = field(default=None, repr=False)
    # Fingerprint of the hashing secret `key_hash` was made with (keys/hashing.py).
    secret_fingerprint: str | None = None
    # The format of a key imported from another server ("btcpay": 40 hex characters, no
    # checksum); None for Keygate's own keys.
    legacy: str | None = None
    # The key that replaced this one in a rotation (this one stops at `expires_at`).
    replaced_by: str | None = None
    # Networks (CIDR) the key may be used from, within the owner's; None: any.
    allowed_networks: tuple[str, ...] | None = None
    # When and where the key was reported leaked (secret scanning, `gateway keys disclose`).
    leaked_at: datetime | None = None
    leak_source: str | None = None


@dataclass(frozen=True, slots=True)
class KeyWithOwner:
    """What verifying a presented key needs, read in one query.

    `version` is the id of the key's latest invalidation record (0: none) read in the same
    snapshot: a cached copy of this record is stale once a record with a higher id exists.
    """

    key: ApiKey
    owner: User
    version: int = 0
    # From the key's quota (KeyQuota), if it has one: its own limits, and whether it spends
    # credits.
    limits: tuple[str, ...] = ()
    metered: bool = False


Refill = Literal["daily", "monthly"]
RefillMode = Literal["replace", "add"]


@dataclass(frozen=True, slots=True)
class KeyQuota:
    """A key's own rate limits (limit names from the policy) and usage credits.

    `credits` None: the key spends no credits. `period` names the refill period the balance
    belongs to (limits/credits.py); `version` grows with every administrator's change.
    """

    key_id: str
    limits: tuple[str, ...] = ()
    credits: int | None = None
    refill: Refill | None = None
    refill_amount: int = 0
    refill_mode: RefillMode = "replace"
    period: str | None = None
    version: int = 1


@dataclass(frozen=True, slots=True)
class Invalidation:
    """A change made this key's cached record stale (written with the change)."""

    id: int
    key_hash: bytes = field(repr=False)
    user_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Audit:
    """One audit record to write with a change. `detail` must never hold a key or password."""

    actor: str  # "user:<id>", "key:<key id>", "cli", "system"
    action: str  # "user.create", "key.revoke", ...
    target: str  # "user:<id>", "key:<key id>", "resource:store/S1"
    detail: Mapping[str, Any] = field(default_factory=dict)
    # Whose account the entry concerns; by default the target user, or the target key's owner.
    subject_user: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: Mapping[str, Any]
    subject_user: str | None = None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters on the audit log, newest first; `before` is the paging cursor (an entry id)."""

    actor: str | None = None
    subject_user: str | None = None
    target: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None
    limit: int = 50


# -- sessions and authorization codes (hosted pages) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser session. The cookie's token is never stored, only its keyed hash."""

    token_hash: bytes = field(repr=False)
    user_id: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """A one-time code of the authorize flow's code variant (`response_type=code`).

    Only the code's keyed hash is stored, and no key: the key is minted when the code is
    exchanged, so no plaintext key ever waits in the database.
    """

    code_hash: bytes = field(repr=False)
    user_id: str
    permissions: tuple[str, ...]
    label: str
    application_identifier: str | None
    redirect_origin: str
    code_challenge: str | None
    replace_key_id: str | None
    created_at: datetime
    expires_at: datetime


class Store(Protocol):
    """Persistence for users, grants, resources, keys and the audit log.

    Every mutating call takes the `Audit` record that describes it and writes both in one
    transaction, so the log cannot miss a change. Changes to keys and to users' keys write
    their invalidation records in that transaction too.
    """

    backend: str

    async def migrate(self) -> list[int]: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    # users
    async def create_user(self, user: User, audit: Audit) -> User: ...
    async def get_user(self, user_id: str) -> User | None: ...
    async def get_user_by_email(self, email: str) -> User | None: ...
    async def list_users(self) -> list[User]: ...
    async def update_user(
        self, user_id: str, changes: Mapping[str, Any], audit: Audit
    ) -> User | None: ...

    # resources
    async def put_resource(self, resource: Resource, audit: Audit) -> None: ...
    async def list_resources(self, type_: str | None = None) -> list[Resource]: ...
    async def delete_resource(self, type_: str, id_: str, audit: Audit) -> bool: ...

    # keys
    async def create_key(self, key: ApiKey, audit: Audit) -> None: ...
    async def find_key_by_hash(self, key_hash: bytes) -> KeyWithOwner | None: ...
    async def get_key(self, key_id: str) -> ApiKey | None: ...
    async def list_keys(self, user_id: str) -> list[ApiKey]: ...
    async def update_key(
        self, key_id: str, changes: Mapping[str, Any], audit: Audit
    ) -> ApiKey | None: ...
    async def delete_key(self, key_id: str, audit: Audit) -> ApiKey | None: ...
    async def touch_keys(self, last_used: Mapping[str, datetime]) -> None: ...
    async def replace_key(
        self, new: ApiKey, old_id: str, old_expires_at: datetime, audits: Sequence[Audit]
    ) -> ApiKey | None:
        """Rotation, in one transaction: insert `new`, make the old key stop at
        `old_expires_at` and name its successor, write its invalidation record and `audits`.
        The old key after, or None if it is gone or was already replaced."""
        ...

    # invalidation log: key and user changes above write its rows in their transaction
    async def read_invalidations(self, after: int, limit: int) -> list[Invalidation]:
        """Records with an id above `after`, by increasing id; ids commit in order."""
        ...

    async def prune_invalidations(self, before: datetime) -> int: ...

    # hashing secrets (store/sql_secrets.py)
    async def hashing_secrets(self) -> dict[str, str]:
        """Fingerprint -> "current" or "retired", for every secret this database has known."""
        ...

    async def adopt_secret(self, fingerprint: str, replaces: str | None, audit: Audit) -> None:
        """Record `fingerprint` as the current secret: the first one (`replaces` None, which
        also labels every key not yet labelled), or the successor of `replaces`. Conflict if
        another process changed the current secret meanwhile."""
        ...

    async def rehash_key(
        self, key_id: str, old_hash: bytes, new_hash: bytes, fingerprint: str, audit: Audit
    ) -> bool:
        """Replace a key's hash made with a previous secret by one made with the current
        secret `fingerprint`; False if the key changed meanwhile or `fingerprint` is not the
        database's current secret (an instance not yet rotated must not undo a rotation)."""
        ...

    async def count_keys_by_secret(self) -> dict[str | None, int]: ...

    # key quotas: own limits and credits (store/sql_quotas.py)
    async def get_quota(self, key_id: str) -> KeyQuota | None: ...
    async def set_quota(self, quota: KeyQuota, audit: Audit) -> KeyQuota:
        """Write a key's quota (its version one above the stored one) with its invalidation
        record, so every instance re-reads the key's limits."""
        ...

    async def save_balance(
        self, key_id: str, credits: int, period: str | None, version: int
    ) -> bool:
        """Write-behind of a balance counted elsewhere (Redis); False, writing nothing, when
        the stored version is not `version` (an administrator changed it since)."""
        ...

    async def spend_balance(self, key_id: str, amount: int, version: int) -> bool:
        """Take `amount` spent elsewhere (a Redis outage's fallback) off the stored balance, not
        below 0; False, writing nothing, when the stored version is not `version`."""
        ...

    # audit
    async def list_audit(
        self, limit: int = 100, target: str | None = None
    ) -> list[AuditRecord]: ...
    async def add_audit(self, audit: Audit) -> None:
        """Record an event that changes no row (e.g. a retrievable key was read back)."""
        ...

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Entries matching every filter given, newest first, at most `query.limit`."""
        ...

    async def disable_idle_keys(self, unused_before: datetime) -> list[ApiKey]:
        """Disable every active key last used (or, never used, created) before
        `unused_before`, each audited and invalidated; the keys disabled."""
        ...

    async def record_permission_use(self, uses: Iterable[tuple[str, str, datetime]]) -> None:
        """Record (key id, permission, when) uses in one batch, keeping the latest time."""
        ...

    async def permission_use(self, key_ids: Iterable[str]) -> dict[str, dict[str, datetime]]:
        """Per key id: permission -> when it last let a request through."""
        ...

    async def remember_report(self, digest: bytes, at: datetime, forget_before: datetime) -> bool:
        """Record a leak report's digest; False if it was recorded already (a replay). Digests
        older than `forget_before` are dropped first."""
        ...

    # -- sessions and authorization codes (hosted pages)
    async def create_session(self, session: Session, audit: Audit) -> None: ...
    async def get_session(self, token_hash: bytes) -> Session | None: ...
    async def delete_session(self, token_hash: bytes, audit: Audit | None = None) -> bool: ...
    async def delete_expired_sessions(self, before: datetime) -> int: ...
    async def create_authorization_code(self, code: AuthorizationCode, audit: Audit) -> None: ...
    async def consume_authorization_code(self, code_hash: bytes) -> AuthorizationCode | None:
        """Delete and return the code in one statement: of two concurrent redeemers (on any
        instance) exactly one gets it."""
        ...


USER_FIELDS = frozenset(
    {"email", "password_hash", "is_admin", "is_service", "disabled", "grants", "allowed_networks"}
)
KEY_FIELDS = frozenset(
    {
        "label",
        "permissions",
        "path_rule",
        "status",
        "expires_at",
        "allowed_networks",
        "leaked_at",
        "leak_source",
    }
)
