"""IP allow-lists, pure: parsing CIDR lists, the owner's bound, and address matching."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.networks import MAX_NETWORKS, AddressRule, NetworkError, outside, parse_networks
from gateway.proxy.client_address import resolve


def test_lists_are_canonical_and_deduplicated() -> None:
    """Host bits are cleared, duplicates dropped, IPv4 and IPv6 both taken."""
    assert parse_networks([" 192.0.2.7/24", "192.0.2.0/24", "2001:DB8::1/32", "198.51.100.4"]) == (
        "192.0.2.0/24",
        "2001:db8::/32",
        "198.51.100.4/32",
    )


@pytest.mark.parametrize("bad", [["not-an-ip"], ["192.0.2.0/33"], [7], [""], ["10.0.0.0/8"] * 65])
def test_bad_lists_are_refused_with_a_sentence(bad: list[object]) -> None:
    """Anything but IP addresses and networks, or too many, is a NetworkError."""
    with pytest.raises(NetworkError):
        parse_networks(bad if len(bad) <= MAX_NETWORKS else [f"10.0.{i}.0/24" for i in range(65)])


def test_the_owner_list_bounds_the_keys() -> None:
    """A key's network must lie inside one of the owner's (same family); no owner list: any."""
    owner = ("192.0.2.0/24", "2001:db8::/32")
    assert outside(("192.0.2.128/25", "2001:db8:1::/48"), owner) == ()
    assert outside(("192.0.0.0/16", "198.51.100.0/24", "::/0"), owner) == (
        "192.0.0.0/16",
        "198.51.100.0/24",
        "::/0",
    )
    assert outside(("0.0.0.0/0",), None) == ()


def test_a_rule_without_lists_is_none_and_mapped_addresses_match() -> None:
    """No list at all: no rule. An IPv4-mapped IPv6 peer matches its IPv4 network."""
    assert AddressRule.of(None, None) is None
    rule = AddressRule.of(("192.0.2.0/24",), None)
    assert rule is not None
    assert rule.allows("::ffff:192.0.2.9")
    assert not rule.allows("")
    assert not rule.allows("garbage")


@given(st.ip_addresses(v=4), st.integers(min_value=0, max_value=32))
def test_an_address_is_allowed_exactly_inside_its_network(
    ip: ipaddress.IPv4Address, bits: int
) -> None:
    """The rule agrees with ipaddress's own membership, for any network around an address."""
    net = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
    rule = AddressRule.of((str(net),))
    assert rule is not None
    assert rule.allows(str(ip))
    other = ipaddress.ip_address((int(ip) + 2**32 // 2) % 2**32)
    assert rule.allows(str(other)) == (other in net)


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def values(forwarded: str | None):  # type: ignore[no-untyped-def]
    return lambda name: (forwarded,) if forwarded and name == "X-Forwarded-For" else ()


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.0.0.5", "203.0.113.9", "203.0.113.9"),  # behind a trusted proxy
        ("10.0.0.5", "198.51.100.1, 203.0.113.9, 10.0.0.4", "203.0.113.9"),  # nearest untrusted
        ("198.51.100.7", "203.0.113.9", "198.51.100.7"),  # spoofed by an untrusted peer
        ("10.0.0.5", None, "10.0.0.5"),
    ],
)
def test_the_client_address_trusts_only_trusted_proxies(
    peer: str, forwarded: str | None, client: str
) -> None:
    """X-Forwarded-For counts only when the peer is a trusted proxy, and then its nearest
    hop that is not one."""
    assert resolve(values(forwarded), peer, TRUSTED) == client
