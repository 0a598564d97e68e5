"""Is SSH open to the world? Not only 0.0.0.0/0: 0.0.0.0/1 + 128.0.0.0/1 is the world too.

A set of CIDRs opening port 22 (one rule's, or a security group's inline rules together) is public
when the public addresses it covers (private, loopback, link-local and shared ranges left out) add
up to at least a /16 (IPv4) or a /32 (IPv6): an office or a VPN is smaller than that, and splitting
the world into pieces that small takes 65,536 rules (AWS allows 60 inbound rules per group).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network

PRIVATE: list[_Net] = [
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
]
WORLD = {4: 2 ** (32 - 16), 6: 2 ** (128 - 32)}  # public addresses beyond which SSH is open to the world


def _networks(cidrs: Iterable[object]) -> list[_Net]:
    out: list[_Net] = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(str(c).strip(), strict=False))
        except ValueError:
            continue  # not a CIDR: Terraform refuses it before anything is applied
    return out


def _public_addresses(net: _Net) -> int:
    count = net.num_addresses
    for p in PRIVATE:
        if p.version != net.version:
            continue
        if net.subnet_of(p):  # type: ignore[arg-type]
            return 0
        if p.subnet_of(net):  # type: ignore[arg-type]
            count -= p.num_addresses
    return count


def public(cidrs: Iterable[object]) -> list[str]:
    """The CIDRs that open SSH to the world (empty when they do not)."""
    nets = _networks(cidrs)
    exposed: list[str] = []
    for version in (4, 6):
        mine = [n for n in nets if n.version == version and _public_addresses(n)]
        collapsed = list(ipaddress.collapse_addresses(mine))  # type: ignore[type-var]
        if sum(_public_addresses(n) for n in collapsed) > WORLD[version] - 1:
            exposed += [str(n) for n in mine]
    return exposed
