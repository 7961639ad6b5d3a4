"""The firewall's tables read back from the kernel exactly as rendered (root, a namespace of its
own): a restarted agent compares what it finds with what it wants, chain by chain, so a rule
written in a form libnftables lists differently would be replaced on every start instead of
adopted.  Every construct the app firewall and the node firewall use is here: addresses and
prefixes (IPv4 and IPv6), host sets, protocols with and without ports, DROP and LIMIT with
their logging, PORTMAP (ingress and DNAT, open to all or to one source), EVE's match-all ACE,
NAT, the verdict maps (by address, and by MAC for switch instances' chains both ways), the
node's port and app input chains."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import pytest

from agent.drivers.nft import LibNft, NftSettings
from agent.model.acl import Ace, AceAction, AceMatch
from agent.model.ports import Port, instance_addressing
from agent.reconcile import firewall, nodefirewall
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan, NiPlan, VifPlan
from tests.integration.prereqs import netns_missing

UP = Port("up0", "up0", True, True, 0, ("all", "uplink"), "client")
APPS = [f"6d3b3b4e-8a3c-4c47-9d41-00000000f00{n}" for n in range(3)]


def _plan() -> NetPlan:
    addressing = instance_addressing("10.90.0.0/24", "10.90.0.1", "10.90.0.10", "10.90.0.99")
    plan = NetPlan(ports={"up0": UP})
    plan.instances["ni"] = NiPlan("ni", "lan", LOCAL, "erb0", addressing, (UP,), "uplink",
                                  (), (), 0)  # fmt: skip
    m = AceMatch
    acls = (
        Ace(1, "", 0, (m("ip", "192.0.2.0/24"), m("protocol", "tcp"), m("fport", "443")), ()),
        Ace(2, "", 0, (m("ip", "198.51.100.7"), m("protocol", "udp"), m("lport", "5000"),
                       m("fport", "53")), ()),
        Ace(3, "", 0, (m("host", "*.example.com"), m("protocol", "tcp")), ()),
        Ace(4, "", 0, (m("protocol", "icmp"),), (AceAction(drop=True),)),
        Ace(5, "", 0, (m("ip", "203.0.113.0/24"),),
            (AceAction(limit=True, limit_rate=10, limit_unit="minute", limit_burst=5),)),
        Ace(6, "", 0, (m("protocol", "tcp"), m("lport", "8022"), m("adapter", "uplink")),
            (AceAction(portmap=True, app_port=80),)),
        Ace(7, "", 0, (m("protocol", "sctp"), m("fport", "9")), ()),
        # IPv6 remotes (ip6 matches), a portmap open to one network's port only, and EVE's
        # match-all ACE last.
        Ace(8, "", 0, (m("ip", "2001:db8::/32"), m("protocol", "tcp"), m("fport", "443")), ()),
        Ace(9, "", 0, (m("ip", "2001:db8::7/128"),), (AceAction(drop=True),)),
        Ace(10, "", 0, (m("ip", "198.51.100.0/24"), m("protocol", "udp"), m("fport", "4000"),
                        m("lport", "5353")), (AceAction(portmap=True, app_port=53),)),
        Ace(11, "", 0, (), ()),
        # Protocols by their /etc/protocols names (listed back by name), and "all".
        Ace(12, "", 0, (m("protocol", "gre"),), ()),
        Ace(13, "", 0, (m("protocol", "esp"), m("ip", "192.0.2.99")), (AceAction(drop=True),)),
        Ace(14, "", 0, (m("protocol", "all"), m("ip", "192.0.2.98")), ()),
    )  # fmt: skip
    for n, app in enumerate(APPS):
        plan.vifs[(app, 0)] = VifPlan(app, 0, "ni", f"erv{n}", f"02:00:00:00:00:0{n}",
                                      f"10.90.0.{20 + n}", f"app{n}", acls)  # fmt: skip
    # A switch instance: chains by MAC, both ways (no host matches nor PORTMAP there).
    plan.instances["sw"] = NiPlan("sw", "sw", SWITCH, "erb1", None, (), "", (), (), 0)
    switched = tuple(a for a in acls if a.id not in (3, 6, 10))
    for n, app in enumerate(APPS[:2]):
        plan.vifs[(app, 1)] = VifPlan(app, 1, "sw", f"erw{n}", f"02:00:00:00:01:0{n}", "",
                                      f"app{n}", switched)  # fmt: skip
    # An air-gapped instance: its apps' peer entries are a bare accept (no ingress ACL).
    island = instance_addressing("10.91.0.0/24", "10.91.0.1", "10.91.0.10", "10.91.0.99")
    plan.instances["ag"] = NiPlan("ag", "ag", LOCAL, "erb2", island, (), "", (), (), 0)
    plan.vifs[(APPS[2], 1)] = VifPlan(APPS[2], 1, "ag", "era0", "02:00:00:00:02:00",
                                      "10.91.0.20", "app2", acls[:2])  # fmt: skip
    return plan


@pytest.fixture
async def nft(require_service: Callable[[str, str], NoReturn]) -> AsyncIterator[LibNft]:
    why = netns_missing({"nft": "nftables"}, ("nftables", "pyroute2"))
    if why is not None:
        require_service("network namespaces and nftables", why)
    ns = f"evt-rb-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(subprocess.run, ["ip", "netns", "add", ns], check=True)
    driver = LibNft(NftSettings("readback", netns=ns))
    try:
        yield driver
    finally:
        await driver.close()
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", ns], check=False)


async def test_what_is_rendered_is_what_the_kernel_lists(nft: LibNft) -> None:
    plan = _plan()
    conf = firewall.FirewallConfigurator(nft)
    item, errors, hosts = firewall.render(plan)
    assert errors == [] and hosts
    policy = nodefirewall.NodePolicy(ssh=True, inbound=(
        nodefirewall.Inbound("k3s-api", "tcp", 6443, 6443, "up0", "10.90.0.20"),
        nodefirewall.Inbound("vxlan", "udp", 8472, 8472),
        nodefirewall.Inbound("etcd", "tcp", 2379, 2380),
    ))  # fmt: skip
    node = nodefirewall.render(plan, policy)
    assert node is not None
    wanted = conf._ours(item) + conf._ours(node)
    await nft.apply(wanted)
    listed = {(t.family, t.name): t for t in await nft.list_owned()}
    assert set(listed) == {(t.family, t.name) for t in wanted}
    for table in wanted:
        got = listed[(table.family, table.name)]
        for chain in table.chains:
            found = got.chain(chain.name)
            assert found is not None, chain.name
            for want, have in zip(chain.rules, found.rules, strict=True):
                assert want == have, f"{table.name} {chain.name}: {want} listed as {have}"
            assert found.definition == chain.definition
        assert got.maps == table.maps and got.sets == table.sets
