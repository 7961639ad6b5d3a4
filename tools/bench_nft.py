"""nftables driver figures for ``make bench`` (root): the agent's libnftables JSON apply beside
``nft -f`` of the same ruleset, in a scratch network namespace made and removed here.

The ruleset is what the distributed firewall will render, at scale: ``n_rules`` ACE-like rules
(address match, port match, counter, verdict, ``ace:<app>:<if>:<id>`` comment) over 100
per-interface chains reached from the input and forward hooks through one verdict map
(``iifname vmap @ifaces``), one address set per interface referenced by an ACE.  The text for
``nft -f`` is rendered from the same :class:`~agent.drivers.nft.Table` by :func:`render` below
(for just these constructs; checked: what ``nft -f`` makes of it lists back, through the driver,
as the model).  ``nft -f`` runs as a new process each time (``nsenter`` + ``nft``): the
reference includes that start-up, as the agent's figures include their reads.

Figures (median of ``repeat`` runs), the references measured in the same run:

- a whole table from nothing, beside ``nft -f`` of its text;
- the whole table again with one ACE edited (``replace_chains=None``: the driver reads the table,
  compares and replaces the one chain that differs), and with one set retyped (read, then the
  table rebuilt in place), beside ``nft -f`` of ``table {}`` + ``delete table`` + the text, the
  usual atomic replace of a table by text;
- one ACE edited through ``replace_chains`` (goal < 50 ms), beside ``nft -f`` of ``flush
  chain`` + that chain's rules;
- reading the table back (``list_owned``, parsed to the model), beside ``nft -j list ruleset``.

To plug into tools/bench.py: ``from tools.bench_nft import bench_apply`` and, as root,
``rows += bench_apply(5000, repeat=5)`` (about 15 s; it raises ``RuntimeError`` naming what is
missing when it cannot run: not root, no ``nft``/``nsenter``, no libnftables binding, which
bench.py can show as an error row as it does for ``ServiceMissing``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from agent.drivers.nft import (
    Chain,
    Family,
    LibNft,
    Map,
    NftSettings,
    Rule,
    Set,
    Table,
    table_prefix,
)
from tests.integration.prereqs import netns_missing

CHAINS = 100


def build(n_rules: int, *, node: str, salt: int = 0) -> Table:
    """The bench's table: ``n_rules`` ACEs over CHAINS interface chains and a verdict map."""
    per_chain = max(1, n_rules // CHAINS)
    chains, sets, elements = [], [], []
    for c in range(CHAINS):
        rules = []
        for r in range(per_chain):
            proto = "udp" if r % 2 else "tcp"
            right: Any = {"prefix": {"addr": f"10.{c}.{r % 256}.0", "len": 24}}
            if r == 0:
                right = f"@allow_{c}"
            rules.append(Rule((
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                           "right": right}},
                {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}},
                           "right": 1000 + r + (salt if r == 1 else 0)}},
                {"accept": None} if r % 3 else {"drop": None},
            ), f"ace:app{c}:veth{c}:{r + 1}", counter=True))  # fmt: skip
        chains.append(Chain(f"if_{c}", rules=tuple(rules)))
        sets.append(Set(f"allow_{c}", "ipv4_addr", {"interval"}, (
            {"prefix": {"addr": f"192.168.{c}.0", "len": 24}}, f"172.16.{c}.1")))  # fmt: skip
        elements.append((f"veth{c}", {"jump": {"target": f"if_{c}"}}))
    vmap = Rule(({"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@ifaces"}},))
    chains += [
        Chain("input", hook="input", type="filter", priority=0, rules=(vmap,)),
        Chain("forward", hook="forward", type="filter", priority=0, policy="drop", rules=(vmap,)),
    ]
    return Table(
        Family.INET,
        table_prefix(node) + "acl",
        chains=tuple(chains),
        sets=tuple(sets),
        maps=(Map("ifaces", "ifname", "verdict", tuple(elements)),),
    )


# --- a text renderer for the bench's constructs --------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if value.startswith("@"):
            return value
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            return json.dumps(value)
    if isinstance(value, list):
        return "{ " + ", ".join(_value(v) for v in value) + " }"
    if "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    if "range" in value:
        return "-".join(_value(v) for v in value["range"])
    if "ct" in value:
        return f"ct {value['ct']['key']}"
    if "set" in value:
        return "{ " + ", ".join(_value(v) for v in value["set"]) + " }"
    if "payload" in value:
        return f"{value['payload']['protocol']} {value['payload']['field']}"
    if "meta" in value:
        return f"meta {value['meta']['key']}"
    for verdict in ("jump", "goto"):
        if verdict in value:
            return f"{verdict} {value[verdict]['target']}"
    raise ValueError(f"the bench renderer does not know {value}")


