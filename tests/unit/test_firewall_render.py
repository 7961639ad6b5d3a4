"""The app firewall's rendering of EVE's ACEs (pure: plan in, tables out).

The rules' exact form against the kernel is tests/integration/test_firewall_readback.py's; the
packets they let through are the real-packet tests'.  Here: what an ACE turns into, above all
that no ACE is rendered wider than it was written."""

from __future__ import annotations

from typing import Any

from agent.drivers.nft_api import Rule, Table
from agent.model.acl import Ace, AceAction, AceMatch
from agent.model.ports import Port, instance_addressing
from agent.reconcile import firewall
from agent.reconcile.netplan import LOCAL, NetPlan, NiPlan, VifPlan

APP = "6d3b3b4e-8a3c-4c47-9d41-00000000a001"
UP = Port("up0", "up0", True, True, 0, ("all", "uplink"), "client")
m = AceMatch


def _render(*acls: Ace) -> tuple[dict[str, Table], list[tuple[str, str]]]:
    addressing = instance_addressing("10.90.0.0/24", "10.90.0.1", "10.90.0.10", "10.90.0.99")
    plan = NetPlan(ports={"up0": UP})
    plan.instances["ni"] = NiPlan("ni", "lan", LOCAL, "erb0", addressing, (UP,), "uplink",
                                  (), (), 0)  # fmt: skip
    plan.vifs[(APP, 0)] = VifPlan(APP, 0, "ni", "erv0", "02:00:00:00:00:01", "10.90.0.20",
                                  "app", acls)  # fmt: skip
    item, errors, _ = firewall.render(plan)
    return {t.name: t for t in item.tables}, errors


def _rules(tables: dict[str, Table], table: str, chain: str) -> tuple[Rule, ...]:
    found = tables[table].chain(chain)
    assert found is not None
    return found.rules


def _payloads(rule: Rule) -> list[tuple[str, str, Any]]:
    """(protocol, field, right) of every payload match of ``rule``."""
    out = []
    for expr in rule.expr:
        match = expr.get("match")
        if match and "payload" in match["left"]:
            payload = match["left"]["payload"]
            out.append((payload["protocol"], payload["field"], match["right"]))
    return out


def _counted(rules: tuple[Rule, ...], comment: str) -> Rule:
    (rule,) = [r for r in rules if r.comment == comment and r.counter]
    return rule


def test_an_ipv6_remote_is_an_ip6_match_never_dropped() -> None:
    tables, errors = _render(
        Ace(1, "", 0, (m("ip", "2001:db8::1/128"), m("protocol", "tcp"), m("fport", "80")), ()),
        Ace(2, "", 0, (m("ip", "2001:db8::/32"),), (AceAction(drop=True),)),
        Ace(3, "", 0, (m("ip", "192.0.2.0/24"),), ()),
    )
    assert errors == []
    out = _rules(tables, "filter", "out0")
    assert _payloads(_counted(out, f"ace:{APP}:0:1")) == [
        ("ip6", "daddr", "2001:db8::1"), ("tcp", "dport", 80),
    ]  # fmt: skip
    assert _payloads(_counted(out, f"ace:{APP}:0:2")) == [
        ("ip6", "daddr", {"prefix": {"addr": "2001:db8::", "len": 32}}),
    ]  # fmt: skip
    assert _payloads(_counted(out, f"ace:{APP}:0:3")) == [
        ("ip", "daddr", {"prefix": {"addr": "192.0.2.0", "len": 24}}),
    ]  # fmt: skip


def test_an_ace_without_matches_matches_everything() -> None:
    tables, errors = _render(Ace(7, "", 0, (), ()))
    assert errors == []
    rule = _counted(_rules(tables, "filter", "out0"), f"ace:{APP}:0:7")
    assert _payloads(rule) == [] and {"return": None} in rule.expr  # on to the receiver's


