"""The SSRF guard: outbound calls go only to public addresses, or to what the operator allows.

Two hooks in the aiohttp session under ``HttpClient`` apply it, so the address that is checked
is the address that is connected to (no second lookup, no DNS rebinding window):

- ``VettingResolver`` resolves a host name, drops every address the policy refuses and hands
  aiohttp only the rest; aiohttp connects to exactly those (TLS SNI and ``Host`` keep the name).
- ``EgressPolicy.check_url`` runs before each request for what never reaches a resolver:
  the scheme, and IP literals (aiohttp connects to those without a lookup).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https"})

#: The longest host name DNS can carry (RFC 1035: 255 octets on the wire). A longer one is
#: refused before any lookup: it cannot resolve, and it was longer than the circuit
#: breaker's key column on PostgreSQL (its failures were never recorded there).
MAX_HOST_NAME = 253

#: Instance metadata services: the credentials of the host's cloud role sit behind them.
#: AWS/GCP/Azure 169.254.169.254 (and AWS's IPv6 fd00:ec2::254), Alibaba 100.100.100.200,
#: Oracle 192.0.0.192. All are refused anyway; the reason just says what they are.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)

# Ranges the stdlib's flags miss or (before Python 3.12.4/3.11.10) misjudge, by reason.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.0.0.0 to itself
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
_PROTOCOL_ASSIGNMENTS = ipaddress.ip_network("192.0.0.0/24")  # RFC 6890
_DOCUMENTATION = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the low 32 bits are the IPv4 target
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d

_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_-]+)*$")


class EgressRefused(Exception):
    """An outbound call the SSRF guard refused: a step error, never worth retrying.

    Deliberately not an ``OSError`` or ``aiohttp.ClientError``: raised inside aiohttp's
    resolver, it reaches ``HttpClient.send``'s caller as it is, not as a connection error.
    """

    code = "egress_refused"

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} {reason}")
        self.host = host
        self.reason = reason


def classify(address: IPAddress) -> str | None:
    """Why a connection to ``address`` is refused (``"loopback"``...), or ``None`` if public.

    IPv6 forms that wrap an IPv4 address (mapped, NAT64, 6to4) are judged by that address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        wrapped, how = _unwrap(address)
        if wrapped is not None:
            reason = classify(wrapped)
            return f"{reason}, {how} {wrapped}" if reason else None
        if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: or ::1
            return "deprecated IPv4-compatible IPv6"
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_unspecified or address in _THIS_NETWORK:
        return "unspecified"
    for flag, reason in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
    ):
        if flag:
            return reason
    if address in _SHARED:
        return "shared address space, carrier-grade NAT"
    if any(address in net for net in _DOCUMENTATION):
        return "documentation range"
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    if address in _PROTOCOL_ASSIGNMENTS:
        return "IETF protocol assignment"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_reserved:  # before is_private, which includes 240.0.0.0/4
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally routable"
    return None


