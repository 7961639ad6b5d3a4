"""The distributed firewall's figures for ``make bench`` (root; scratch network namespaces made
and removed here).

The ruleset is the agent's own: :func:`agent.reconcile.firewall.render` of a plan with 100 app
interfaces on one local instance, 50 ACEs each (5,000: address + protocol + port allows, DROPs,
LIMITs), applied by the firewall's configurator through libnftables' JSON API.  References,
measured in the same run on the same ruleset:

- ``nft -f`` of the same tables as text (a new process each time, as the bench of
  tools/bench_nft.py);
- an EVE-style iptables rendering (EVE's zedrouter: per-interface chains in ``filter``, one
  linear jump per app address from ``FORWARD``, ``-m limit`` / ``-m comment`` / conntrack
  matches, a final DROP per chain) loaded by ``iptables-restore`` (Debian's, on nftables'
  compat layer) and by ``iptables-legacy-restore`` (x_tables, as older EVE builds);
- for one ACE edited: ``nft -f`` of ``flush chain`` + its rules, ``iptables-restore --noflush``
  of ``-F`` + that chain's rules.

The packet path: two app namespaces on one bridge in a node namespace (bridge netfilter on, as
the agent sets it), the first app's ACL ending in the ACE that allows the second (so a new
connection walks its whole chain), measured with tools/netprobe.py: TCP throughput over one
connection, request/response latency, and new connections per second (the figure ACLs cost:
later packets of a connection are conntrack's), with the 5,000 ACEs loaded beside the same
pair with no rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.drivers.nft import LibNft, NftSettings
from agent.model.acl import Ace, AceAction, AceMatch
from agent.model.ports import instance_addressing
from agent.reconcile import firewall
from agent.reconcile.netplan import LOCAL, NetPlan, NiPlan, VifPlan
from tests.integration.prereqs import netns_missing
from tools.bench_nft import render, render_chain

APPS, ACES = 100, 50
NI = "bench-ni"
PORT = 5201
Row = tuple[str, str, str, str]


def _ace(app: int, j: int, allow_peer: str | None) -> Ace:
    """ACE ``j`` (1-based id) of app ``app``: a mix of allows, drops and limits."""
    if allow_peer is not None:
        return Ace(j, "", 0, (AceMatch("ip", allow_peer), AceMatch("protocol", "tcp"),
                              AceMatch("fport", str(PORT))), ())  # fmt: skip
    net = f"172.{16 + j % 16}.{app}.0/24"
    proto = "udp" if j % 2 else "tcp"
    matches = (AceMatch("ip", net), AceMatch("protocol", proto), AceMatch("fport", str(1000 + j)))
    if j % 5 == 3:
        return Ace(j, "", 0, matches, (AceAction(drop=True),))
    if j % 5 == 4:
        limit = AceAction(limit=True, limit_rate=100, limit_unit="second", limit_burst=50)
        return Ace(j, "", 0, matches, (limit,))
    return Ace(j, "", 0, matches, ())


def plan(salt: int = 0) -> NetPlan:
    """100 app interfaces on one air-gapped local instance, 50 ACEs each; ``salt`` edits the
    port of ACE 10 of app ``salt`` (0: none)."""
    addressing = instance_addressing("10.200.0.0/16", "10.200.0.1", "10.200.0.10", "10.200.3.250")
    out = NetPlan()
    out.instances[NI] = NiPlan(NI, "bench", LOCAL, "ebench0", addressing, (), "", (), (), 0)
    for app in range(APPS):
        ip = f"10.200.{1 + app // 200}.{10 + app % 200}"
        peer = "10.200.1.11" if app == 0 else None
        acls = [_ace(app, j, None) for j in range(1, ACES)]
        acls.append(_ace(app, ACES, peer))
        if salt and app == salt:
            old = acls[9]
            acls[9] = dataclasses.replace(old, matches=(*old.matches[:2], AceMatch("fport", "7")))
        app_id = f"00000000-0000-4000-8000-{app:012d}"
        mac = f"02:00:00:00:{app // 256:02x}:{app % 256:02x}"
        out.vifs[(app_id, 0)] = VifPlan(app_id, 0, NI, f"ebv{app}", mac, ip, f"app{app}",
                                        tuple(acls))  # fmt: skip
    return out


# --- EVE-style iptables --------------------------------------------------------------------------


def _ipt_rules(vif: VifPlan, n: int) -> list[str]:
    """One app interface's egress chain in iptables-restore syntax."""
    chain, out = f"eve-out-{n}", []
    for ace in vif.acls:
        m = {x.type: x.value for x in ace.matches}
        spec = f"-A {chain} -d {m['ip']} -p {m['protocol']} --dport {m['fport']}"
        tag = f'-m comment --comment "ace:{vif.app_id}:{vif.index}:{ace.id}"'
        action = ace.actions[0] if ace.actions else None
        if action is not None and action.drop:
            out.append(f"{spec} {tag} -j DROP")
        elif action is not None and action.limit:
            out.append(f"{spec} -m limit --limit {action.limit_rate}/second --limit-burst "
                       f"{action.limit_burst} {tag} -j ACCEPT")  # fmt: skip
            out.append(f'{spec} {tag[:-1]}:over" -j DROP')
        else:
            out.append(f"{spec} {tag} -j ACCEPT")
    out.append(f'-A {chain} -m comment --comment "ace:{vif.app_id}:{vif.index}:0" -j DROP')
    return out


