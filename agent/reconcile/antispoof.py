"""The apps' source-address guard: an app sends only with its own MAC and, on a local instance,
its own IPv4 address.  Rendering is pure; the table is applied with the firewall's.

The ACL chains (:mod:`agent.reconcile.firewall`) find an app's packets by its address (local
instances) or its MAC (switch instances).  An app that changed either would slip past its
chains (the ``forward`` hook's policy accepts what no map names) and, on a local instance, be
NATed out as any other.  So every packet entering a bridge from an app interface (``iifname``:
the host side of the container's veth, the VM's tap) passes its interface's guard chain first,
in the ``bridge`` family's ``prerouting`` hook (before any bridging, routing or IP hook):

- a source MAC other than the interface's: dropped;
- on a local instance: IPv4 only from the app's address, or from 0.0.0.0 to the DHCP server
  port (a DHCP discover); ARP only with the app's address (or 0.0.0.0: address probes) as
  sender; any other IPv4 or ARP packet dropped.  Other protocols (IPv6) pass to the ACLs,
  whose chains the firewall also reaches by the app's MAC for IPv6.
- on a switch instance the address comes from the outside's DHCP server (or the app itself):
  only the MAC is checked; the ARP packets it sends are logged (rate-limited, to the
  ``learn_group`` NFLOG group), for :mod:`agent.reconcile.switchlearn` to learn an address the
  app set itself.

Drops are counted under ``spoof:<app>:<n>:mac`` and ``...:ip`` (the rule comments).  Unlike
EVE, whose iptables rules match the interface (``physdev``) and so let an app forward other
sources through its chains; here an app cannot route foreign sources into a local instance.
"""

from __future__ import annotations

from typing import Any

from agent.drivers.nft_api import Chain, Family, Map, Rule, Table
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan
from agent.reconcile.switchlearn import ARP_PREFIX

GUARD_TABLE = "guard"
#: Logged ARP packets per second (and burst) per switch app interface; the ARP header is 28 bytes.
ARP_LOG_RATE, ARP_LOG_BURST, ARP_SNAPLEN = 5, 20, 28


def _match(protocol: str, field: str, value: Any, op: str = "==") -> dict[str, Any]:
    return {
        "match": {"op": op, "left": {"payload": {"protocol": protocol, "field": field}},
                  "right": value},
    }  # fmt: skip


def render(netplan: NetPlan, learn_group: int | None = None) -> Table:
    """The guard table of ``netplan``'s app interfaces (rendered also without any, so that the
    firewall item's tables stay the same set); switch app interfaces' ARP is logged to
    ``learn_group`` when given."""
    vifs = sorted(netplan.vifs.values(), key=lambda v: (v.app_id, v.index))
    chains: list[Chain] = []
    elements: list[tuple[Any, Any]] = []
    for number, vif in enumerate(vifs):
        comment = f"spoof:{vif.app_id}:{vif.index}"
        rules = [Rule((_match("ether", "saddr", vif.mac, "!="), {"drop": None}),
                      comment=f"{comment}:mac", counter=True)]  # fmt: skip
        if netplan.instances[vif.ni_id].kind == LOCAL and vif.ip:
            protocols = {"match": {"op": "==", "left": {"meta": {"key": "protocol"}},
                                   "right": {"set": ["ip", "arp"]}}}  # fmt: skip
            rules.append(Rule((_match("ip", "saddr", vif.ip), {"return": None})))
            dhcp = (_match("ip", "saddr", "0.0.0.0"), _match("udp", "dport", 67))
            rules.append(Rule((*dhcp, {"return": None})))
            rules.append(Rule((_match("arp", "saddr ip", vif.ip), {"return": None})))
            rules.append(Rule((_match("arp", "saddr ip", "0.0.0.0"), {"return": None})))
            rules.append(Rule((protocols, {"drop": None}), comment=f"{comment}:ip", counter=True))
        elif netplan.instances[vif.ni_id].kind == SWITCH and learn_group is not None:
            arp = {"match": {"op": "==", "left": {"meta": {"key": "protocol"}}, "right": "arp"}}
            limit = {"limit": {"rate": ARP_LOG_RATE, "burst": ARP_LOG_BURST, "per": "second"}}
            note = {"log": {"prefix": ARP_PREFIX, "group": learn_group, "snaplen": ARP_SNAPLEN}}
            rules.append(Rule((arp, limit, note)))
        name = f"g{number}"
        chains.append(Chain(name, rules=tuple(rules)))
        elements.append((vif.host_name, {"jump": {"target": name}}))
    entry = Chain("prerouting", hook="prerouting", type="filter", priority=-200, policy="accept",
                  rules=(Rule(({"vmap": {"key": {"meta": {"key": "iifname"}},
                                         "data": "@vifs"}},)),))  # fmt: skip
    return Table(Family.BRIDGE, GUARD_TABLE, chains=(entry, *chains),
                 maps=(Map("vifs", "ifname", "verdict", tuple(elements)),))  # fmt: skip


__all__ = ["GUARD_TABLE", "render"]
