"""An in-memory :class:`~agent.drivers.appdhcp.AppDhcp`: the same checks and errors as
:class:`~agent.drivers.appdhcp.AppDhcpDriver`, no process.

:attr:`FakeAppDhcp.offers` is what the server behind each app interface (by ``key``, the host-side
name) gives; :attr:`FakeAppDhcp.calls` records every exchange as ``(key, netns, ifname,
requested, hostname)``; :attr:`FakeAppDhcp.fail` makes the next exchanges of a key raise.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address

from agent.drivers.appdhcp import check_request
from agent.drivers.dhcpclient import Lease
from agent.drivers.errors import DriverError


class FakeAppDhcp:
    """See the module docstring."""

    def __init__(self) -> None:
        self.offers: dict[str, Lease] = {}
        self.calls: list[tuple[str, str, str, IPv4Address | None, str]] = []
        self.fail: dict[str, DriverError] = {}
        self.forgotten: list[str] = []

    def serve(self, key: str, lease: Lease) -> None:
        """The server now gives ``lease`` (obtained at each exchange when it says 0)."""
        self.offers[key] = lease

    async def acquire(
        self,
        key: str,
        netns: str,
        ifname: str,
        *,
        requested: IPv4Address | None = None,
        hostname: str = "",
    ) -> Lease | None:
        check_request(key, netns, ifname, hostname)
        self.calls.append((key, netns, ifname, requested, hostname))
        error = self.fail.get(key)
        if error is not None:
            raise error
        lease = self.offers.get(key)
        if lease is None:
            return None
        obtained = lease.obtained or time.time()
        return Lease(lease.address, lease.routers, lease.dns, lease.lease_time, obtained)

    async def forget(self, key: str) -> None:
        self.forgotten.append(key)


__all__ = ["FakeAppDhcp"]