def test_the_peer_chain_holds_the_aces_mirrored_as_eve_does() -> None:
    # EVE's ACEs work both ways (all but PORTMAP): a packet from another app of the node meets
    # the receiver's ACEs with the remote end as source, so it reaches the app only if the
    # app's own ACL allows that app too.  From elsewhere only the PORTMAPs let anything in.
    tables, errors = _render(
        Ace(1, "", 0, (m("ip", "10.90.0.21"), m("protocol", "tcp"), m("lport", "8080")), ()),
        Ace(2, "", 0, (m("host", "example.com"), m("protocol", "udp")), ()),
        Ace(3, "", 0, (m("ip", "192.0.2.9"),), (AceAction(drop=True),)),
    )
    assert errors == []
    assert [r.comment for r in _rules(tables, "filter", "in0") if r.counter] == [
        f"ace-in:{APP}:0:0"
    ]
    ingress = _rules(tables, "filter", "peer0")
    allowed = _counted(ingress, f"ace-in:{APP}:0:1")
    assert _payloads(allowed) == [("ip", "saddr", "10.90.0.21"), ("tcp", "dport", 8080)]
    assert allowed.expr[-1] == {"accept": None}  # the receiver has the last word
    host = _counted(ingress, f"ace-in:{APP}:0:2")
    (egress_host,) = [r for r in _rules(tables, "filter", "out0") if r.comment == f"ace:{APP}:0:2"]
    set_name = egress_host.expr[0]["match"]["right"]
    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    assert host.expr[0]["match"] == {"op": "==", "left": saddr, "right": set_name}
    assert [s.name for s in tables["filter"].sets].count(set_name[1:]) == 1  # one set, both ways
    dropped = _counted(ingress, f"ace-in:{APP}:0:3")
    assert _payloads(dropped) == [("ip", "saddr", "192.0.2.9")] and dropped.expr[-1] == {
        "drop": None
    }
    assert ingress[-1].comment == f"ace-in:{APP}:0:0"  # the implicit drop last


def test_a_portmap_takes_its_source_and_remote_port() -> None:
    portmap = (AceAction(portmap=True, app_port=53),)
    tables, errors = _render(
        Ace(1, "", 0, (m("protocol", "tcp"), m("lport", "8022")), (AceAction(portmap=True,
                                                                              app_port=22),)),
        Ace(2, "", 0, (m("ip", "198.51.100.0/24"), m("protocol", "udp"), m("fport", "4000"),
                       m("lport", "5353")), portmap),
        Ace(3, "", 0, (m("ip", "2001:db8::/32"), m("protocol", "udp"), m("lport", "5354")),
            portmap),
    )  # fmt: skip
    assert errors == []
    nat = {r.comment: r for r in _rules(tables, "nat", "prerouting")}
    assert _payloads(nat[f"portmap:{APP}:0:1:up0"]) == [("tcp", "dport", 8022)]
    assert _payloads(nat[f"portmap:{APP}:0:2:up0"]) == [
        ("ip", "saddr", {"prefix": {"addr": "198.51.100.0", "len": 24}}),
        ("udp", "sport", 4000), ("udp", "dport", 5353),
    ]  # fmt: skip
    # An IPv6 source: nothing is mapped (no IPv6 NAT), rather than a map open to anyone.
    assert f"portmap:{APP}:0:3:up0" not in nat
    ingress = _rules(tables, "filter", "in0")
    assert _payloads(_counted(ingress, f"ace-in:{APP}:0:2")) == [
        ("ip", "saddr", {"prefix": {"addr": "198.51.100.0", "len": 24}}),
        ("udp", "sport", 4000), ("udp", "dport", 53),
    ]  # fmt: skip
    assert not [r for r in ingress if r.comment == f"ace-in:{APP}:0:3"]


