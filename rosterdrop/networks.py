"""Addresses and networks from settings (allow lists, the defender's safe list, the load
balancers in ROSTERDROP_TRUSTED_PROXIES). Imports nothing of rosterdrop: the front ends and
the web side both ask it whether a connection comes from a trusted proxy."""

import ipaddress

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> list[Network]:
    """Networks from 'IP or CIDR' entries separated by newlines, commas or spaces."""
    return [ipaddress.ip_network(item, strict=False) for item in text.replace(",", " ").split()]


def ip_in(ip: str | None, networks: list[Network]) -> bool:
    if not ip:
        return False
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped  # ::ffff:10.0.0.1 from a dual-stack socket is 10.0.0.1
    return any(addr in net for net in networks)


def trusted_proxy(ip: str | None) -> bool:
    """Whether `ip` is a load balancer whose PROXY headers and X-Forwarded-For are believed."""
    return ip_in(ip, parse_networks(settings.TRUSTED_PROXIES))
