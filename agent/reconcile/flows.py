"""Flow logs: each app interface's flows, with the ACE that decided them (EVE's FlowMessage).

Where they come from.  The firewall (:mod:`agent.reconcile.firewall`) leaves two traces:

- an accepting rule sets its connection's mark to ``FLOW_MARK | ACE id``, so the conntrack
  entries of the agent's app flows are those under ``FLOW_MARK_MASK``
  (:class:`~agent.drivers.conntrack.Conntrack` dumps only those).  The app is found from the
  entry's addresses through the plan's app addresses, in EVE's order (``linux_flow.go``
  ``convertConntrackToFlow``): the original source (the app started it), the original
  destination (someone reached the app without NAT), the reply source (a PORTMAP: the app
  answers from behind the DNAT), the reply destination.  The record's ``src`` is always the
  app's end, ``dst`` the remote one, ``tx`` what the app sent;
- a dropping rule logs the packet to NFLOG with its comment as prefix
  (``ace:<app>:<n>:<id>``, ``...:over`` for a LIMIT's excess, ``ace-in:<app>:<n>:0`` for
  the ingress implicit drop), so a drop names its app interface and ACE (0: the implicit
  drop) by itself.

What is reported, once.  :class:`FlowTable` follows the marked connections from one conntrack
dump to the next (every ``sample`` seconds) and reports each when it is gone from the table
(ended and expired), with its last counters, its start (the kernel's timestamp) and its end
(when its counters last grew, as seen by the samples).  Logged drops are aggregated per
direction, ACE and 5-tuple over the report interval, into one ``drop`` record each (packets
and bytes count the logged packets: the log is rate-limited per rule, the rule counters in
the app metrics have the totals).  Every ``interval`` seconds (EVE scrapes every 2 minutes)
:meth:`FlowTable.take` hands the records over per app interface, in chunks of at most
``pack`` (EVE's 125 per message).

Bounds.  At most ``max_open`` connections are followed at a time and ``max_records`` records
(ended flows and drop aggregates) kept per app interface and interval; the rest are counted in
:attr:`FlowTable.lost`.  Flows of interfaces on an instance with ``disable_flowlog`` are not
kept; with flow logs off everywhere the collector reads nothing and leaves the NFLOG group.

DNS requests (``dnsReqs``): the firewall logs the answers the instance's dnsmasq sends an app
(:mod:`agent.reconcile.dnslog`; EVE sniffs the bridges' DNS packets), each filed under the app
interface it went to with the name, the addresses and when, within the same bound per interface
and interval as the flows; given a listener for them.

Switch instances: their chains mark and log as the local ones do; a flow is an app's when one
of its ends is the address the node learnt for the app interface (its container's DHCP lease,
or a VM's DHCP answer or ARP: :attr:`FlowCollector.learnt`); drops name their interface in the
prefix.  Between two apps on one switch instance the mark is the receiver's ACE.

Not here, as in EVE or not: IPv6, flows that are born and expire between two samples (a few
seconds: a UDP or ICMP entry lives 30 s after its last packet, a closed TCP one 120 s), and
long flows before they end (as EVE).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.drivers.conntrack import Conntrack, CtEntry, CtTuple
from agent.drivers.errors import DriverError
from agent.drivers.nflog import LoggedPacket, Nflog
from agent.model.config import NodeConfig
from agent.reconcile import dnslog
from agent.reconcile.acerules import ACE_ID_MASK, FLOW_MARK, FLOW_MARK_MASK
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan, VifPlan
from agent.util.timing import jittered, wait_or_stop

log = logging.getLogger(__name__)

#: What an app interface is known by: (app id, interface position).
VifKey = tuple[str, int]


@dataclass(frozen=True)
class FlowScope:
    """The app interface a report is about (EVE's ScopeInfo)."""

    app_id: str
    #: The interface's name in the app (``eth<n>``).
    ifname: str
    #: The instance's bridge (EVE's ``localIntf``).
    bridge: str
    ni_id: str


@dataclass(frozen=True)
class FlowRecord:
    """One flow of an app interface (EVE's FlowRecord): ``src`` is the app's end."""

    src: str
    sport: int
    dst: str
    dport: int
    proto: int
    #: Started from outside (a PORTMAP, or a drop on the way in).
    inbound: bool
    #: The deciding ACE's id; 0 for the implicit drop.
    acl_id: int
    drop: bool
    #: Wall clock seconds.
    start: float
    end: float
    tx_bytes: int = 0
    tx_packets: int = 0
    rx_bytes: int = 0
    rx_packets: int = 0


@dataclass(frozen=True)
class DnsRecord:
    """A name an app interface resolved (EVE's DnsRequest)."""

    name: str
    addrs: tuple[str, ...]
    #: Wall clock seconds.
    time: float


@dataclass(frozen=True)
class FlowReport:
    scope: FlowScope
    flows: tuple[FlowRecord, ...]
    dns: tuple[DnsRecord, ...] = ()


@dataclass(frozen=True)
class FlowSettings:
    #: Seconds between reports (EVE collects every 2 minutes).
    interval: float = 120.0
    #: Seconds between conntrack dumps: shorter than the life of an ended entry (30 s).
    sample: float = 10.0
    max_open: int = 20_000
    max_records: int = 1_000
    pack: int = 125


@dataclass(frozen=True)
class Scopes:
    """The app interfaces whose flows are logged: those on local and switch instances without
    ``disable_flowlog``, by key, and by address where it is known (a local instance's from the
    plan, a switch instance's as the node learnt it: ``learnt(app id, index)``, "" for none)."""

    by_ip: Mapping[str, VifPlan] = field(default_factory=dict)
    by_key: Mapping[VifKey, VifPlan] = field(default_factory=dict)
    bridges: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        layout: NetPlan | None,
        config: NodeConfig | None,
        learnt: Callable[[str, int], str] | None = None,
    ) -> Scopes:
        if layout is None:
            return cls()
        off = set()
        if config is not None:
            off = {ni.id for ni in config.network_instances.values() if ni.disable_flowlog}
        logged = {
            ni.id: ni.bridge
            for ni in layout.instances.values()
            if ni.kind in (LOCAL, SWITCH) and ni.id not in off
        }
        switch = {ni.id for ni in layout.instances.values() if ni.kind == SWITCH}
        vifs = [v for v in layout.vifs.values()
                if v.ni_id in logged and (v.ip or v.ni_id in switch)]  # fmt: skip
        by_ip = {}
        for v in vifs:
            ip = v.ip or (learnt(v.app_id, v.index) if learnt is not None else "")
            if ip:
                by_ip[ip] = v
        return cls(by_ip, {(v.app_id, v.index): v for v in vifs}, logged)

    def scope(self, vif: VifPlan) -> FlowScope:
        return FlowScope(vif.app_id, vif.guest_ifname, self.bridges.get(vif.ni_id, ""), vif.ni_id)


