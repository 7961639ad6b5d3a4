"""The network-link interface: :class:`Netlink`, its values, and the naming and ownership rules
every implementation shares, so the pyroute2 driver (:mod:`agent.drivers.netlink`) and the fake
(:mod:`agent.drivers.netlink_fake`) cannot drift apart.

Names.  Everything the agent creates is named ``e<tag><kind><n>`` (:func:`link_name`): ``tag``
is six base32 characters (``a-z2-7``, 30 bits) of the SHA-256 of the node name, so emulated
nodes sharing a host have disjoint names; ``kind`` is a :class:`LinkKind` letter and ``n`` a
decimal number without leading zeros, 0 to 9999999, so a name has 9 to 15 characters (Linux's
limit).  :func:`is_ours` tells whether a name is one of this node's: the exact pattern with this
node's tag.  Common names (``eth0``, ``enp3s0f1``, ``eno16777736``) are too short or have a 0,
1, 8 or 9 among the tag's characters, which base32 never has.

Ownership.  A driver creates, changes and deletes only links named as its node's; a link under
another name is read (:meth:`Netlink.link`, :meth:`Netlink.addresses`) and, for switch
instances, enslaved to or released from one of our bridges when the caller names it
(:meth:`Netlink.set_master`; never when it is a port of a foreign bridge) and, for a port the
config names, given addresses it tracks as its own (:meth:`Netlink.ensure_port_addresses`: it
removes only those), nothing else.  An operation on a foreign name raises ``PermanentError``.
Addresses the kernel makes itself (IPv6 link-local, ``fe80::/10``) are neither reported nor
managed.  Routes the driver makes carry
the protocol number :data:`RTPROT_AGENT`; it replaces and deletes no route without it.  (Every
node on the host uses that number: nodes keep their routing tables apart.)  Inside a peer's
namespace (the container's) everything is the agent's: ``peer_ifname`` may be any name.

Errors (:mod:`agent.drivers.errors`): no such link, route or namespace -> ``NotFoundError``;
a name or route taken by another object, a foreign name, permission refused, invalid input ->
``PermanentError`` naming the object; busy -> ``TemporaryError``.  "Already gone" on delete is
success.
"""

from __future__ import annotations

import base64
import enum
import errno
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import Protocol

from agent.drivers.errors import DriverError, NotFoundError, PermanentError, TemporaryError

IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address

# --- names ---------------------------------------------------------------------------------------

IFNAMSIZ = 15
MAX_INDEX = 9_999_999
TAG_LEN = 7  # "e" + six base32 characters


class LinkKind(enum.StrEnum):
    """The letter after the node tag: what the link is for."""

    BRIDGE = "b"  # a network instance's bridge
    VIF = "v"  # the host side of an app's veth pair
    PEER = "p"  # a veth peer while it is in our namespace (before it moves to the app)


_NAME = re.compile(r"e[a-z2-7]{6}([a-z])(0|[1-9][0-9]{0,6})")
_KINDS = frozenset(k.value for k in LinkKind)


def node_tag(node: str) -> str:
    """``e`` and six base32 characters of the node name's SHA-256: this node's name prefix."""
    if not node:
        raise ValueError("node must not be empty")
    digest = hashlib.sha256(node.encode()).digest()
    return "e" + base64.b32encode(digest).decode().lower()[:6]


def link_name(node: str, kind: LinkKind, index: int) -> str:
    """The name of this node's link number ``index`` (0..:data:`MAX_INDEX`) of ``kind``."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"link index {index} out of range 0..{MAX_INDEX}")
    return f"{node_tag(node)}{LinkKind(kind).value}{index}"


def parse_name(node: str, name: str) -> tuple[LinkKind, int] | None:
    """Kind and index of one of this node's link names; None for any other name."""
    match = _NAME.fullmatch(name)
    if match is None or match.group(1) not in _KINDS or name[:TAG_LEN] != node_tag(node):
        return None
    return LinkKind(match.group(1)), int(match.group(2))


def is_ours(node: str, name: str) -> bool:
    """Whether ``name`` is one of this node's link names (see the module docstring)."""
    return parse_name(node, name) is not None


def check_ifname(name: str) -> str:
    """A name the kernel could hold (1..15 characters, no ``/``, ``:`` or space); else
    PermanentError."""
    if not 0 < len(name) <= IFNAMSIZ or name in (".", "..") or re.search(r"[/:\s]", name):
        raise PermanentError(f"invalid interface name {name!r}")
    return name


def check_ours(node: str, name: str, what: str = "link") -> str:
    """PermanentError unless ``name`` is one of this node's link names."""
    if not is_ours(node, check_ifname(name)):
        raise PermanentError(f"{what} {name!r} is not this node's (not named {node_tag(node)}*)")
    return name