def iptables_text(netplan: NetPlan) -> str:
    """The whole ruleset, EVE-style: linear per-address jumps from FORWARD to per-interface
    chains."""
    vifs = sorted(netplan.vifs.values(), key=lambda v: (v.app_id, v.index))
    lines = ["*filter", ":FORWARD ACCEPT [0:0]"]
    lines += [f":eve-{d}-{n} - [0:0]" for n in range(len(vifs)) for d in ("out", "in")]
    lines.append("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
    lines += [f"-A FORWARD -s {v.ip} -j eve-out-{n}" for n, v in enumerate(vifs)]
    lines += [f"-A FORWARD -d {v.ip} -j eve-in-{n}" for n, v in enumerate(vifs)]
    for n, vif in enumerate(vifs):
        lines += _ipt_rules(vif, n)
        lines.append(f"-A eve-in-{n} -j DROP")
    return "\n".join([*lines, "COMMIT", ""])


def iptables_chain_text(netplan: NetPlan, app_id: str) -> str:
    vifs = sorted(netplan.vifs.values(), key=lambda v: (v.app_id, v.index))
    n = next(i for i, v in enumerate(vifs) if v.app_id == app_id)
    return "\n".join(["*filter", f"-F eve-out-{n}", *_ipt_rules(vifs[n], n), "COMMIT", ""])


# --- the bench -----------------------------------------------------------------------------------


def _sh(*argv: str, stdin: str | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True)
    return time.perf_counter() - t0


@contextmanager
def _netns(*names: str) -> Iterator[None]:
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f} ms"


def bench_firewall(repeat: int = 5, seconds: float = 3.0) -> list[Row]:
    """Rows (figure, eve-agent, reference, ratio); see the module docstring.  RuntimeError
    naming what is missing when it cannot run."""
    why = netns_missing(
        {"nft": "nftables", "iptables-restore": "iptables",
         "iptables-legacy-restore": "iptables"},
        ("nftables", "pyroute2"),
    )  # fmt: skip
    if why is not None:
        raise RuntimeError(f"firewall bench cannot run: {why}")
    tag = uuid.uuid4().hex[:6]
    ns = f"evebench-fw-{tag}"
    with _netns(ns), tempfile.TemporaryDirectory(prefix="eve-bench-fw-") as tmp:
        rows = asyncio.run(_apply_rows(ns, Path(tmp), max(1, repeat)))
    rows += _packet_rows(tag, seconds)
    return rows


