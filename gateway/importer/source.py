"""What an import read from BTCPay Server, whatever the source. Pure values.

Both readers (a JSON export, BTCPay's database) produce a `Source`: rows they could not read
at all are `Problem`s; everything else is checked by the plan (`plan.py`), the same way for
both, so a malformed key is reported alike wherever it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# BTCPay's seeded store roles (its migrations StoreRoles, AddManagerAndEmployeeToStoreRoles
# and UpdateStoreOwnerRole), for databases and exports that name a role without listing its
# permissions (BTCPay before 1.10 kept only the role's name).
DEFAULT_ROLES: Mapping[str, tuple[str, ...]] = {
    "Owner": ("btcpay.store.canmodifystoresettings",),
    "Manager": (
        "btcpay.store.canviewstoresettings",
        "btcpay.store.canmodifyinvoices",
        "btcpay.store.webhooks.canmodifywebhooks",
        "btcpay.store.canmodifypaymentrequests",
        "btcpay.store.canmanagepullpayments",
        "btcpay.store.canmanagepayouts",
    ),
    "Employee": (
        "btcpay.store.canmodifyinvoices",
        "btcpay.store.canmodifypaymentrequests",
        "btcpay.store.cancreatenonapprovedpullpayments",
        "btcpay.store.canviewpayouts",
        "btcpay.store.canviewpullpayments",
    ),
    "Guest": (
        "btcpay.store.canmodifyinvoices",
        "btcpay.store.canviewpaymentrequests",
        "btcpay.store.canviewpullpayments",
        "btcpay.store.canviewpayouts",
    ),
}


@dataclass(frozen=True, slots=True)
class SourceUser:
    id: str
    email: str | None
    is_admin: bool = False  # BTCPay's ServerAdmin role
    disabled: bool = False  # locked out for good: BTCPay's "disabled"


@dataclass(frozen=True, slots=True)
class Membership:
    """A user's role on a store; `permissions` None when the role is unknown."""

    user_id: str
    store_id: str
    role: str
    permissions: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class SourceKey:
    """One API key row. `text` is the key itself: it is hashed, never shown or logged."""

    row: str  # where it was read, for the summary: "apiKeys[3]", "ApiKeys #3"
    text: str = field(repr=False)
    user_id: str | None
    label: str
    permissions: tuple[object, ...]
    application_identifier: str | None = None
    application_authority: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """A row that could not be read, and why."""

    row: str
    reason: str
    email: str | None = None  # the row's user, when known
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    description: str  # where it came from, without any password
    users: Mapping[str, SourceUser]
    store_names: Mapping[str, str]
    memberships: tuple[Membership, ...]
    keys: tuple[SourceKey, ...]
    problems: tuple[Problem, ...] = ()

    def memberships_of(self, user_id: str) -> Iterable[Membership]:
        return (m for m in self.memberships if m.user_id == user_id)
