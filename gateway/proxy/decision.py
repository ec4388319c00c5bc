"""The data plane's decision for one request: pure code, no I/O, shared by both servers.

::

    raw target ─ canonicalise ─ route ─ credential ─ key hash ─ in-process cache ─ IP ─ authorize
        │ bad: Refused(400)   │ none: Refused(404)   │ bad, missing: Refused(401)   │
                                                     │ password, or key not in memory:
                                                     └ NeedsLookup ─ (the caller's lookup) ─ resume

`decide` answers Allowed, Refused or NeedsLookup. NeedsLookup carries everything the rest of
the decision needs (the canonical target, the route match, the parsed credential and the key's
hash), so the caller's one asynchronous step (a Redis or database read, or a password check)
is followed by `resume` and nothing is extracted, canonicalised or hashed twice. Statuses come
from `gateway/errors.py`; metrics and logs are the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from gateway.credentials import Credential, PasswordCredential, extract
from gateway.errors import BadRequest, Forbidden, GatewayError, Unauthenticated, denial_error
from gateway.policy.evaluate import Denied, Principal, authorize, route_for
from gateway.policy.model import Perm, Policy, Route, RouteMatch, Upstream
from gateway.policy.networks import IP_NOT_ALLOWED_TEXT
from gateway.policy.paths import CanonicalTarget, TargetRejected, canonicalize
from gateway.records import maker

if TYPE_CHECKING:
    from gateway.keys.verify import VerifiedKey

HeaderValues = Callable[[str], Sequence[str]]
"""`values(name)`: every value of a request header, the name matched case-insensitively."""

ClientAddress = Callable[[], str]
"""`address()`: the client's address resolved through `trusted_proxies`; asked only for a key
(or owner) with an IP allow-list, so other requests never parse X-Forwarded-For."""


class KeyMemory(Protocol):
    """The in-process side of key verification (`KeyVerifier`): hashing and memory, no I/O."""

    def digest(self, text: str) -> bytes: ...

    def known(self, digest: bytes) -> VerifiedKey | None: ...


class Allowed(NamedTuple):
    """An allowed request: where it goes and as whom (a named tuple: built per request)."""

    target: CanonicalTarget
    route: Route
    upstream: Upstream
    principal: Principal | None
    # Fields for the answer: the route's rate-limit state (proxy/limiting.py), if it has limits.
    headers: Sequence[tuple[str, str]] = ()
    need: Perm | None = None  # the requirement met (least-privilege bookkeeping)


# Built per request: `Allowed(...)` without its Python-level __new__ (records.py).
_allowed: Final = maker(Allowed)


class Refused(NamedTuple):
    """A refused request: the error to answer with, its problem `instance`, the outcome it is
    counted under, the key it came with (for the log; never the key itself), and the template
    of the route it matched (None: no route matched)."""

    error: GatewayError
    instance: str | None
    outcome: str
    key_id: str | None = None
    route: str | None = None


class NeedsLookup(NamedTuple):
    """Only a lookup can finish the decision: a password to check, or a key whose record is
    not in memory. `digest` is the key's hash (None for a password). `policy` is the one the
    decision started under: a reload during the lookup does not change a request in flight."""

    policy: Policy
    method: str
    target: CanonicalTarget
    match: RouteMatch
    credential: Credential
    digest: bytes | None

    def __repr__(self) -> str:  # never the hash, nor (through the credential) the secret
        return f"NeedsLookup({self.method} {self.target.path}, {self.credential!r})"


Decision = Allowed | Refused | NeedsLookup


def decide(
    policy: Policy,
    keys: KeyMemory,
    method: str,
    raw_target: str,
    values: HeaderValues,
    address: ClientAddress,
) -> Decision:
    """The decision from the request line, the headers, the client's address and what is in
    memory."""
    try:
        target = canonicalize(raw_target)
    except TargetRejected as exc:
        return Refused(BadRequest(str(exc), code=f"bad-target-{exc.reason}"), None, "bad-target")
    match = route_for(method, target.path, policy)
    if isinstance(match, Denied):
        return Refused(denial_error(match), target.path, match.reason)
    route = match.route
    if route.auth_none:
        return _authorize(policy, target, match, None, address)
    template = route.path
    try:
        credential = extract(values("Authorization"), values("X-API-KEY"))
        if credential is None:
            raise Unauthenticated("an API key is required", code="credential-missing")
        if isinstance(credential, PasswordCredential):
            if not route.allow_passwords:
                # Refused before any password check, so such routes are no password oracle.
                raise Unauthenticated(
                    "this route accepts API keys only", code="password-not-allowed"
                )
            return NeedsLookup(policy, method, target, match, credential, None)
        digest = keys.digest(credential.key)
        found = keys.known(digest)
    except GatewayError as error:  # (not `exc`: compiled, one name holds one type)
        return Refused(error, target.path, error.code, None, template)
    if found is None:
        return NeedsLookup(policy, method, target, match, credential, digest)
    return _authorize(policy, target, match, found, address)


def resume(needs: NeedsLookup, principal: Principal, address: ClientAddress) -> Allowed | Refused:
    """The rest of the decision once the lookup named the principal, under the policy the
    decision started with."""
    return _authorize(needs.policy, needs.target, needs.match, principal, address)


def _authorize(
    policy: Policy,
    target: CanonicalTarget,
    match: RouteMatch,
    principal: Principal | None,
    address: ClientAddress,
) -> Allowed | Refused:
    # The allow-list comes first, right after the key was verified: a key used from the wrong
    # place learns nothing about routes or permissions, and consumes no limit or credit.
    rule = principal.authority.address_rule if principal is not None else None
    if rule is not None and principal is not None and not rule.allows(address()):
        error = Forbidden(IP_NOT_ALLOWED_TEXT, code="ip-not-allowed")
        return Refused(error, target.path, "ip-not-allowed", principal.key_id, match.route.path)
    verdict = authorize(principal, match, target.path, policy.catalog)
    if isinstance(verdict, Denied):
        template = match.route.path
        if principal is None:
            return Refused(denial_error(verdict), target.path, verdict.reason, None, template)
        return Refused(
            denial_error(verdict, principal.path_rule),
            target.path,
            verdict.reason,
            principal.key_id,
            template,
        )
    route = match.route
    return _allowed((target, route, policy.upstreams[route.upstream], principal, (), verdict.need))
