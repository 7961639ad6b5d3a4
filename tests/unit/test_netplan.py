"""The network layout of a config: bridge and VIF names, MACs and addresses, stable and checked."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.netlink_api import is_ours
from agent.model.config import from_proto
from agent.reconcile.netplan import LOCAL, SWITCH, plan, stable_mac
from controller.configs import config_from_document

DEVICE = "7c7c7c7c-0000-4000-8000-000000000001"
NI_LOCAL = "7c7c7c7c-0000-4000-8000-0000000000b1"
NI_SWITCH = "7c7c7c7c-0000-4000-8000-0000000000b2"
NI_AIR = "7c7c7c7c-0000-4000-8000-0000000000b3"
NODE = "node-a"


def app(n: int, *ifaces: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuidandversion": {"uuid": f"7c7c7c7c-0000-4000-8000-{n:012d}", "version": "1"},
        "displayname": f"App {n}!", "activate": True, "interfaces": list(ifaces),
    }  # fmt: skip


def document(apps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": {"uuid": DEVICE, "version": "1"},
        "deviceIoList": [{"ptype": "PhyIoNetEth", "phylabel": "eth0", "logicallabel": "eth0",
                          "phyaddrs": {"ifname": "eth0"}, "usage": "PhyIoUsageMgmtAndApps"}],
        "systemAdapterList": [{"name": "eth0"}],
        "networkInstances": [
            {"uuidandversion": {"uuid": NI_LOCAL, "version": "1"}, "displayname": "lan",
             "instType": "ZnetInstLocal", "activate": True, "port": {"name": "uplink"},
             "ip": {"subnet": "10.5.0.0/24", "gateway": "10.5.0.1",
                    "dhcpRange": {"start": "10.5.0.10", "end": "10.5.0.20"}}},
            {"uuidandversion": {"uuid": NI_SWITCH, "version": "1"}, "displayname": "sw",
             "instType": "ZnetInstSwitch", "activate": True, "port": {"name": "eth0"}},
            {"uuidandversion": {"uuid": NI_AIR, "version": "1"}, "displayname": "air",
             "instType": "ZnetInstLocal", "activate": True,
             "ip": {"subnet": "10.6.0.0/24"}},
        ],
        "apps": apps if apps is not None else [
            app(1, {"name": "eth0", "networkId": NI_LOCAL},
                {"name": "eth1", "networkId": NI_SWITCH}),
            app(2, {"name": "eth0", "networkId": NI_LOCAL, "addr": "10.5.0.15"},
                {"name": "eth1", "networkId": NI_AIR}),
        ],
    }  # fmt: skip


def layout(doc: dict[str, Any]) -> Any:
    return plan(from_proto(config_from_document(doc)), NODE)


def test_instances_and_interfaces_are_laid_out() -> None:
    p = layout(document())
    assert not p.errors
    lan, sw, air = p.instances[NI_LOCAL], p.instances[NI_SWITCH], p.instances[NI_AIR]
    assert (lan.kind, sw.kind, air.kind) == (LOCAL, SWITCH, LOCAL)
    assert [port.ifname for port in lan.ports] == ["eth0"] and air.ports == ()
    assert air.addressing is not None and str(air.addressing.gateway) == "10.6.0.1"
    assert len({lan.bridge, sw.bridge, air.bridge}) == 3
    assert all(is_ours(NODE, n.bridge) and len(n.bridge) <= 15 for n in p.instances.values())
    a1 = "7c7c7c7c-0000-4000-8000-000000000001"
    a2 = "7c7c7c7c-0000-4000-8000-000000000002"
    v10, v11, v20 = p.vifs[(a1, 0)], p.vifs[(a1, 1)], p.vifs[(a2, 0)]
    assert v20.ip == "10.5.0.15"  # the configured address
    assert ipaddress.IPv4Address(v10.ip) in ipaddress.IPv4Network("10.5.0.0/24")
    assert 10 <= int(v10.ip.rsplit(".", 1)[1]) <= 20 and v10.ip != v20.ip
    assert v11.ip == ""  # a switch instance: the outside network addresses it
    assert v10.mac == stable_mac(NODE, a1, 0) and v10.mac.startswith("02:")
    assert v10.hostname == "app-1" and v10.guest_ifname == "eth0" and v11.guest_ifname == "eth1"
    assert len({v.host_name for v in p.vifs.values()}) == len(p.vifs)


def test_layout_is_stable_and_independent_of_order() -> None:
    doc = document()
    first = layout(doc)
    again = copy.deepcopy(doc)
    again["apps"].reverse()
    again["networkInstances"].reverse()
    second = layout(again)
    assert first.instances == second.instances and first.vifs == second.vifs
    # A new app does not move the others (barring a collision in the range).
    more = copy.deepcopy(doc)
    more["apps"].append(app(3, {"name": "eth0", "networkId": NI_AIR}))
    third = layout(more)
    assert all(third.vifs[k] == v for k, v in first.vifs.items())


def test_interface_problems_are_errors_of_their_app() -> None:
    doc = document(apps=[
        app(1, {"name": "eth0", "networkId": NI_LOCAL, "addr": "10.9.9.9"}),
        app(2, {"name": "eth0", "networkId": NI_LOCAL, "macAddress": "01:00:5e:00:00:01"}),
        app(3, {"name": "eth0", "networkId": NI_LOCAL, "addr": "10.5.0.1"}),
        app(4, {"name": "eth0", "networkId": NI_LOCAL}),
    ])  # fmt: skip
    p = layout(doc)
    messages = {e.id[-1]: e.message for e in p.errors}
    assert "not free in 10.5.0.0/24" in messages["1"]
    assert "not unicast" in messages["2"]
    assert "not free" in messages["3"]  # the gateway's address
    assert "4" not in messages and len(p.vifs) == 1


def test_a_full_range_is_an_error() -> None:
    apps = [app(n, {"name": "eth0", "networkId": NI_LOCAL}) for n in range(1, 14)]
    p = layout(document(apps=apps))
    assert len(p.vifs) == 11  # 10.5.0.10-20
    assert sum("no free address" in e.message for e in p.errors) == 2


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=11, unique=True))
def test_addresses_and_names_never_collide(numbers: list[int]) -> None:
    apps = [app(n, {"name": "eth0", "networkId": NI_LOCAL}) for n in numbers]
    p = layout(document(apps=apps))
    ips = [v.ip for v in p.vifs.values()]
    assert len(set(ips)) == len(ips) == len(numbers)
    assert len({v.host_name for v in p.vifs.values()}) == len(ips)
    assert len({v.mac for v in p.vifs.values()}) == len(ips)