def _unwrap(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64 of"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4 of"
    return None, ""


def parse_allow(entries: Iterable[str]) -> tuple[tuple[IPNetwork, ...], frozenset[str]]:
    """``IPAAS_EGRESS_ALLOW`` entries as (networks, host names); ``ValueError`` names a bad one.

    A bare address is a one-address network; host names match case-insensitively, with or
    without a trailing dot, and only themselves (no subdomains).
    """
    networks: list[IPNetwork] = []
    names: set[str] = set()
    for raw in entries:
        entry = raw.strip()
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = _normalise_name(entry)
        if not _HOST_NAME.match(name) or name.replace(".", "").isdigit():
            msg = f"egress allow entry {raw!r} is neither a CIDR, an address nor a host name"
            raise ValueError(msg)
        names.add(name)
    return tuple(networks), frozenset(names)


def _normalise_name(host: str) -> str:
    return host.lower().rstrip(".")


def literal_address(host: str) -> IPAddress | None:
    """The address an IP-literal host means, or ``None`` for a host name.

    ``ValueError`` for a numeric host that is no valid address. Covers every host aiohttp
    would connect to without a lookup (it treats a host with a colon, or of digits and dots,
    as an address), so none bypasses ``VettingResolver``.
    """
    if ":" in host:
        # yarl keeps a zone id percent-encoded (``fe80::1%25eth0``); the zone does not matter.
        return ipaddress.IPv6Address(host.split("%", 1)[0])
    if not host.replace(".", "").isdigit():
        return None
    return ipaddress.IPv4Address(host)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which destinations outbound calls may reach. The default refuses every non-public one."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_names: frozenset[str] = frozenset()

    @classmethod
    def from_allow(cls, entries: Iterable[str]) -> EgressPolicy:
        networks, names = parse_allow(entries)
        return cls(allowed_networks=networks, allowed_names=names)

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or ``None`` when it may be connected to."""
        reason = classify(address)
        if reason is None or self._allowed(address):
            return None
        return reason

    def _allowed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in net for a in candidates for net in self.allowed_networks)

    def allows_name(self, host: str) -> bool:
        return bool(self.allowed_names) and _normalise_name(host) in self.allowed_names

    def check_url(self, url: str | URL) -> None:
        """Refuse a non-http(s) scheme or a refused IP-literal host before any connection.

        ``url`` is parsed the way aiohttp will parse it (or is aiohttp's own ``URL``), so the
        host checked here is the host aiohttp connects to. The verdict depends on nothing
        else, so it is remembered per policy and URL (webhook and API URLs repeat).
        """
        refused = _refusal_of(self, url)
        if refused is not None:
            raise EgressRefused(*refused)

    def url_refusal(self, url: str | URL) -> tuple[str, str] | None:
        """What ``check_url`` refuses in ``url`` and why, or ``None`` (not cached)."""
        parsed = url if isinstance(url, URL) else URL(url)
        scheme = parsed.scheme.lower()
        host = parsed.raw_host or ""
        if scheme not in SCHEMES:
            return host or str(url), f"uses the scheme {scheme!r}; only http(s) is allowed"
        if not host:
            return str(url), "has no host"
        try:
            address = literal_address(host)
        except ValueError:
            return host, _odd_literal(host)
        if address is None:
            if len(host) > MAX_HOST_NAME:
                return f"{host[:40]}...", f"is longer than DNS allows ({MAX_HOST_NAME} characters)"
            return None  # a host name: VettingResolver checks what it resolves to
        reason = self.refusal(address)
        if reason is not None:
            return host, f"is not a public address ({reason})"
        return None

    def vet(self, host: str, results: list[ResolveResult]) -> list[ResolveResult]:
        """The resolved addresses of ``host`` a connection may use; ``EgressRefused`` if none."""
        if self.allows_name(host):
            return results
        vetted: list[ResolveResult] = []
        refused: list[str] = []
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            reason = self.refusal(address)
            if reason is None:
                vetted.append(result)
            else:
                refused.append(f"{address} ({reason})")
        if not vetted:
            raise EgressRefused(host, f"resolves to {', '.join(refused) or 'no address'}")
        return vetted


@functools.lru_cache(maxsize=1024)
def _refusal_of(policy: EgressPolicy, url: str | URL) -> tuple[str, str] | None:
    """``EgressPolicy.check_url``'s verdict: ``(what, why)`` when refused, else ``None``."""
    return policy.url_refusal(url)


def _odd_literal(host: str) -> str:
    """Why a numeric host that is not a canonical address is refused. The OS would read
    ``127.1``, ``2130706433`` or ``0177.0.0.1`` as an address (``inet_aton``); say which."""
    try:
        meant = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return "is not a valid IP address"
    reason = classify(meant)
    suffix = f" ({reason})" if reason else ""
    return f"resolves to {meant}{suffix}; write IPv4 addresses as four decimal numbers"


class VettingResolver(AbstractResolver):
    """aiohttp resolver that returns only the addresses ``policy`` allows."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        # Created inside the running loop: aiohttp builds the session lazily, on first use.
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return self.policy.vet(host, await self._inner.resolve(host, port, family))

    async def close(self) -> None:
        await self._inner.close()
