"""The source guard's rendering (agent.reconcile.antispoof): per app interface, by its host-side
name, the MAC always and, on a local instance, the IPv4 address (packets: test_networks_kinds)."""

from __future__ import annotations

from agent.drivers.nft_api import Family
from agent.model.ports import instance_addressing
from agent.reconcile import antispoof
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan, NiPlan, VifPlan

APP = "6d3b3b4e-8a3c-4c47-9d41-0000000000a1"


def test_local_interfaces_are_held_to_mac_and_address_switch_ones_to_mac() -> None:
    plan = NetPlan()
    addressing = instance_addressing("10.1.0.0/24", "10.1.0.1", "10.1.0.10", "10.1.0.20")
    plan.instances["l"] = NiPlan("l", "l", LOCAL, "eb0", addressing, (), "", (), (), 0)
    plan.instances["s"] = NiPlan("s", "s", SWITCH, "eb1", None, (), "", (), (), 0)
    plan.vifs[(APP, 0)] = VifPlan(APP, 0, "l", "ev0", "02:00:00:00:00:01", "10.1.0.10", "a")
    plan.vifs[(APP, 1)] = VifPlan(APP, 1, "s", "ev1", "02:00:00:00:00:02", "", "a")
    table = antispoof.render(plan)
    assert table.family == Family.BRIDGE and table.name == antispoof.GUARD_TABLE
    (vifs,) = table.maps
    assert dict(vifs.elements) == {"ev0": {"jump": {"target": "g0"}},
                                   "ev1": {"jump": {"target": "g1"}}}  # fmt: skip
    local, switch = table.chain("g0"), table.chain("g1")
    assert local is not None and switch is not None
    assert [r.comment for r in switch.rules] == [f"spoof:{APP}:1:mac"]
    assert "02:00:00:00:00:02" in str(switch.rules[0].expr)
    text = str(local.rules)
    assert "10.1.0.10" in text and "0.0.0.0" in text and "saddr ip" in text
    assert local.rules[-1].comment == f"spoof:{APP}:0:ip"
    # With a group to learn from, a switch interface's ARP is logged there (after the MAC).
    learning = antispoof.render(plan, learn_group=17751).chain("g1")
    assert learning is not None and len(learning.rules) == 2
    note = str(learning.rules[1].expr)
    assert "'arp'" in note and "17751" in note and "limit" in note
    assert all("log" not in str(r.expr) for r in local.rules)


def test_no_interfaces_still_a_table() -> None:
    table = antispoof.render(NetPlan())
    assert [c.name for c in table.chains] == ["prerouting"] and table.maps[0].elements == ()
