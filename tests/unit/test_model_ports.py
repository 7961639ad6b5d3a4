"""Ports (system adapters) and local network instance addressing in the model."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.model.config import from_proto
from agent.model.ports import PortError, instance_addressing, parse_ports, resolve
from controller.configs import config_from_document

DEVICE = "9e0c9e0c-0000-4000-8000-000000000001"
NET_DHCP = "9e0c9e0c-0000-4000-8000-0000000000a1"
NET_STATIC = "9e0c9e0c-0000-4000-8000-0000000000a2"
NI = "9e0c9e0c-0000-4000-8000-0000000000b1"


def document(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": {"uuid": DEVICE, "version": "1"},
        "deviceIoList": [
            {"ptype": "PhyIoNetEth", "phylabel": "eth0", "logicallabel": "eth0",
             "phyaddrs": {"ifname": "eth0"}, "usage": "PhyIoUsageMgmtAndApps"},
            {"ptype": "PhyIoNetEth", "phylabel": "eth1", "logicallabel": "eth1",
             "phyaddrs": {"ifname": "eth1"}, "usage": "PhyIoUsageShared"},
            {"ptype": "PhyIoNetEth", "phylabel": "eth2", "logicallabel": "eth2",
             "phyaddrs": {"ifname": "eth2"}, "usage": "PhyIoUsageMgmtOnly"},
        ],
        "networks": [
            {"id": NET_DHCP, "type": "V4", "ip": {"dhcp": "Client"}},
            {"id": NET_STATIC, "type": "V4",
             "ip": {"dhcp": "Static", "subnet": "192.168.7.0/24", "gateway": "192.168.7.1",
                    "dns": ["192.168.7.53"]}},
        ],
        "systemAdapterList": [
            {"name": "eth0", "networkUUID": NET_DHCP, "cost": 0},
            {"name": "eth1", "networkUUID": NET_STATIC, "addr": "192.168.7.10",
             "sharedLabels": ["lab"], "cost": 10},
            {"name": "eth2", "networkUUID": NET_DHCP, "cost": 5},
        ],
    }  # fmt: skip
    doc.update(extra)
    return doc


def ports_of(doc: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    msg = config_from_document(doc)
    return parse_ports(msg.systemAdapterList, msg.deviceIoList, msg.networks)


def test_ports_with_eve_labels_and_addressing() -> None:
    ports, errors = ports_of(document())
    assert errors == []
    eth0, eth1, eth2 = ports["eth0"], ports["eth1"], ports["eth2"]
    assert eth0.management and eth0.shared_labels == ("all", "uplink", "freeuplink")
    assert eth0.dhcp == "client" and eth0.for_apps
    assert not eth1.management and eth1.shared_labels == ("all", "lab")
    assert (eth1.dhcp, eth1.address, eth1.gateway, eth1.dns) == (
        "static",
        "192.168.7.10/24",
        "192.168.7.1",
        ("192.168.7.53",),
    )
    assert eth2.management and not eth2.for_apps  # management only
    assert eth2.shared_labels == ("all", "uplink")  # not free: it has a cost
    assert [p.name for p in resolve(ports, "all")] == ["eth0", "eth2", "eth1"]  # by cost
    assert [p.name for p in resolve(ports, "eth1")] == ["eth1"]
    assert resolve(ports, "") == () and resolve(ports, "nothing") == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"phyaddrs": {"ifname": "eth0;rm -rf /"}}, "interface name"),
        ({"phyaddrs": {"ifname": "a-very-long-interface-name"}}, "interface name"),
        ({"logicallabel": "other"}, "no physical IO"),
    ],
)
def test_bad_physical_io_leaves_its_port_out(change: dict[str, Any], message: str) -> None:
    doc = document()
    doc["deviceIoList"][0].update(change)
    ports, errors = ports_of(doc)
    assert "eth0" not in ports and "eth1" in ports
    assert any(name == "eth0" and message in text for name, text in errors), errors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sharedLabels": ["uplink"]}, "reserved"),
        ({"sharedLabels": ["bad label"]}, "not a label"),
        ({"addr": "10.0.0.1"}, "not in 192.168.7.0/24"),
        ({"addr": "not-an-ip"}, "not an IP address"),
        ({"networkUUID": "9e0c9e0c-0000-4000-8000-0000000000ff"}, "no network"),
        ({"cost": 300}, "cost"),
    ],
)
def test_bad_adapter_leaves_its_port_out(change: dict[str, Any], message: str) -> None:
    doc = document()
    doc["systemAdapterList"][1].update(change)
    ports, errors = ports_of(doc)
    assert "eth1" not in ports and "eth0" in ports
    assert any(name == "eth1" and message in text for name, text in errors), errors


def test_two_ports_on_one_interface() -> None:
    doc = document()
    doc["systemAdapterList"].append({"name": "again", "lowerLayerName": "eth0"})
    ports, errors = ports_of(doc)
    assert "again" not in ports
    assert any("is port eth0 already" in text for _, text in errors)


def test_instance_addressing_defaults_and_checks() -> None:
    a = instance_addressing("10.1.0.0/24", "", "", "")
    assert str(a.gateway) == "10.1.0.1"
    assert (str(a.dhcp_start), str(a.dhcp_end)) == ("10.1.0.2", "10.1.0.254")
    big = instance_addressing("10.0.0.0/16", "10.0.0.1", "10.0.1.0", "10.0.9.0")
    assert int(big.dhcp_end) - int(big.dhcp_start) + 1 == 255  # capped as EVE does
    for args, message in [
        (("10.1.0.0/24", "10.2.0.1", "", ""), "not a host"),
        (("10.1.0.0/24", "10.1.0.1", "10.1.0.1", "10.1.0.9"), "inside the DHCP range"),
        (("10.1.0.0/24", "10.1.0.1", "10.1.0.20", "10.1.0.10"), "empty"),
        (("10.1.0.0/24", "10.1.0.1", "10.1.0.2", "10.1.1.9"), "not a host"),
        (("fd00::/64", "", "", ""), "IPv4"),
        (("10.1.0.0/31", "", "", ""), "too small"),
        (("nonsense", "", "", ""), "not a subnet"),
    ]:
        with pytest.raises(PortError, match=message):
            instance_addressing(*args)


@given(st.text(max_size=40), st.text(max_size=20), st.text(max_size=20), st.text(max_size=20))
def test_instance_addressing_fails_only_with_port_error(
    subnet: str, gateway: str, start: str, end: str
) -> None:
    try:
        a = instance_addressing(subnet, gateway, start, end)
    except PortError:
        return
    assert a.gateway in a.subnet and a.dhcp_start <= a.dhcp_end
    assert not a.dhcp_start <= a.gateway <= a.dhcp_end
    assert isinstance(a.subnet, ipaddress.IPv4Network)


def network_instance(**fields: Any) -> dict[str, Any]:
    ni: dict[str, Any] = {
        "uuidandversion": {"uuid": NI, "version": "1"}, "displayname": "lan",
        "instType": "ZnetInstLocal", "activate": True, "port": {"name": "uplink"},
        "ip": {"subnet": "10.9.0.0/24", "gateway": "10.9.0.1",
               "dhcpRange": {"start": "10.9.0.10", "end": "10.9.0.100"}},
    }  # fmt: skip
    ni.update(fields)
    return ni


def test_network_instances_are_checked_against_ports() -> None:
    cfg = from_proto(config_from_document(document(networkInstances=[network_instance()])))
    assert cfg.errors == () and NI in cfg.network_instances and "eth0" in cfg.ports

    unknown = document(networkInstances=[network_instance(port={"name": "wifi"})])
    cfg = from_proto(config_from_document(unknown))
    assert NI not in cfg.network_instances
    assert "no port named or labelled 'wifi'" in cfg.errors[0].message

    # Without ports in the config, the node keeps the ports it has: the label is not checked.
    bare = {"id": {"uuid": DEVICE, "version": "1"}, "networkInstances": [network_instance()]}
    assert NI in from_proto(config_from_document(bare)).network_instances


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"instType": "ZnetInstCloud"}, "not supported"),
        ({"ip": {"subnet": "10.9.0.0/24", "gateway": "10.8.0.1"}}, "not a host"),
    ],
)
def test_bad_network_instances_are_left_out(fields: dict[str, Any], message: str) -> None:
    cfg = from_proto(config_from_document(document(networkInstances=[network_instance(**fields)])))
    assert NI not in cfg.network_instances
    assert any(message in e.message for e in cfg.errors), cfg.errors