async def _apply_rows(ns: str, tmp: Path, repeat: int) -> list[Row]:
    nft = LibNft(NftSettings(node="bench-fw", netns=ns))
    conf = firewall.FirewallConfigurator(nft)
    in_ns = ["nsenter", f"--net=/run/netns/{ns}"]
    t0 = time.perf_counter()
    base = plan()
    item, errors, _ = firewall.render(base)
    render_s = time.perf_counter() - t0
    assert not errors, errors
    tables = conf._ours(item)
    text = "".join(render(t) for t in tables)
    rules = sum(len(c.rules) for t in tables for c in t.chains)
    ipt = iptables_text(base)

    # The agent's own command list for these tables from nothing, for `nft -j -f`: what
    # libnftables' JSON input costs by itself (the issue's API) beside its text input.
    cmds: list[dict[str, object]] = []
    for t in tables:
        nft._rebuild(t, None, cmds)
    commands = json.dumps({"nftables": cmds}, separators=(",", ":"))

    def nft_f(body: str, *flags: str) -> float:
        path = tmp / "rules.nft"
        path.write_text(body)
        return _sh(*in_ns, "nft", *flags, "-f", str(path))

    async def drop_tables() -> None:
        for t in tables:
            await nft.delete_table(t.family, t.name)

    mine, mine_render, ref, ref_json, legacy, nft_compat = [], [], [], [], [], []
    one, one_ref, one_ipt = [], [], []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fresh, _, _ = firewall.render(plan())
            t1 = time.perf_counter()
            await conf.create(fresh)
            mine.append(time.perf_counter() - t0)
            mine_render.append(t1 - t0)
            await drop_tables()
            ref.append(await asyncio.to_thread(nft_f, text))
            await drop_tables()
            ref_json.append(await asyncio.to_thread(nft_f, commands, "-j"))
            await drop_tables()
            nft_compat.append(await asyncio.to_thread(_sh, *in_ns, "iptables-restore", stdin=ipt))
            legacy.append(
                await asyncio.to_thread(_sh, *in_ns, "iptables-legacy-restore", stdin=ipt)
            )
        # One ACE edited: the configurator replaces the one chain that changed.
        await conf.create(item)
        current = item
        for n in range(1, repeat + 1):
            edited_plan = plan(salt=n)
            new, _, _ = firewall.render(edited_plan)
            t0 = time.perf_counter()
            await conf.modify(current, new)
            one.append(time.perf_counter() - t0)
            current = new
            changed = [
                (t, c) for t, old in zip(conf._ours(new), conf._ours(item), strict=True)
                for c in t.chains if c != old.chain(c.name)
            ]  # fmt: skip
            (table, chain) = changed[0]
            ref_name = f"{table.family} {table.name} {chain.name}"
            lines = [line.strip() for line in render_chain(table, chain)[1:-1]]
            body = f"flush chain {ref_name}\n" + "".join(
                f"add rule {ref_name} {line}\n" for line in lines
            )
            one_ref.append(await asyncio.to_thread(nft_f, body))
            app_id = f"00000000-0000-4000-8000-{n:012d}"
            chain_text = iptables_chain_text(edited_plan, app_id)
            one_ipt.append(
                await asyncio.to_thread(
                    _sh, *in_ns, "iptables-legacy-restore", "--noflush", stdin=chain_text
                )
            )
    finally:
        await drop_tables()
        await nft.close()
    med = statistics.median
    what = f"{APPS * ACES:,} ACEs, {APPS} app interfaces, {rules:,} nft rules"
    return [
        (f"firewall: render + apply from nothing ({what})", _ms(mine),
         f"{_ms(ref)} (nft -f of the same tables, new process)", f"{med(mine) / med(ref):.2f}x"),
        ("firewall: the JSON API's floor: nft -j -f of the agent's commands", _ms(ref_json),
         f"{_ms(ref)} (nft -f of the same tables as text)", f"{med(ref_json) / med(ref):.2f}x"),
        ("firewall: of which render (plan to tables, pure Python)", _ms(mine_render),
         f"{render_s * 1e3:.1f} ms (first render, cold)", ""),
        ("firewall: the same ACEs EVE-style in iptables", _ms(mine),
         f"{_ms(legacy)} iptables-legacy-restore; {_ms(nft_compat)} iptables-restore (nft)",
         f"{med(mine) / med(legacy):.2f}x / {med(mine) / med(nft_compat):.2f}x"),
        ("firewall: one ACE edited (goal < 50 ms)", _ms(one),
         f"{_ms(one_ref)} nft -f flush chain + rules; {_ms(one_ipt)} iptables-legacy-restore "
         "--noflush of the chain", f"{med(one) / med(one_ref):.2f}x"),
    ]  # fmt: skip


def _probe(ns: str, *args: str) -> dict[str, float]:
    script = str(Path(__file__).with_name("netprobe.py"))
    done = subprocess.run(["ip", "netns", "exec", ns, "python3", script, "client", *args],
                          capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout)
    return result


