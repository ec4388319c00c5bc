"""IP allow-lists: which client addresses a key (and its owner) may be used from. Pure.

A key may carry a list of networks (CIDR, IPv4 or IPv6); its owner may carry one too, set by
administrators, which bounds every key of his: a key's networks must each lie inside one of
the owner's, and at request time the client address must be in both lists (so narrowing the
owner's list later narrows every key at once, and no key ever widens its owner). No list
means any address.

The address checked is the client's as resolved through `trusted_proxies` (the peer, or the
nearest X-Forwarded-For hop that is not a trusted proxy), never a header an untrusted peer
sent.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_NETWORKS = 64
# Names nothing about the lists: a caller from outside learns only that this is the reason.
IP_NOT_ALLOWED_TEXT = "this API key may not be used from this address"


class NetworkError(ValueError):
    """A network list that cannot be used; the message says which entry and why."""


def parse_networks(raws: Sequence[object]) -> tuple[str, ...]:
    """Canonical CIDR texts (host bits cleared, duplicates dropped, first seen first)."""
    if not raws:
        raise NetworkError("name at least one network (no list at all means any address)")
    if len(raws) > MAX_NETWORKS:
        raise NetworkError(f"at most {MAX_NETWORKS} networks")
    out: dict[str, None] = {}
    for raw in raws:
        if not isinstance(raw, str):
            raise NetworkError("a network must be a string such as 203.0.113.0/24")
        try:
            net = ipaddress.ip_network(raw.strip(), strict=False)
        except ValueError:
            raise NetworkError(
                f"{raw[:60]!r} is not an IP address or network (e.g. 203.0.113.0/24, 2001:db8::/32)"
            ) from None
        out.setdefault(str(net), None)
    return tuple(out)


def outside(networks: Iterable[str], bound: Iterable[str] | None) -> tuple[str, ...]:
    """The networks of `networks` not inside any network of `bound` (None: no bound)."""
    if bound is None:
        return ()
    limits = [ipaddress.ip_network(b) for b in bound]
    beyond = []
    for text in networks:
        net = ipaddress.ip_network(text)
        if not any(net.version == lim.version and net.subnet_of(lim) for lim in limits):  # type: ignore[arg-type]
            beyond.append(text)
    return tuple(beyond)


@dataclass(frozen=True, slots=True)
class AddressRule:
    """Every list the client address must be in (the key's, the owner's)."""

    lists: tuple[tuple[Network, ...], ...]

    @classmethod
    def of(cls, *lists: Sequence[str] | None) -> AddressRule | None:
        """The rule for these lists (None entries: no list); None when nothing restricts."""
        present = tuple(_compiled(tuple(lst)) for lst in lists if lst is not None)
        return cls(present) if present else None

    def allows(self, address: str) -> bool:
        ip = _address(address)
        if ip is None:
            return False  # an address we cannot read is never inside a list
        return all(any(ip in net for net in lst) for lst in self.lists)


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The parsed address (cached: the same clients call again and again), or None."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:203.0.113.5 from a dual-stack socket is 203.0.113.5
    return ip


@functools.lru_cache(maxsize=1024)
def _compiled(texts: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)