def parse_prefix(prefix: str) -> tuple[VifKey, int, bool] | None:
    """(app interface, ACE id, inbound) of a drop rule's log prefix; None if not one."""
    kind, _, rest = prefix.partition(":")
    if kind not in ("ace", "ace-in"):
        return None
    parts = rest.split(":")
    if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "over"):
        return None
    try:
        index, ace_id = int(parts[1]), int(parts[2])
    except ValueError:
        return None
    return (parts[0], index), ace_id, kind == "ace-in"


@dataclass(frozen=True)
class _Side:
    """Which end of a connection is the app's: the record's addresses and directions."""

    vif: VifPlan
    inbound: bool
    app: tuple[str, int]
    remote: tuple[str, int]
    #: Counters are the original direction's (True) or the reply's (False) for ``tx``.
    tx_is_orig: bool


def app_side(orig: CtTuple, reply: CtTuple, by_ip: Mapping[str, VifPlan]) -> _Side | None:
    """EVE's four cases (see the module docstring); None when no address is an app's."""
    if orig.src in by_ip:
        return _Side(by_ip[orig.src], False, (orig.src, orig.sport), (reply.src, reply.sport),
                     True)  # fmt: skip
    if orig.dst in by_ip:
        return _Side(by_ip[orig.dst], True, (orig.dst, orig.dport), (reply.dst, reply.dport),
                     False)  # fmt: skip
    if reply.src in by_ip:
        return _Side(by_ip[reply.src], True, (reply.src, reply.sport), (orig.src, orig.sport),
                     False)  # fmt: skip
    if reply.dst in by_ip:
        return _Side(by_ip[reply.dst], False, (reply.dst, reply.dport), (orig.dst, orig.dport),
                     True)  # fmt: skip
    return None


@dataclass
class _Open:
    """A followed connection: what is known of it at the last sample."""

    side: _Side
    acl_id: int
    proto: int
    start: float
    last_change: float
    counters: tuple[int, int, int, int]  # orig packets, orig bytes, reply packets, reply bytes


@dataclass
class _Drops:
    packets: int
    bytes: int
    first: float
    last: float