def _packet_rows(tag: str, seconds: float) -> list[Row]:
    node, a, b = f"evebench-pn-{tag}", f"evebench-pa-{tag}", f"evebench-pb-{tag}"
    base = plan()
    vifs = sorted(base.vifs.values(), key=lambda v: v.app_id)
    with _netns(node, a, b):
        nsrun = ["ip", "-n", node]
        subprocess.run([*nsrun, "link", "add", "ebench0", "type", "bridge"], check=True)
        subprocess.run([*nsrun, "addr", "add", "10.200.0.1/16", "dev", "ebench0"], check=True)
        subprocess.run([*nsrun, "link", "set", "ebench0", "up"], check=True)
        for app_ns, vif, host in ((a, vifs[0], "ebva"), (b, vifs[1], "ebvb")):
            subprocess.run([*nsrun, "link", "add", host, "type", "veth", "peer", "name", "eth0",
                            "netns", app_ns], check=True)  # fmt: skip
            subprocess.run([*nsrun, "link", "set", host, "master", "ebench0", "up"], check=True)
            subprocess.run(["ip", "-n", app_ns, "addr", "add", f"{vif.ip}/16", "dev", "eth0"],
                           check=True)  # fmt: skip
            subprocess.run(["ip", "-n", app_ns, "link", "set", "eth0", "up"], check=True)
        bridge_nf = "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables"
        subprocess.run(["ip", "netns", "exec", node, "sh", "-c", bridge_nf], check=True)
        script = str(Path(__file__).with_name("netprobe.py"))
        server = subprocess.Popen(["ip", "netns", "exec", b, "python3", script, "server",
                                   str(PORT)], stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(0.5)
            target = (vifs[1].ip, str(PORT), str(seconds))
            plain, loaded = asyncio.run(_rounds(node, base, a, target))
        finally:
            server.kill()
            server.wait()
    return [
        ("packet path: TCP throughput app to app, 5,000 ACEs loaded",
         f"{loaded['throughput']['bytes_per_s'] / 1e6:.0f} MB/s",
         f"{plain['throughput']['bytes_per_s'] / 1e6:.0f} MB/s (no rules)",
         f"{loaded['throughput']['bytes_per_s'] / plain['throughput']['bytes_per_s']:.2f}x"),
        ("packet path: request/response latency (median, p99)",
         f"{loaded['latency']['rtt_us_median']:.0f} / {loaded['latency']['rtt_us_p99']:.0f} us",
         f"{plain['latency']['rtt_us_median']:.0f} / {plain['latency']['rtt_us_p99']:.0f} us "
         "(no rules)",
         f"{loaded['latency']['rtt_us_median'] / plain['latency']['rtt_us_median']:.2f}x"),
        ("packet path: new TCP connections/s (each walks the 50-ACE chain)",
         f"{loaded['connect']['connects_per_s']:.0f}/s",
         f"{plain['connect']['connects_per_s']:.0f}/s (no rules)",
         f"{loaded['connect']['connects_per_s'] / plain['connect']['connects_per_s']:.2f}x"),
    ]  # fmt: skip


async def _rounds(
    node: str, base: NetPlan, a: str, target: tuple[str, str, str], rounds: int = 3
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Medians over ``rounds`` of each measure without rules and with the agent's 5,000 ACEs,
    alternating (so that load from elsewhere on the machine falls on both alike)."""
    nft = LibNft(NftSettings(node="bench-pp", netns=node))
    conf = firewall.FirewallConfigurator(nft)
    item, _, _ = firewall.render(base)
    modes = ("throughput", "latency", "connect")
    runs: dict[bool, dict[str, list[dict[str, float]]]] = {
        False: {m: [] for m in modes}, True: {m: [] for m in modes}
    }  # fmt: skip
    try:
        for _ in range(rounds):
            for rules in (False, True):
                if rules:
                    await conf.create(item)
                for mode in modes:
                    runs[rules][mode].append(await asyncio.to_thread(_probe, a, mode, *target))
                if rules:
                    counters = await conf.counters()
                    app0 = base.vifs[min(base.vifs)].app_id
                    assert counters.get(f"ace:{app0}:0:{ACES}", (0, 0))[0] > 0, (
                        "the allowing ACE saw no packet: the rules were not in the path"
                    )
                    await conf.delete(item)
    finally:
        await conf.delete(item)
        await nft.close()

    def medians(by_mode: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
        return {
            m: {k: statistics.median(r[k] for r in results) for k in results[0]}
            for m, results in by_mode.items()
        }

    return medians(runs[False]), medians(runs[True])


if __name__ == "__main__":
    for row in bench_firewall(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        print(" | ".join(row))
