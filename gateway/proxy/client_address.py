"""The client's address behind `trusted_proxies`. Pure.

The socket peer, or, when that peer is a trusted proxy, the nearest X-Forwarded-For hop that
is not itself a trusted proxy: earlier hops were written by the client and prove nothing.
An untrusted peer's X-Forwarded-For is ignored altogether (anyone can send one).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def resolve(
    values: Callable[[str], Sequence[str]], remote: str | None, trusted: Sequence[Network]
) -> str:
    """The client's address from the peer and (through trusted proxies) X-Forwarded-For."""
    peer = remote or ""
    if not trusted or not within(peer, trusted):
        return peer
    hops = [h.strip() for v in values("X-Forwarded-For") for h in v.split(",")]
    for hop in reversed(hops):
        if not within(hop, trusted):
            return hop[:64]
    return peer


def within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