def _statement(stmt: dict[str, Any]) -> str:
    [(key, body)] = stmt.items()
    if key == "match":
        op = {"==": "", "in": ""}.get(body["op"], body["op"] + " ")
        return f"{_value(body['left'])} {op}{_value(body['right'])}"
    if key in ("accept", "drop", "return", "continue", "masquerade"):
        return key
    if key == "log":
        parts = ["log"]
        if "prefix" in body:
            parts.append(f"prefix {json.dumps(body['prefix'])}")
        parts += [f"{k} {body[k]}" for k in ("group", "snaplen", "queue-threshold") if k in body]
        return " ".join(parts)
    if key == "mangle":
        return f"{_value(body['key'])} set {_value(body['value'])}"
    if key == "limit":
        return f"limit rate {body['rate']}/{body['per']} burst {body['burst']} packets"
    if key == "vmap":
        return f"{_value(body['key'])} vmap {_value(body['data'])}"
    return _value(stmt)


def _rule(rule: Rule) -> str:
    parts = [_statement(s) for s in rule.expr]
    if rule.counter:
        at = next((i for i, s in enumerate(rule.expr) if "match" not in s), len(parts))
        parts.insert(at, "counter")
    if rule.comment is not None:
        parts.append(f"comment {json.dumps(rule.comment)}")
    return " ".join(parts)


def render_chain(table: Table, chain: Chain) -> list[str]:
    lines = [f"\tchain {chain.name} {{"]
    if chain.hook is not None:
        lines.append(
            f"\t\ttype {chain.type} hook {chain.hook} priority {chain.priority}; "
            f"policy {chain.policy};"
        )
    lines += [f"\t\t{_rule(r)}" for r in chain.rules]
    return [*lines, "\t}"]


def render(table: Table) -> str:
    """``table`` in nft's text syntax (the bench's constructs only)."""
    lines = [f"table {table.family} {table.name} {{"]
    for s in table.sets:
        lines += [f"\tset {s.name} {{", f"\t\ttype {s.type}"]
        if s.flags:
            lines.append(f"\t\tflags {', '.join(sorted(s.flags))}")
        if s.timeout is not None:
            lines.append(f"\t\ttimeout {s.timeout}s")
        if s.elements:
            lines.append("\t\telements = { " + ", ".join(_value(e) for e in s.elements) + " }")
        lines.append("\t}")
    for m in table.maps:
        lines += [f"\tmap {m.name} {{", f"\t\ttype {m.type} : {m.map}"]
        pairs = [f"{_value(k)} : {_value(v)}" for k, v in m.elements]
        if pairs:
            lines.append("\t\telements = { " + ", ".join(pairs) + " }")
        lines.append("\t}")
    for chain in table.chains:
        lines += render_chain(table, chain)
    return "\n".join([*lines, "}", ""])


# --- the bench -----------------------------------------------------------------------------------


def _missing() -> str | None:
    return netns_missing({"nft": "nftables", "nsenter": "util-linux"}, ("nftables", "pyroute2"))


def bench_apply(n_rules: int = 5000, repeat: int = 5) -> list[tuple[str, str, str, str]]:
    """Rows (figure, eve-agent, reference, ratio); see the module docstring."""
    why = _missing()
    if why is not None:
        raise RuntimeError(f"nft bench cannot run: {why}")
    from pyroute2 import netns

    ns = f"evebench-nft-{uuid.uuid4().hex[:8]}"
    netns.create(ns)
    try:
        with tempfile.TemporaryDirectory(prefix="eve-bench-nft-") as tmp:
            return asyncio.run(_bench(ns, Path(tmp), n_rules, max(1, repeat)))
    finally:
        netns.remove(ns)


def _edited(table: Table, n_rules: int, node: str, n: int) -> tuple[Table, str]:
    """``table`` with one ACE edited in chain ``if_<n>``; that chain's name."""
    chain = build(n_rules, node=node, salt=n + 1).chain(f"if_{n % CHAINS}")
    assert chain is not None
    chains = tuple(chain if c.name == chain.name else c for c in table.chains)
    return dataclasses.replace(table, chains=chains), chain.name