def check_mac(mac: str | None) -> str | None:
    """A unicast Ethernet address as ``aa:bb:cc:dd:ee:ff`` (lower case); else PermanentError."""
    if mac is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", mac) or int(mac[:2], 16) & 1:
        raise PermanentError(f"invalid unicast MAC address {mac!r}")
    return mac.lower()


def managed(address: IPInterface) -> bool:
    """Whether the driver reports and manages the address (not an IPv6 link-local one)."""
    return not (address.version == 6 and address.ip.is_link_local)


def netns_path(netns: str) -> str:
    """A namespace name (``/run/netns/<name>``) or a path (``/proc/<pid>/ns/net``) as a path."""
    if not netns or netns in (".", ".."):
        raise PermanentError(f"invalid network namespace {netns!r}")
    return netns if "/" in netns else f"/run/netns/{netns}"


# --- errors ---------------------------------------------------------------------------------------

_NOT_FOUND = frozenset({errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL})
_PERMANENT = frozenset(
    {
        errno.EEXIST, errno.EPERM, errno.EACCES, errno.EINVAL, errno.ERANGE, errno.EOPNOTSUPP,
        errno.ENETUNREACH, errno.ELOOP, errno.ENOTDIR, errno.E2BIG, errno.EMLINK,
    }
)  # fmt: skip


def driver_error(code: int, what: str) -> DriverError:
    """The driver error for errno ``code`` while doing ``what`` (which names the object)."""
    message = f"{what}: {os.strerror(code)}"
    if code in _NOT_FOUND:
        return NotFoundError(message)
    if code in _PERMANENT:
        return PermanentError(message)
    return TemporaryError(message)


# --- values and the interface --------------------------------------------------------------------

#: The route protocol (``proto`` in ``ip route``) marking the agent's routes.
RTPROT_AGENT = 207
MAIN_TABLE = 254


@dataclass(frozen=True)
class LinkInfo:
    """One link as the kernel has it.  ``kind`` is ``bridge``, ``veth``, ``dummy``... or None
    (a physical device); ``master`` the name of its bridge; ``up`` the administrative state."""

    name: str
    ifindex: int
    kind: str | None
    mtu: int
    mac: str
    master: str | None
    addresses: tuple[IPInterface, ...]
    up: bool


@dataclass(frozen=True)
class VethInfo:
    host: LinkInfo
    #: The peer, in the peer's namespace.
    peer: LinkInfo


@dataclass(frozen=True)
class Route:
    """A route of the agent's.  ``gateway`` or ``dev`` (or both) must be given, else
    PermanentError; ``metric`` None is the kernel's default (0 for IPv4, 1024 for IPv6).
    Identity in a table: ``dst`` and ``metric``."""

    dst: IPNetwork
    gateway: IPAddress | None = None
    dev: str | None = None
    table: int = MAIN_TABLE
    metric: int | None = None

    def __post_init__(self) -> None:
        if self.gateway is None and self.dev is None:
            raise PermanentError(f"route to {self.dst}: needs a gateway or a device")
        if self.gateway is not None and self.gateway.version != self.dst.version:
            raise PermanentError(f"route to {self.dst}: gateway {self.gateway} of another family")


def default_metric(version: int) -> int:
    return 1024 if version == 6 else 0


