"""The values of a dnsmasq instance, their rendering into dnsmasq's files, and its lease file.

Pure: no process, no system access (the driver, :mod:`agent.drivers.dnsmasq`, writes and runs).

:class:`DnsmasqConfig` is what one local network instance asks of its dnsmasq (EVE's
nireconciler ``Dnsmasq`` item: DHCP range and static hosts, DNS records, upstreams, options,
sets for host ACLs).  :func:`render` turns it into three files: the main configuration, and the
two that dnsmasq re-reads on SIGHUP (``dhcp-hostsfile``: static hosts; ``addn-hosts``: DNS
records), so that changing a host never needs a restart.

Every value comes from the controller and is hostile.  Values are validated on construction,
never escaped (dnsmasq's option syntax has no quoting that is safe for every option): host names
are RFC 1123 names (ASCII letters, digits, inner hyphens; 63 per label, 253 in all), interface
and nft names short identifiers, addresses :mod:`ipaddress` objects, paths a plain character
set, so no newline, comma, slash, ``#`` or ``=`` can reach a file through a value.  Anything
else is :class:`InvalidConfig` (a PermanentError and a ValueError) quoting the value with
``repr``; :func:`render` checks once more that every entry is one line.

:func:`parse_leases` reads dnsmasq's lease file, which dnsmasq rewrites in place: complete lines
only, anything that is not an IPv4 lease skipped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Literal, TypeVar

from agent.drivers.errors import PermanentError

IPAddress = IPv4Address | IPv6Address
_T = TypeVar("_T")
#: dnsmasq refuses shorter leases (it raises them to 2 minutes).
MIN_LEASE_TIME = 120
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_NFT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")  # as nft_api allows
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_PATH = re.compile(r"/[A-Za-z0-9_./+@-]*")


class InvalidConfig(PermanentError, ValueError):
    """A value of a :class:`DnsmasqConfig` is outside the grammar; the message quotes it with
    ``repr`` (escaped)."""


# --- configuration -------------------------------------------------------------------------------


def _name(value: object, what: str, *, single_label: bool = False) -> str:
    """``value`` as a lower-case RFC 1123 host name (one label when ``single_label``)."""
    labels = value.split(".") if isinstance(value, str) else []
    if (
        not labels
        or len(value) > 253  # type: ignore[arg-type]
        or (single_label and len(labels) != 1)
        or not all(_LABEL.fullmatch(label) for label in labels)
    ):
        kind = "a host name label" if single_label else "a host name"
        raise InvalidConfig(f"{what}: {value!r} is not {kind}")
    return str(value).lower()


def _ident(value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidConfig(f"{what}: {value!r} is not allowed")
    return value


def _ip(value: object, what: str) -> IPAddress:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(value)
    raise InvalidConfig(f"{what}: {value!r} is not an IP address")


def _v4(value: object, what: str) -> IPv4Address:
    addr = _ip(value, what)
    if not isinstance(addr, IPv4Address):
        raise InvalidConfig(f"{what}: {value!r} is not an IPv4 address")
    return addr


def safe_path(path: Path, what: str) -> Path:
    """``path`` if it is absolute and made of ``[A-Za-z0-9_./+@-]`` only, else InvalidConfig."""
    _ident(str(path), _PATH, what)
    return path


def _int(value: object, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidConfig(f"{what}: {value!r} is not an integer in [{low}, {high}]")
    return value


def _tuple(obj: object, field: str, cls: type[_T]) -> tuple[_T, ...]:
    """Set ``obj.field`` to a tuple of its items, each a ``cls``."""
    items = tuple(getattr(obj, field))
    for item in items:
        if not isinstance(item, cls):
            raise InvalidConfig(f"{field}: {item!r} is not a {cls.__name__}")
    object.__setattr__(obj, field, items)
    return items


@dataclass(frozen=True)
class StaticHost:
    """A fixed address for one MAC (``dhcp-host``), with an optional host name (one label)."""

    mac: str
    ip: IPv4Address
    hostname: str | None = None

    def __post_init__(self) -> None:
        mac = self.mac.lower().replace("-", ":") if isinstance(self.mac, str) else None
        object.__setattr__(self, "mac", _ident(mac, _MAC, "MAC address"))
        object.__setattr__(self, "ip", _v4(self.ip, "static host address"))
        if self.hostname is not None:
            hostname = _name(self.hostname, "static host name", single_label=True)
            object.__setattr__(self, "hostname", hostname)


@dataclass(frozen=True)
class HostRecord:
    """A DNS name and its addresses: an app's name, or one of the config's static entries."""

    name: str
    addresses: tuple[IPAddress, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _name(self.name, "DNS record name"))
        addresses = tuple(_ip(a, f"address of {self.name}") for a in self.addresses)
        if not addresses:
            raise InvalidConfig(f"DNS record {self.name} has no address")
        object.__setattr__(self, "addresses", addresses)


@dataclass(frozen=True)
class NftSet:
    """An nft set that dnsmasq fills with the resolved IPv``ip_version`` addresses."""

    table: str
    name: str
    family: Literal["inet", "ip", "ip6"] = "inet"
    ip_version: Literal[4, 6] = 4

    def __post_init__(self) -> None:
        _ident(self.table, _NFT_NAME, "nft table")
        _ident(self.name, _NFT_NAME, "nft set")
        if (self.family, self.ip_version) not in (("inet", 4), ("inet", 6), ("ip", 4), ("ip6", 6)):
            raise InvalidConfig(f"nft set {self.name}: {self.family!r} {self.ip_version!r}")

    @property
    def spec(self) -> str:
        """dnsmasq's form: ``4#inet#table#set``."""
        return f"{self.ip_version}#{self.family}#{self.table}#{self.name}"