def test_an_acl_error_leaves_none_of_the_interfaces_acl() -> None:
    # The first ACE is fine (a portmap: a DNAT and an ingress rule); the second is refused.
    tables, errors = _render(
        Ace(1, "", 0, (m("protocol", "tcp"), m("lport", "8022")), (AceAction(portmap=True,
                                                                              app_port=22),)),
        Ace(2, "", 0, (m("host", "example.com"), m("protocol", "tcp"), m("lport", "8023")),
            (AceAction(portmap=True, app_port=23),)),
    )  # fmt: skip
    assert [(app, "host matches are not supported in a portmap" in e) for app, e in errors] == [
        (APP, True)
    ]
    assert not [r for r in _rules(tables, "nat", "prerouting") if r.comment and APP in r.comment]
    for chain in ("out0", "in0", "peer0"):  # only the implicit drop (logged, counted)
        assert [r.comment for r in _rules(tables, "filter", chain) if r.counter] == [
            f"ace{'' if chain == 'out0' else '-in'}:{APP}:0:0"
        ]
    assert [s.name for s in tables["filter"].sets] == ["apps"]  # no host set left behind


def test_protocol_all_is_no_protocol_match_and_names_are_numbers() -> None:
    tables, errors = _render(
        Ace(1, "", 0, (m("ip", "192.0.2.1"), m("protocol", "all")), ()),
        Ace(2, "", 0, (m("protocol", "gre"),), ()),
        Ace(3, "", 0, (m("protocol", "6"), m("fport", "22")), ()),
    )
    assert errors == []
    out = _rules(tables, "filter", "out0")
    assert _payloads(_counted(out, f"ace:{APP}:0:1")) == [("ip", "daddr", "192.0.2.1")]
    gre = _counted(out, f"ace:{APP}:0:2").expr[0]["match"]
    assert gre["left"] == {"meta": {"key": "l4proto"}} and gre["right"] in ("gre", 47)
    assert _payloads(_counted(out, f"ace:{APP}:0:3")) == [("tcp", "dport", 22)]
    _, errors = _render(Ace(4, "", 0, (m("protocol", "all"), m("fport", "22")), ()))
    assert errors and "ports need protocol tcp, udp or sctp" in errors[0][1]


def test_an_adapter_match_outside_a_portmap_is_an_error_not_ignored() -> None:
    # EVE: adapter is for ingress port-map rules only; dropping the match would allow more.
    _, errors = _render(Ace(5, "", 0, (m("adapter", "uplink"), m("ip", "192.0.2.1")), ()))
    assert errors and "an adapter match is for a portmap only" in errors[0][1]


def test_a_portmap_with_several_adapters_maps_on_each_of_their_ports() -> None:
    # EVE adds up the ports of every adapter match.
    addressing = instance_addressing("10.90.0.0/24", "10.90.0.1", "10.90.0.10", "10.90.0.99")
    ports = (UP, Port("up1", "up1", True, True, 0, ("all", "wan"), "client"),
             Port("up2", "up2", True, True, 0, ("all",), "client"))  # fmt: skip
    plan = NetPlan(ports={p.name: p for p in ports})
    plan.instances["ni"] = NiPlan("ni", "lan", LOCAL, "erb0", addressing, ports, "all",
                                  (), (), 0)  # fmt: skip
    ace = Ace(1, "", 0, (m("protocol", "tcp"), m("lport", "2222"), m("adapter", "uplink"),
                         m("adapter", "wan")), (AceAction(portmap=True, app_port=22),))  # fmt: skip
    plan.vifs[(APP, 0)] = VifPlan(APP, 0, "ni", "erv0", "02:00:00:00:00:01", "10.90.0.20",
                                  "app", (ace,))  # fmt: skip
    item, errors, _ = firewall.render(plan)
    assert errors == []
    (nat,) = [t for t in item.tables if t.name == "nat"]
    prerouting = nat.chain("prerouting")
    assert prerouting is not None
    assert sorted(r.comment or "" for r in prerouting.rules) == [
        f"portmap:{APP}:0:1:up0", f"portmap:{APP}:0:1:up1",
    ]  # fmt: skip