class Netlink(Protocol):
    """One node's links in one network namespace; see the module docstring."""

    @property
    def node(self) -> str: ...

    @property
    def netns(self) -> str | None:
        """The namespace the driver works in (a name or a path); None: the process's own."""
        ...

    def name(self, kind: LinkKind, index: int) -> str:
        """This node's link name (:func:`link_name`)."""
        ...

    def is_ours(self, name: str) -> bool: ...

    async def ensure_bridge(
        self,
        name: str,
        *,
        mtu: int | None = None,
        mac: str | None = None,
        addresses: Sequence[IPInterface] = (),
        up: bool = True,
    ) -> LinkInfo:
        """Create the bridge if missing and make MTU and MAC (None: leave them; a bridge without
        a MAC of its own takes its ports' and changes as they come and go), addresses (exactly
        these, link-local aside) and state match.  Idempotent.  PermanentError when the name
        is not ours or is taken by a link of another kind."""
        ...

    async def delete_link(self, name: str) -> None:
        """Delete our link (a veth pair goes as a whole).  Gone already: success."""
        ...

    async def set_master(self, link: str, bridge: str | None) -> None:
        """Enslave ``link`` (any link, named explicitly) to our ``bridge``, or release it from
        ours (None).  Idempotent.  NotFoundError when either is missing; PermanentError when
        ``bridge`` is not ours or not a bridge, or ``link`` is a port of a foreign bridge."""
        ...

    async def link(self, name: str) -> LinkInfo | None:
        """Any link by name, None when there is none."""
        ...

    async def list_owned(self) -> list[LinkInfo]:
        """This node's links in the namespace, by name; nothing else."""
        ...

    async def addresses(self, ifname: str) -> tuple[IPInterface, ...]:
        """Any link's addresses (link-local aside).  NotFoundError when it is missing."""
        ...

    async def ensure_veth(
        self,
        host_name: str,
        peer_name: str,
        *,
        bridge: str | None = None,
        mac: str | None = None,
        peer_netns: str | None = None,
        peer_ifname: str = "eth0",
        peer_addresses: Sequence[IPInterface] = (),
        peer_routes: Sequence[tuple[IPNetwork, IPAddress | None]] = (),
        mtu: int | None = None,
    ) -> VethInfo:
        """The veth pair ``host_name``/``peer_name``: host side enslaved to ``bridge`` and up;
        peer moved into ``peer_netns`` (a namespace name or path, e.g. ``/proc/<pid>/ns/net``)
        and renamed ``peer_ifname`` there (without ``peer_netns`` it stays here as
        ``peer_name``), with MAC ``mac`` (None: the kernel's), exactly ``peer_addresses`` and
        ``peer_routes`` (``(dst, gateway or None)``, via the peer, protocol
        :data:`RTPROT_AGENT`), up; ``mtu`` on both sides.  Idempotent: a pair in place changes
        only where it differs; a host side whose peer went elsewhere is recreated.
        NotFoundError when the namespace (the container) or the bridge is gone; PermanentError
        for names not ours or ``peer_ifname`` taken by another link in the namespace."""
        ...

    async def ensure_route(self, route: Route) -> None:
        """Add or replace our route (same table, dst and metric).  Idempotent.  PermanentError
        when a route of another protocol holds that place; NotFoundError for a missing
        ``dev``."""
        ...

    async def delete_route(self, route: Route) -> None:
        """Delete our route at ``route``'s table, dst and metric.  Gone: success; a route of
        another protocol there: PermanentError."""
        ...

    async def routes(self, table: int | None = None) -> list[Route]:
        """Our routes (protocol :data:`RTPROT_AGENT`), of one table or all."""
        ...

    async def set_forwarding(self, ifname: str, on: bool, *, port: bool = False) -> None:
        """IPv4 forwarding on our link (``net.ipv4.conf.<if>.forwarding`` in this namespace),
        or, with ``port``, on a port the config names explicitly (a local instance NATs out of
        it: the replies come in there).  Idempotent.  NotFoundError when the link is
        missing."""
        ...

    async def forwarding(self, ifname: str) -> bool:
        """Any link's IPv4 forwarding flag.  NotFoundError when the link is missing."""
        ...

    async def ensure_port_addresses(
        self,
        ifname: str,
        addresses: Sequence[IPInterface],
        *,
        owned: Sequence[IPInterface] = (),
        mtu: int | None = None,
    ) -> tuple[IPInterface, ...]:
        """On a port the config names explicitly (any link but this node's own): the link up,
        its MTU (None: leave it), ``addresses`` present, and those of ``owned`` (what the agent
        set there before) that ``addresses`` no longer names removed.  An address not in
        ``owned`` is never removed, so what the operating system or an operator set stays.
        Returns what the agent owns there now: the wanted addresses it added, and those of
        ``owned`` still wanted and present.  Idempotent.  NotFoundError when the link is
        missing; PermanentError for one of this node's own links or an address the kernel
        refuses.  (Routes through a port are :meth:`ensure_route` with ``dev`` the port.)"""
        ...

    async def set_proxy_arp(self, ifname: str, on: bool, *, port: bool = False) -> None:
        """Proxy ARP on our link (``net.ipv4.conf.<if>.proxy_arp``: the link answers ARP for
        addresses routed through another link), or, with ``port``, on a port the config names.
        Idempotent.  NotFoundError when the link is missing."""
        ...

    async def proxy_arp(self, ifname: str) -> bool:
        """Any link's proxy ARP flag.  NotFoundError when the link is missing."""
        ...

    async def ensure_bridge_filtering(self) -> bool:
        """Bridged IPv4 and IPv6 pass the IP hooks of this namespace (``net.bridge.bridge-nf-
        call-iptables`` and ``-ip6tables``), so the firewall sees app-to-app traffic on one
        bridge, and a switch instance's IPv6 meets its apps' chains.  Idempotent.  False when
        the kernel has no bridge netfilter (then nothing changes)."""
        ...

    async def close(self) -> None: ...


class Naming:
    """The naming part of :class:`Netlink`, shared by the driver and the fake."""

    _node: str
    _netns: str | None

    @property
    def node(self) -> str:
        return self._node

    @property
    def netns(self) -> str | None:
        return self._netns

    def name(self, kind: LinkKind, index: int) -> str:
        return link_name(self._node, kind, index)

    def is_ours(self, name: str) -> bool:
        return is_ours(self._node, name)
