"""An in-memory :class:`~agent.drivers.dhcpclient.DhcpClient`: same names, errors and adoption
as :class:`~agent.drivers.dhcpclient.DhcpClientDriver`, no process.

A :class:`FakeDhcpNetwork` is the world around the ports: what a DHCP server would give each
one (:meth:`FakeDhcpNetwork.serve`, :meth:`~FakeDhcpNetwork.withdraw`) and the running
"clients", so a new :class:`FakeDhcpClient` on the same network adopts them as a driver made
after an agent restart does.  With a :class:`~agent.drivers.netlink_fake.FakeNetworkHost`, a
client for a port that does not exist in the namespace dies at once (TemporaryError), as
udhcpc does.  Test hooks: :meth:`FakeDhcpNetwork.crash` (a client dies), :attr:`events`
(``("start" | "stop" | "release", ifname)``).
"""

from __future__ import annotations

import itertools
import time

from agent.drivers.dhcpclient import DhcpClientState, Lease, check_port
from agent.drivers.errors import NotFoundError, TemporaryError
from agent.drivers.netlink_fake import FakeNetworkHost


class FakeDhcpNetwork:
    """Leases on offer per port and the clients running, shared by the fakes of a test."""

    def __init__(self, links: FakeNetworkHost | None = None, netns: str | None = None) -> None:
        self.links = links
        self.netns = netns
        self.offers: dict[str, Lease] = {}
        self.clients: dict[str, int] = {}
        self.events: list[tuple[str, str]] = []
        self._pids = itertools.count(50000)

    def serve(self, ifname: str, lease: Lease) -> None:
        """A server on the port's network now gives ``lease`` (obtained now when it says 0)."""
        if not lease.obtained:
            lease = Lease(lease.address, lease.routers, lease.dns, lease.lease_time, time.time())
        self.offers[ifname] = lease

    def withdraw(self, ifname: str) -> None:
        """The server is gone: the port's lease is lost."""
        self.offers.pop(ifname, None)

    def crash(self, ifname: str) -> None:
        """The port's client dies (its lease file stays as it was)."""
        self.clients.pop(ifname, None)

    def _has_link(self, ifname: str) -> bool:
        if self.links is None:
            return True
        try:
            return self.links.namespace(self.netns).get(ifname) is not None
        except NotFoundError:
            return False


class FakeDhcpClient:
    """See the module docstring."""

    def __init__(self, network: FakeDhcpNetwork, node: str) -> None:
        self.network = network
        self._node = node

    @property
    def node(self) -> str:
        return self._node

    async def ensure(self, ifname: str) -> DhcpClientState:
        check_port(ifname)
        pid = self.network.clients.get(ifname)
        if pid is not None:
            return DhcpClientState(ifname, pid)
        if not self.network._has_link(ifname):
            raise TemporaryError(
                f"the DHCP client of {ifname} exited at once (status 1): udhcpc: ioctl 0x8933 "
                "failed: No such device",
                retry_after=5,
            )
        pid = self.network.clients[ifname] = next(self.network._pids)
        self.network.events.append(("start", ifname))
        return DhcpClientState(ifname, pid, started=True)

    async def stop(self, ifname: str) -> None:
        check_port(ifname)
        if self.network.clients.pop(ifname, None) is not None:
            self.network.events.append(("stop", ifname))
            if ifname in self.network.offers:
                self.network.events.append(("release", ifname))

    async def list_owned(self) -> list[DhcpClientState]:
        return [DhcpClientState(i, p) for i, p in sorted(self.network.clients.items())]

    async def lease(self, ifname: str) -> Lease | None:
        check_port(ifname)
        if ifname not in self.network.clients:
            return None
        lease = self.network.offers.get(ifname)
        return None if lease is None or lease.expired(time.time()) else lease


__all__ = ["FakeDhcpClient", "FakeDhcpNetwork"]
