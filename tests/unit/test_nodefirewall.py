"""The node firewall's rendering (:mod:`agent.reconcile.nodefirewall`); packets in
tests/integration/test_networks_real.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.drivers.nft_api import Table
from agent.model.configitems import parse_items
from agent.model.ports import Port
from agent.reconcile import nodefirewall
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan, NiPlan
from agent.reconcile.nodefirewall import Inbound, NodePolicy

ETH0 = Port("eth0", "eth0", True, True, 0, ("all", "uplink"), "client")
ETH1 = Port("eth1", "eth1", False, True, 0, ("all",), "client")


def _plan(*instances: NiPlan, ports: tuple[Port, ...] = (ETH0, ETH1)) -> NetPlan:
    return NetPlan(instances={n.id: n for n in instances}, ports={p.name: p for p in ports})


def _ni(ni_id: str, kind: str, bridge: str, *ports: Port) -> NiPlan:
    return NiPlan(ni_id, ni_id, kind, bridge, None, ports, "", (), (), 0)


def _table(plan: NetPlan, policy: NodePolicy | None = None) -> Table:
    item = nodefirewall.render(plan, policy or NodePolicy())
    assert item is not None
    (table,) = item.tables
    return table


def _rules(table: Table, chain: str) -> dict[str, list[dict[str, Any]]]:
    found = table.chain(chain)
    assert found is not None
    return {r.comment or json.dumps(r.expr): list(r.expr) for r in found.rules}


def test_nothing_to_guard_renders_nothing() -> None:
    assert nodefirewall.render(NetPlan(), NodePolicy()) is None


def test_ports_are_guarded_but_not_a_switch_instance_port() -> None:
    table = _table(_plan(_ni("s", SWITCH, "ebr1", ETH1)))
    (jump,) = table.chain("input").rules  # type: ignore[union-attr]
    assert jump.expr[0]["match"]["right"] == "eth0"  # eth1 is the switch's
    assert table.chain("app_in") is None
    assert table.chain("forward").rules == ()  # type: ignore[union-attr]  # one L3 port


def test_port_input_in_eves_order_ending_in_a_counted_drop() -> None:
    table = _table(_plan())
    chain = table.chain("port_in")
    assert chain is not None
    comments = [r.comment for r in chain.rules]
    assert comments == [None, None, "node:in:8080", "node:in:ssh", "node:in:vnc",
                        "node:in:dhcp", "node:in:icmp", None, "node:in:drop"]  # fmt: skip
    assert chain.rules[0].expr[0]["match"]["right"] == ["established", "related"]
    assert chain.rules[-1].counter and chain.rules[-1].expr == ({"drop": None},)
    forward = table.chain("forward")
    assert forward is not None and forward.rules[0].comment == "node:fwd:drop"


def test_ssh_and_vnc_follow_the_config_items() -> None:
    closed = _rules(_table(_plan()), "port_in")
    assert closed["node:in:ssh"][-1] == {"reject": {"type": "tcp reset"}}
    assert closed["node:in:vnc"][-1] == {"reject": {"type": "tcp reset"}}
    items = parse_items([("debug.enable.ssh", "ssh-ed25519 AAAA key"), ("app.allow.vnc", "1")])
    policy = NodePolicy.from_items(items)
    assert policy.ssh and policy.vnc
    opened = _rules(_table(_plan(), policy), "port_in")
    assert opened["node:in:ssh"][-1] == {"accept": None}
    assert opened["node:in:vnc"][-1] == {"accept": None}
    assert opened["node:in:8080"][-1] == {"reject": {"type": "tcp reset"}}  # always
    assert not NodePolicy.from_items(parse_items([("debug.enable.ssh", "  ")])).ssh


def test_inbound_rules_come_before_the_drop() -> None:
    extra = Inbound("k3s-api", "tcp", 6443, 6443, ifname="eth1", daddr="10.9.0.1")
    table = _table(_plan(), NodePolicy(inbound=(extra,)))
    chain = table.chain("port_in")
    assert chain is not None
    assert [r.comment for r in chain.rules][-2:] == ["node:in:k3s-api", "node:in:drop"]
    expr = chain.rules[-2].expr
    assert expr[0]["match"]["right"] == "eth1"
    daddr = {"payload": {"protocol": "ip", "field": "daddr"}}
    assert {"match": {"op": "==", "right": "10.9.0.1", "left": daddr}} in expr
    with pytest.raises(ValueError, match="protocol"):
        Inbound("x", "icmp", 1, 1)
    with pytest.raises(ValueError, match="range"):
        Inbound("x", "tcp", 10, 5)


def test_apps_reach_the_instance_services_only() -> None:
    table = _table(_plan(_ni("l", LOCAL, "ebr2", ETH0), ports=()))
    (jump,) = table.chain("input").rules  # type: ignore[union-attr]
    assert jump.expr[0]["match"]["right"] == "ebr2" and table.chain("port_in") is None
    comments = [r.comment for r in table.chain("app_in").rules]  # type: ignore[union-attr]
    assert comments[1:6] == ["node:app-in:dhcp", "node:app-in:dns", "node:app-in:dns-tcp",
                             "node:app-in:metadata", "node:app-in:icmp"]  # fmt: skip
    assert comments[-1] == "node:app-in:drop"