def _retyped(table: Table, n: int) -> Table:
    """``table`` with set ``allow_<n>`` made a timeout set (a new definition: a rebuild)."""
    sets = tuple(
        dataclasses.replace(s, flags={"interval", "timeout"}) if s.name == f"allow_{n}" else s
        for s in table.sets
    )
    return dataclasses.replace(table, sets=sets)


async def _bench(ns: str, tmp: Path, n_rules: int, repeat: int) -> list[tuple[str, str, str, str]]:
    node = "bench-nft"
    nft = LibNft(NftSettings(node=node, netns=ns))
    table = build(n_rules, node=node)
    rules = sum(len(c.rules) for c in table.chains)
    in_ns = ["nsenter", f"--net=/run/netns/{ns}", "nft"]

    def nft_f(text: str) -> float:
        path = tmp / "ruleset.nft"
        path.write_text(text)
        t0 = time.perf_counter()
        subprocess.run([*in_ns, "-f", str(path)], check=True)
        return time.perf_counter() - t0

    def replace_text(new: Table) -> str:  # the usual atomic replace of a whole table
        ref = f"{new.family} {new.name}"
        return f"table {ref} {{}}\ndelete table {ref}\n" + render(new)

    async def timed(call: Awaitable[Any]) -> float:
        t0 = time.perf_counter()
        await call
        return time.perf_counter() - t0

    fresh, fresh_ref, whole, rebuild, again_ref, one, one_ref = [], [], [], [], [], [], []
    try:
        # The renderer is right: nft -f of its text lists back, through the driver, as the model.
        await asyncio.to_thread(nft_f, render(table))
        assert await nft.list_owned() == [table], "render() and the model disagree"
        await nft.delete_table(table.family, table.name)

        for n in range(repeat):
            fresh.append(await timed(nft.apply([table])))
            edited, _ = _edited(table, n_rules, node, n)
            whole.append(await timed(nft.apply([edited])))
            retyped = _retyped(edited, n)
            rebuild.append(await timed(nft.apply([retyped])))
            assert await nft.list_owned() == [retyped]
            await nft.delete_table(table.family, table.name)
            fresh_ref.append(await asyncio.to_thread(nft_f, render(table)))
            again_ref.append(await asyncio.to_thread(nft_f, replace_text(edited)))
            await nft.delete_table(table.family, table.name)

        await nft.apply([table])
        current = table
        for n in range(repeat):
            new, chain = _edited(current, n_rules, node, n)
            t0 = time.perf_counter()
            await nft.apply([new], replace_chains={(table.name, chain)})
            one.append(time.perf_counter() - t0)
            assert await nft.list_owned() == [new]
            current = new
            changed = new.chain(chain)
            assert changed is not None
            ref = f"{table.family} {table.name} {chain}"
            lines = [line.strip() for line in render_chain(new, changed)[1:-1]]
            text = f"flush chain {ref}\n" + "".join(f"add rule {ref} {line}\n" for line in lines)
            one_ref.append(await asyncio.to_thread(nft_f, text))

        def list_ref() -> float:
            t0 = time.perf_counter()
            subprocess.run([*in_ns, "-j", "list", "ruleset"], check=True, capture_output=True)
            return time.perf_counter() - t0

        reads = [await timed(nft.list_owned()) for _ in range(repeat)]
        reads_ref = [await asyncio.to_thread(list_ref) for _ in range(repeat)]
    finally:
        await nft.delete_table(table.family, table.name)
        await nft.close()

    med = statistics.median

    def row(label: str, mine: list[float], ref: list[float], how: str) -> tuple[str, str, str, str]:
        return (label, f"{med(mine) * 1e3:.1f} ms", f"{med(ref) * 1e3:.1f} ms ({how})",
                f"{med(mine) / med(ref):.2f}x")  # fmt: skip

    what = f"{rules:,} rules, {CHAINS} chains, vmap"
    replace = "nft -f: table {}; delete table; the text"
    return [
        row(f"nft: apply a whole table from nothing ({what})", fresh, fresh_ref,
            "nft -f of the same text, new process"),
        row("nft: apply the whole table, one ACE edited (read, compare, replace one chain)",
            whole, again_ref, replace),
        row("nft: apply the whole table, one set retyped (read, rebuild in place)",
            rebuild, again_ref, replace),
        row(f"nft: one ACE edited, replace_chains (goal < 50 ms; {rules // CHAINS} rules)",
            one, one_ref, "nft -f: flush chain + its rules"),
        row("nft: list_owned, parsed to the model", reads, reads_ref, "nft -j list ruleset"),
    ]  # fmt: skip


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    for row in bench_apply(n):
        print(" | ".join(row))