class FlowTable:
    """Followed connections and the records waiting for the next report.  Pure: time comes
    in as arguments."""

    def __init__(self, settings: FlowSettings | None = None) -> None:
        self.settings = settings or FlowSettings()
        self._open: dict[tuple[int, CtTuple], _Open] = {}
        self._records: dict[VifKey, list[FlowRecord]] = {}
        self._drops: dict[VifKey, dict[tuple[bool, int, int, str, int, str, int], _Drops]] = {}
        self._dns: dict[VifKey, list[DnsRecord]] = {}
        #: Records (and connections) dropped at a bound, since the table was made.
        self.lost = 0

    @property
    def following(self) -> int:
        return len(self._open)

    def observe(self, entries: Iterable[CtEntry], scopes: Scopes, now: float) -> None:
        """One conntrack dump: follow new marked connections, update the others, and turn
        those no longer there into records."""
        seen: set[tuple[int, CtTuple]] = set()
        for entry in entries:
            if entry.mark & FLOW_MARK_MASK != FLOW_MARK:
                continue
            key = (entry.id, entry.orig)
            seen.add(key)
            counters = (entry.orig_packets, entry.orig_bytes, entry.reply_packets,
                        entry.reply_bytes)  # fmt: skip
            known = self._open.get(key)
            if known is not None:
                if counters != known.counters:
                    known.counters, known.last_change = counters, now
                continue
            side = app_side(entry.orig, entry.reply, scopes.by_ip)
            if side is None:
                continue
            if len(self._open) >= self.settings.max_open:
                self.lost += 1
                continue
            start = entry.start or now
            self._open[key] = _Open(side, entry.mark & ACE_ID_MASK, entry.orig.proto, start,
                                    now, counters)  # fmt: skip
        for key in [k for k in self._open if k not in seen]:
            self._close(self._open.pop(key), scopes)

    def _close(self, flow: _Open, scopes: Scopes) -> None:
        vif = flow.side.vif
        if scopes.by_key.get((vif.app_id, vif.index)) != vif:
            return  # its interface is gone or no longer logged
        o_pkts, o_bytes, r_pkts, r_bytes = flow.counters
        tx = (o_pkts, o_bytes) if flow.side.tx_is_orig else (r_pkts, r_bytes)
        rx = (r_pkts, r_bytes) if flow.side.tx_is_orig else (o_pkts, o_bytes)
        self._add(vif, FlowRecord(
            src=flow.side.app[0], sport=flow.side.app[1], dst=flow.side.remote[0],
            dport=flow.side.remote[1], proto=flow.proto, inbound=flow.side.inbound,
            acl_id=flow.acl_id, drop=False, start=flow.start, end=flow.last_change,
            tx_bytes=tx[1], tx_packets=tx[0], rx_bytes=rx[1], rx_packets=rx[0],
        ))  # fmt: skip

    def _room(self, key: VifKey) -> bool:
        used = len(self._records.get(key, ())) + len(self._drops.get(key, ()))
        used += len(self._dns.get(key, ()))
        if used >= self.settings.max_records:
            self.lost += 1
            return False
        return True

    def _add(self, vif: VifPlan, record: FlowRecord) -> None:
        key = (vif.app_id, vif.index)
        if self._room(key):
            self._records.setdefault(key, []).append(record)

    def logged(self, packets: Iterable[LoggedPacket], scopes: Scopes) -> None:
        """Logged drops: aggregated per app interface, direction, ACE and 5-tuple."""
        for packet in packets:
            parsed = parse_prefix(packet.prefix)
            if parsed is None or parsed[0] not in scopes.by_key:
                continue
            key, ace_id, inbound = parsed
            if inbound:
                app, remote = (packet.dst, packet.dport), (packet.src, packet.sport)
            else:
                app, remote = (packet.src, packet.sport), (packet.dst, packet.dport)
            flow = (inbound, ace_id, packet.proto, *app, *remote)
            drops = self._drops.setdefault(key, {})
            found = drops.get(flow)
            if found is None:
                if not self._room(key):
                    continue
                drops[flow] = _Drops(1, packet.length, packet.time, packet.time)
                continue
            found.packets += 1
            found.bytes += packet.length
            found.first, found.last = min(found.first, packet.time), max(found.last, packet.time)

    def answered(self, packets: Iterable[LoggedPacket], scopes: Scopes) -> None:
        """Logged DNS answers: one record per answer, under the app interface it went to."""
        for packet in packets:
            if packet.prefix != dnslog.PREFIX:
                continue
            answer = dnslog.parse_answer(packet.data)
            vif = scopes.by_ip.get(answer.app_ip) if answer is not None else None
            if answer is None or vif is None:
                continue
            key = (vif.app_id, vif.index)
            if self._room(key):
                self._dns.setdefault(key, []).append(
                    DnsRecord(answer.name, answer.addrs, packet.time)
                )

    def take(self, scopes: Scopes) -> list[FlowReport]:
        """The records since the last call, per app interface (in chunks of ``pack``), and
        forget them."""
        records, self._records = self._records, {}
        drops, self._drops = self._drops, {}
        answers, self._dns = self._dns, {}
        out: list[FlowReport] = []
        for key in sorted(set(records) | set(drops) | set(answers)):
            vif = scopes.by_key.get(key)
            if vif is None:
                continue
            flows = list(records.get(key, ()))
            for flow, d in drops.get(key, {}).items():
                inbound, ace_id, proto, a_ip, a_port, r_ip, r_port = flow
                count = (d.bytes, d.packets)
                tx, rx = ((0, 0), count) if inbound else (count, (0, 0))
                flows.append(FlowRecord(a_ip, a_port, r_ip, r_port, proto, inbound, ace_id,
                                        True, d.first, d.last, *tx, *rx))  # fmt: skip
            scope = scopes.scope(vif)
            pack = max(1, self.settings.pack)
            dns = answers.get(key, [])
            for at in range(0, max(len(flows), len(dns)), pack):
                out.append(FlowReport(scope, tuple(flows[at : at + pack]),
                                      tuple(dns[at : at + pack])))  # fmt: skip
        return out


