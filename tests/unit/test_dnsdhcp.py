"""What a local instance's dnsmasq is told (agent/reconcile/dnsdhcp.py)."""

from __future__ import annotations

import ipaddress

from agent.drivers.dnsmasq import DnsmasqConfig
from agent.model.ports import Port, instance_addressing
from agent.reconcile import dnsdhcp
from agent.reconcile.netplan import LOCAL, NetPlan, NiPlan

NI = "6d3b3b4e-8a3c-4c47-9d41-0000000e0001"
UP = Port("up0", "up0", True, True, 0, ("all", "uplink"), "client")


def _config(*ports: Port) -> DnsmasqConfig:
    a = instance_addressing("10.50.0.0/24", "10.50.0.1", "10.50.0.10", "10.50.0.20")
    plan = NetPlan(instances={NI: NiPlan(NI, "n", LOCAL, "eb0", a, ports, "", (), (), 0)})
    items, problems = dnsdhcp.render(plan, {})
    assert problems == []
    (item,) = items.values()
    assert isinstance(item, dnsdhcp.DnsmasqItem) and item.config is not None
    return item.config


def test_an_air_gapped_instance_routes_only_to_the_metadata_server() -> None:
    config = _config()
    assert not config.default_route
    assert [(str(r.destination), str(r.gateway)) for r in config.routes] == [
        ("169.254.169.254/32", "10.50.0.1")
    ]


def test_an_instance_with_a_port_routes_everything_through_its_gateway() -> None:
    config = _config(UP)
    assert config.default_route and config.routes == ()
    assert config.gateway == ipaddress.IPv4Address("10.50.0.1")