@dataclass(frozen=True)
class NftsetRule:
    """Addresses of ``domain`` and its subdomains, as resolved upstream, go into ``sets``."""

    domain: str
    sets: tuple[NftSet, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", _name(self.domain, "nftset domain"))
        if not _tuple(self, "sets", NftSet):
            raise InvalidConfig(f"nftset for {self.domain} names no set")


@dataclass(frozen=True)
class Route:
    """A classless static route (DHCP option 121) through a gateway on the subnet."""

    destination: IPv4Network
    gateway: IPv4Address

    def __post_init__(self) -> None:
        if not isinstance(self.destination, IPv4Network):
            raise InvalidConfig(f"route destination {self.destination!r} is not an IPv4Network")
        object.__setattr__(self, "gateway", _v4(self.gateway, "route gateway"))


@dataclass(frozen=True)
class DnsmasqConfig:
    """What one network instance asks of its dnsmasq; validated on construction
    (:class:`InvalidConfig`).  Set-like fields are sorted when rendered, so their order never
    causes a reload; ``upstreams``, ``ntp_servers`` and ``routes`` keep theirs.

    ``default_route`` False sends an empty router option (EVE's air-gapped instances: the apps
    get no default route through the bridge).  ``routes`` (option 121) also carry the subnet as
    on-link and, with ``default_route``, the default route, as RFC 3442 makes clients ignore the
    router option when option 121 is present.
    """

    instance_id: uuid.UUID
    bridge: str
    gateway: IPv4Address
    subnet: IPv4Network
    dhcp_range: tuple[IPv4Address, IPv4Address]
    lease_time: int = 3600
    static_hosts: tuple[StaticHost, ...] = ()
    dns_records: tuple[HostRecord, ...] = ()
    upstreams: tuple[IPAddress, ...] = ()
    domain: str | None = None
    mtu: int | None = None
    routes: tuple[Route, ...] = ()
    ntp_servers: tuple[IPv4Address, ...] = ()
    nftsets: tuple[NftsetRule, ...] = ()
    default_route: bool = True

    def __post_init__(self) -> None:
        def put(field: str, value: object) -> None:
            object.__setattr__(self, field, value)

        if not isinstance(self.instance_id, uuid.UUID):
            raise InvalidConfig(f"instance id {self.instance_id!r} is not a UUID")
        _ident(self.bridge, _IFNAME, "bridge interface name")
        if not isinstance(self.subnet, IPv4Network) or self.subnet.prefixlen > 30:
            raise InvalidConfig(f"subnet {self.subnet!r} is not an IPv4 network of 4+ addresses")
        net = self.subnet

        def host(value: object, what: str) -> IPv4Address:
            addr = _v4(value, what)
            if addr not in net or addr in (net.network_address, net.broadcast_address):
                raise InvalidConfig(f"{what} {addr} is not a host address of {net}")
            return addr

        gateway = host(self.gateway, "gateway")
        put("gateway", gateway)
        start, end = (host(a, "DHCP range address") for a in self.dhcp_range)
        if start > end or start <= gateway <= end:
            raise InvalidConfig(f"DHCP range {start}-{end} is reversed or holds the gateway")
        put("dhcp_range", (start, end))
        put("lease_time", _int(self.lease_time, MIN_LEASE_TIME, 2**31 - 1, "lease time"))
        hosts = _tuple(self, "static_hosts", StaticHost)
        for static in hosts:
            if host(static.ip, f"address of {static.mac}") == gateway:
                raise InvalidConfig(f"static host {static.mac} has the gateway's address")
        for what, keys in (("MAC", [h.mac for h in hosts]), ("address", [h.ip for h in hosts])):
            if len(set(keys)) != len(keys):
                raise InvalidConfig(f"two static hosts have the same {what}")
        _tuple(self, "dns_records", HostRecord)
        upstreams = tuple(_ip(a, "upstream DNS server") for a in self.upstreams)
        if any(a.is_unspecified for a in upstreams):
            raise InvalidConfig("an upstream DNS server is unspecified (0.0.0.0 or ::)")
        put("upstreams", upstreams)
        if self.domain is not None:
            put("domain", _name(self.domain, "domain"))
        if self.mtu is not None:
            _int(self.mtu, 68, 65535, "MTU")
        for route in _tuple(self, "routes", Route):
            host(route.gateway, "route gateway")
        put("ntp_servers", tuple(_v4(a, "NTP server") for a in self.ntp_servers))
        _tuple(self, "nftsets", NftsetRule)
        if not isinstance(self.default_route, bool):
            raise InvalidConfig(f"default_route {self.default_route!r} is not a bool")


# --- rendering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsmasqPaths:
    """The files of one instance; see the module docstring."""

    dir: Path

    @classmethod
    def of(cls, run_dir: Path, instance_id: uuid.UUID) -> DnsmasqPaths:
        return cls(Path(run_dir) / str(instance_id))

    @property
    def conf(self) -> Path:
        return self.dir / "dnsmasq.conf"

    @property
    def conf_check(self) -> Path:
        """Where a new main configuration is checked (``dnsmasq --test``) before it is used."""
        return self.dir / "dnsmasq.conf.check"

    @property
    def dhcp_hosts(self) -> Path:
        return self.dir / "dhcp-hosts"

    @property
    def addn_hosts(self) -> Path:
        return self.dir / "hosts"

    @property
    def leases(self) -> Path:
        return self.dir / "leases"

    @property
    def pid(self) -> Path:
        return self.dir / "dnsmasq.pid"

    @property
    def log(self) -> Path:
        return self.dir / "dnsmasq.log"


@dataclass(frozen=True)
class RenderedFiles:
    """The text of the main configuration and of the two files re-read on SIGHUP."""

    conf: str
    dhcp_hosts: str
    addn_hosts: str


def render(config: DnsmasqConfig, paths: DnsmasqPaths, *, user: str, group: str) -> RenderedFiles:
    """The files for ``config``: pure, deterministic.  Raises InvalidConfig for a path, user or
    group outside the grammar (values of ``config`` were checked when it was made)."""
    c = config
    safe_path(paths.dir, "instance directory")
    for who in (user, group):
        _ident(who, _NFT_NAME, "user or group")
    start, end = c.dhcp_range
    lines = [
        f"# written by eve-agent for network instance {c.instance_id}: do not edit",
        "no-hosts",
        "no-resolv",
        "bind-interfaces",
        f"interface={c.bridge}",
        "except-interface=lo",
        f"user={user}",
        f"group={group}",
        f"pid-file={paths.pid}",
        f"log-facility={paths.log}",
        "quiet-dhcp",
        f"dhcp-leasefile={paths.leases}",
        f"dhcp-hostsfile={paths.dhcp_hosts}",
        f"addn-hosts={paths.addn_hosts}",
        "dhcp-authoritative",
        "no-ping",
        "domain-needed",
        "bogus-priv",
        "neg-ttl=10",
        f"dhcp-range={start},{end},{c.subnet.netmask},{c.lease_time}",
        f"dhcp-option=option:router,{c.gateway}"
        if c.default_route
        else "dhcp-option=option:router",
        f"dhcp-option=option:dns-server,{c.gateway}",
    ]
    lines += [f"server={server}" for server in c.upstreams]
    if c.domain is not None:
        lines += [f"domain={c.domain}", f"local=/{c.domain}/", "expand-hosts"]
    if c.mtu is not None:
        lines.append(f"dhcp-option=option:mtu,{c.mtu}")
    if c.ntp_servers:
        lines.append("dhcp-option=option:ntp-server," + ",".join(map(str, c.ntp_servers)))
    if c.routes:
        routes = [(c.subnet, IPv4Address(0)), *((r.destination, r.gateway) for r in c.routes)]
        if c.default_route:
            routes.append((IPv4Network("0.0.0.0/0"), c.gateway))
        pairs = ",".join(f"{dst},{gw}" for dst, gw in routes)
        lines.append(f"dhcp-option=option:classless-static-route,{pairs}")
    for rule in sorted(c.nftsets, key=lambda r: (r.domain, [s.spec for s in r.sets])):
        lines.append(f"nftset=/{rule.domain}/" + ",".join(s.spec for s in rule.sets))
    dhcp_hosts = [
        f"{h.mac},id:*,{h.ip}" + (f",{h.hostname}" if h.hostname else "")
        for h in sorted(c.static_hosts, key=lambda h: h.mac)
    ]
    records = sorted(c.dns_records, key=lambda r: (r.name, [str(a) for a in r.addresses]))
    addn_hosts = [f"{addr} {r.name}" for r in records for addr in r.addresses]
    files = RenderedFiles(
        *("".join(f"{line}\n" for line in text) for text in (lines, dhcp_hosts, addn_hosts))
    )
    for text, count in (
        (files.conf, lines),
        (files.dhcp_hosts, dhcp_hosts),
        (files.addn_hosts, addn_hosts),
    ):
        # Belt and braces: one line per entry, whatever slipped through validation.
        if text.count("\n") != len(count) or "\r" in text or "\0" in text:
            raise InvalidConfig(f"rendering network instance {c.instance_id} broke a line")
    return files


# --- leases --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """One IPv4 lease of dnsmasq's lease file.  ``hostname`` is the static host's name or what
    the client sent (None for none): one whitespace-free token, but chosen by the app, so
    untrusted.  ``expiry`` None is an infinite lease."""

    mac: str
    ip: IPv4Address
    hostname: str | None
    expiry: datetime | None


def parse_leases(data: bytes) -> list[Lease]:
    """The IPv4 leases of a lease file (``<expiry> <mac> <ip> <hostname> <client-id>``).

    Tolerant: only complete lines count (dnsmasq rewrites the file in place, so a reader may
    catch it half written), and a line that is not a well-formed IPv4 lease (DHCPv6 ``duid``
    and IA lines, garbage) is skipped.  Never raises on content.
    """
    leases = []
    for raw in data.split(b"\n")[:-1]:  # what follows the last newline is incomplete
        fields = raw.decode("ascii", "replace").split()
        if len(fields) < 4 or not fields[0].isdigit() or not _MAC.fullmatch(fields[1].lower()):
            continue
        try:
            ip = IPv4Address(fields[2])
            expiry = int(fields[0])
            when = datetime.fromtimestamp(expiry, UTC) if expiry else None
        except (ValueError, OverflowError, OSError):
            continue
        name = fields[3] if fields[3] != "*" else None
        leases.append(Lease(fields[1].lower(), ip, name, when))
    return leases


def conflicting_leases(leases: Iterable[Lease], hosts: Iterable[StaticHost]) -> list[Lease]:
    """Leases holding a static host's address for another MAC.  SIGHUP does not drop leases,
    and dnsmasq will not give a static address that another MAC holds ("not using configured
    address"): such leases are removed from the file while dnsmasq is stopped (as EVE does)."""
    owner = {h.ip: h.mac for h in hosts}
    return [lease for lease in leases if owner.get(lease.ip, lease.mac) != lease.mac]