Sink = Callable[[list[FlowReport]], Awaitable[None]]


class FlowCollector:
    """Samples conntrack and NFLOG and hands reports to ``sink`` every ``interval``.

    ``source()`` gives the current plan and config (None before the first config).  While no
    app interface is logged, nothing is read and the NFLOG group is left; the first logged
    one turns conntrack accounting on and binds the group.  Driver errors are logged and the
    next sample tries again.
    """

    def __init__(
        self,
        conntrack: Conntrack,
        nflog: Nflog,
        source: Callable[[], tuple[NetPlan | None, NodeConfig | None]],
        sink: Sink,
        settings: FlowSettings | None = None,
        clock: Callable[[], float] = time.time,
        dns_log: Nflog | None = None,
    ) -> None:
        """``dns_log``: the listener of the firewall's DNS answers (no ``dnsReqs`` without)."""
        #: The address the node learnt for a switch instance's app interface, "" for none
        #: (without it their flows are not told apart; their drops are, by the log prefix).
        self.learnt: Callable[[str, int], str] | None = None
        self.conntrack = conntrack
        self.nflog = nflog
        self.dns_log = dns_log
        self.settings = settings or FlowSettings()
        self.table = FlowTable(self.settings)
        self._source = source
        self._sink = sink
        self._clock = clock
        self._accounting = False
        self._next_report = clock() + self.settings.interval
        self._failing = ""
        self.reported = 0

    def _problem(self, what: str, exc: Exception) -> None:
        text = f"flow logs: {what}: {exc}"
        if text != self._failing:  # once per distinct problem, not every sample
            log.warning("%s", text)
        self._failing = text

    async def step(self) -> None:
        """One sample (and a report when due)."""
        now = self._clock()
        layout, config = self._source()
        scopes = Scopes.of(layout, config, self.learnt)
        if not scopes.by_key:
            for listener in self._listeners():
                if listener.running:
                    await listener.stop()
            self.table = FlowTable(self.settings)
            self._next_report = now + self.settings.interval
            return
        try:
            if not self._accounting:
                await self.conntrack.enable_accounting()
                self._accounting = True
            for listener in self._listeners():
                if not listener.running:
                    await listener.start()
        except DriverError as exc:
            self._problem("cannot start", exc)
        try:
            entries = await self.conntrack.dump(FLOW_MARK, FLOW_MARK_MASK)
        except DriverError as exc:
            self._problem("conntrack not read", exc)
        else:
            self.table.observe(entries, scopes, now)
            self._failing = ""
        self.table.logged(self.nflog.drain(), scopes)
        if self.dns_log is not None:
            self.table.answered(self.dns_log.drain(), scopes)
        if now >= self._next_report:
            self._next_report = now + self.settings.interval
            reports = self.table.take(scopes)
            if reports:
                await self._sink(reports)
                self.reported += sum(len(r.flows) + len(r.dns) for r in reports)

    def _listeners(self) -> list[Nflog]:
        return [self.nflog] + ([self.dns_log] if self.dns_log is not None else [])

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop``; then close both drivers (what was not reported is lost)."""
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except Exception:  # a bug here must not stop the agent's other tasks
                    log.exception("flow logs: sample failed")
                if await wait_or_stop(stop, jittered(self.settings.sample, 0.9, 1.1)):
                    break
        finally:
            for listener in self._listeners():
                await listener.close()
            await self.conntrack.close()
