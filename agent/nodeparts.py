# SPDX-License-Identifier: Apache-2.0
"""The node's parts, built from its settings: what :class:`agent.daemon.Node` wires together.

Each builder chooses the real driver on a real node (``/config``, ``/persist``: the machine is
the node) and one that never touches the host on an emulated node (``--root``: several share a
host).  The builders make objects only: nothing connects, starts or touches the system here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.drivers.appdhcp import AppDhcpDriver
from agent.drivers.bootslots import SlotPaths
from agent.drivers.dhcpclient import DhcpClientDriver
from agent.drivers.dnsmasq import DnsmasqDriver
from agent.drivers.docker import DockerRuntime
from agent.drivers.hypervisor import HypervisorSettings
from agent.drivers.iolock import NotManaged, SysfsIoLock
from agent.drivers.libvirt import LibvirtHypervisor
from agent.drivers.metadata import MetadataServer
from agent.drivers.netlink import NetlinkDriver
from agent.drivers.netprobe import TcpProber
from agent.drivers.nflog import NflogListener
from agent.drivers.nft import LibNft, NftSettings
from agent.drivers.power import EmulatedPower, Power, SystemdPower
from agent.model.config import NodeConfig
from agent.model.configitems import ConfigItems
from agent.reconcile.firewall import DHCP_GROUP
from agent.reconcile.iolockdown import IoLockdown
from agent.reconcile.metadata import MetadataAnswers
from agent.reconcile.netplan import NetPlan
from agent.reconcile.networks import Networks
from agent.reconcile.portconfig import PortConfigurator
from agent.reconcile.portselect import PortManager, controller_target
from agent.reconcile.records import RecordBook
from agent.reconcile.switchlearn import SNAPLEN
from agent.reconcile.workloads import Workloads
from agent.reconcile.workspace import WorkloadDrivers, Workspace
from agent.settings import AgentSettings, NodePaths


def is_real(paths: NodePaths) -> bool:
    """This machine is the node (not an emulated node under ``--root``)."""
    return paths == NodePaths.from_root(None)


def make_workloads(
    settings: AgentSettings, vault_root: Callable[[], Path | None], items: Callable[[], ConfigItems]
) -> Workloads:
    """The app runtimes (connected on first use) and the vault-backed workspace."""
    name = settings.host_name
    drivers = WorkloadDrivers(
        containers=DockerRuntime(name),
        hypervisor=LibvirtHypervisor(
            # Seeds hold user data: /run is memory, never the disk.
            HypervisorSettings(
                name,
                state_dir=settings.paths.run / "domains",
                # An emulated node's bridges are in its namespace: VM taps move there.
                nic_netns=settings.netns if settings.networks else None,
            )
        ),
    )
    return Workloads(drivers, Workspace(root=vault_root, items=items))


def make_networks(
    settings: AgentSettings,
    workloads: Workloads,
    *,
    current: Callable[[], NodeConfig | None],
    layout: Callable[[], NetPlan | None],
    posted: Callable[[str, int, bytes], Awaitable[None]],
) -> Networks:
    """Bridges, app interfaces and dnsmasq in the node's namespace (root, or ``--netns``); the
    metadata server answers from the reconciler's ``current`` config and ``layout``, and hands
    what apps post to ``posted``."""
    name, netns = settings.host_name, settings.netns
    netlink = NetlinkDriver(name, netns)
    answers = MetadataAnswers(current, layout, netlink, sink=posted)
    return Networks(
        netlink,
        workloads.drivers.containers,
        RecordBook(settings.paths.persist / "status" / "net"),
        dnsmasq=DnsmasqDriver(name, settings.paths.run / "dnsmasq", netns=netns),
        nft=LibNft(NftSettings(name, netns=netns)),
        metadata=MetadataServer(answers, netns=netns, poster=answers.post),
        app_dhcp=AppDhcpDriver(settings.paths.run / "appdhcp"),
        dhcp_log=NflogListener(DHCP_GROUP, netns, copy_range=SNAPLEN),
    )


def make_ports(
    settings: AgentSettings,
    networks: Networks,
    items: Callable[[], ConfigItems],
    server: Callable[[], str | None],
) -> PortManager:
    """The ports the config names, in the networks' namespace, each new port config tested by
    reaching the controller (``server``: its address, known once the identity is)."""
    name, netns = settings.host_name, settings.netns
    state = settings.paths.persist / "status" / "net"
    dhcp = DhcpClientDriver(name, settings.paths.run / "dhcp", netns=netns)
    return PortManager(
        PortConfigurator(networks.netlink, dhcp, RecordBook(state)),
        TcpProber(netns),
        state / "portconfig.json",
        items,
        lambda: controller_target(server()),
    )


def make_iolock(paths: NodePaths) -> IoLockdown:
    """The I/O lockdown (agent.reconcile.iolockdown): this machine's USB and serial consoles
    on a real node; an emulated node shares the host's, never touches them and reports them as
    not managed."""
    driver = SysfsIoLock() if is_real(paths) else NotManaged()
    return IoLockdown(driver, RecordBook(paths.run / "iolock"))


def power_driver(paths: NodePaths) -> Power:
    """systemd on a real node; an emulated node never touches the host's power: it records the
    request and its agent stops (agent.drivers.power)."""
    return SystemdPower() if is_real(paths) else EmulatedPower(paths.run)


def slot_paths(paths: NodePaths) -> SlotPaths:
    """The real boot loader and partitions on a real node; on an emulated node a directory of
    its own that holds none, so it never reads or writes the host's."""
    if is_real(paths):
        return SlotPaths()
    boot = paths.platform / "boot"
    return SlotPaths(
        esp=boot / "esp",
        efivars=boot / "efivars",
        partitions=boot / "partitions",
        cmdline=boot / "cmdline",
        release=boot / "eve-release",
    )
