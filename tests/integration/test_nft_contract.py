"""One contract for both nftables drivers: FakeNft and LibNft (libnftables JSON, nftables 1.0.6
here) in a network namespace each test creates and deletes; the root namespace's ruleset is
never touched (checked).

The real half observes the kernel through the ``nft`` command run in the namespace (tests only:
the agent never runs it), puts the foreign tables there with ``nft -f``, and counts real packets:
a veth pair joins the driver's namespace to a second one, from which ``nsenter`` runs a Python
UDP sender.  The fake half gets the same calls, with the fake's hooks standing in for the
foreign tables and the traffic.  Without root, network namespaces, libnftables or the ``nft``
command, the real half fails when services are required (CI, ``make test``,
``EVE_AGENT_REQUIRE_SERVICES=1``) and skips otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError
from agent.drivers.nft import Chain, Family, LibNft, Map, Nft, NftSettings, Rule, Set, Table
from agent.drivers.nft_api import table_prefix, validate
from agent.drivers.nft_fake import FakeNft
from tests.integration.prereqs import netns_missing

IFACE = "nft-ct-a"  # the driver's end of the veth pair
PEER = "nft-ct-b"
ADDR, PEER_ADDR = "10.99.0.1", "10.99.0.2"
OTHER_NODE = "some-other-node"
SENDER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(int(sys.argv[4])):\n"
    "    s.sendto(b'x' * int(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))\n"
)


# --- expressions ---------------------------------------------------------------------------------


def match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def payload(protocol: str, name: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": name}}


def meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


ACCEPT: dict[str, Any] = {"accept": None}
DROP: dict[str, Any] = {"drop": None}


def ace(app: str, iface: str, ace_id: int, *expr: dict[str, Any]) -> Rule:
    return Rule(expr, f"ace:{app}:{iface}:{ace_id}", counter=True)


def acl_table(name: str) -> Table:
    """Per-interface ACL chains reached through one verdict map, as the firewall will render."""
    return Table(
        Family.INET,
        name,
        chains=(
            Chain("input", hook="input", type="filter", priority=0,
                  rules=(Rule(({"vmap": {"key": meta("iifname"), "data": "@ifaces"}},)),)),
            Chain("forward", hook="forward", type="filter", priority=0, policy="drop", rules=(
                Rule((match(meta("iifname"), "veth-*"), match({"ct": {"key": "state"}},
                      ["established", "related"], "in"), ACCEPT), "established"),
                Rule(({"vmap": {"key": meta("iifname"), "data": "@ifaces"}},)),
            )),
            Chain("if_a", rules=(
                ace("app1", "a", 1, match(payload("ip", "daddr"), "@allow_a"),
                    match(payload("udp", "dport"), 5001), ACCEPT),
                ace("app1", "a", 2, match(payload("udp", "dport"), 5002), DROP),
                ace("app1", "a", 3, match(payload("ip", "saddr"), "@fqdn_a"),
                    match(payload("tcp", "dport"), {"set": [80, 443]}),
                    {"limit": {"rate": 10, "burst": 5, "per": "second"}}, ACCEPT),
                ace("app1", "a", 4, match(payload("tcp", "dport"), "@ports"), ACCEPT),
                Rule((match(payload("ip6", "daddr"), {"prefix": {"addr": "fd00::", "len": 64}}),
                      ACCEPT)),
                ace("app1", "a", 0, DROP),
            )),
            Chain("if_b", rules=(ace("app2", "b", 1, {"jump": {"target": "common"}}),)),
            Chain("common", rules=(Rule((match(payload("icmp", "type"), "echo-request"),
                                         ACCEPT)),)),
        ),
        sets=(
            Set("allow_a", "ipv4_addr", {"interval"}, (
                {"prefix": {"addr": "10.99.0.0", "len": 24}}, "192.168.7.7",
                {"range": ["172.16.0.1", "172.16.0.9"]})),
            Set("ports", "inet_service", {"interval"}, (22, {"range": [1000, 2000]})),
            Set("fqdn_a", "ipv4_addr", {"timeout"}, timeout=3600),
        ),
        maps=(Map("ifaces", "ifname", "verdict", (
            (IFACE, {"jump": {"target": "if_a"}}), ("veth-b", {"goto": {"target": "if_b"}}))),),
    )  # fmt: skip


def nat_table(name: str) -> Table:
    return Table(
        Family.IP,
        name,
        chains=(
            Chain("pre", hook="prerouting", type="nat", priority=-100, rules=(
                Rule((match(meta("iifname"), "uplink0"), match(payload("tcp", "dport"), 8080),
                      {"dnat": {"addr": "10.99.0.5", "port": 80}}), "portmap:app1:8080", True),)),
            Chain("post", hook="postrouting", type="nat", priority=100, rules=(
                Rule((match(payload("ip", "saddr"), {"prefix": {"addr": "10.99.0.0", "len": 24}}),
                      match(meta("oifname"), "uplink0"), {"masquerade": None})),)),
        ),
    )  # fmt: skip


def with_chain(table: Table, chain: Chain) -> Table:
    others = tuple(c for c in table.chains if c.name != chain.name)
    return dataclasses.replace(table, chains=(*others, chain))


def without_chain(table: Table, name: str) -> Table:
    return dataclasses.replace(table, chains=tuple(c for c in table.chains if c.name != name))


def replace_set(table: Table, new: Set) -> Table:
    return dataclasses.replace(
        table, sets=tuple(new if s.name == new.name else s for s in table.sets)
    )


# --- the two environments ------------------------------------------------------------------------


@dataclass
class Env:
    kind: str
    nft: Nft
    #: Put a table the agent did not make.
    add_foreign: Callable[[Table, str], Awaitable[None]]
    #: The foreign tables as the system holds them (compared before and after).
    foreign_state: Callable[[], Awaitable[str]]
    #: Send ``count`` UDP packets of ``size`` bytes to ``port`` on IFACE; the fake counts them
    #: on the rule (chain, comment) the real kernel would.
    send_udp: Callable[[Table, str, str, int, int, int], Awaitable[None]]
    #: The namespace's whole ruleset as text (the fake: its tables).
    ruleset: Callable[[], Awaitable[str]]
    netns: str | None = None
    #: Real half: start sending ``count`` UDP packets to ``port`` on IFACE (a process).
    flood: Callable[[int, int], Awaitable[asyncio.subprocess.Process]] | None = None

    @property
    def name(self) -> Callable[[str], str]:
        return self.nft.table_name


async def _run(*argv: str, stdin: str | None = None) -> str:
    done = await asyncio.to_thread(
        subprocess.run, argv, input=stdin, capture_output=True, text=True, timeout=20
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _nft_text(table: Table, text: str) -> str:
    return f"table {table.family} {table.name} {{\n{text}\n}}\n"


def _real_missing() -> str | None:
    return netns_missing({"nft": "nftables", "nsenter": "util-linux"}, ("nftables", "pyroute2"))


def _veth(ns: str, peer_ns: str) -> None:
    """The veth pair, made in ``ns`` with its peer in ``peer_ns`` (never in the root one)."""
    from pyroute2 import IPRoute

    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname=IFACE, kind="veth", peer={"ifname": PEER, "net_ns_fd": peer_ns})
    for name, ifname, address in ((ns, IFACE, ADDR), (peer_ns, PEER, PEER_ADDR)):
        with IPRoute(netns=name) as ipr:
            index = ipr.link_lookup(ifname=ifname)[0]
            ipr.addr("add", index=index, address=address, prefixlen=24)
            ipr.link("set", index=index, state="up")


@pytest.fixture(params=["fake", "real"])
async def env(
    request: pytest.FixtureRequest, require_service: Callable[[str, str], NoReturn]
) -> AsyncIterator[Env]:
    node = f"evetest-nft-{uuid.uuid4().hex[:8]}"
    if request.param == "fake":
        fake = FakeNft(NftSettings(node=node))

        async def add_foreign(table: Table, text: str) -> None:
            fake.add_foreign(table)

        async def foreign_state() -> str:
            return repr(sorted((k, t) for k, t in fake.tables.items() if not fake.is_ours(k[1])))

        async def send_udp(table: Table, chain: str, comment: str, port: int, n: int,
                           size: int) -> None:  # fmt: skip
            fake.count(table.family, table.name, chain, comment, n, n * (28 + size))

        async def ruleset() -> str:
            return repr(sorted(fake.tables.items()))

        yield Env("fake", fake, add_foreign, foreign_state, send_udp, ruleset)
        return

    missing = _real_missing()
    if missing is not None:
        require_service("nftables in a network namespace", missing)
    from pyroute2 import netns

    ns = f"evetest-nft-{uuid.uuid4().hex[:10]}"
    try:
        netns.create(ns)
    except OSError as exc:
        require_service("network namespaces", f"cannot create one: {exc}")
    nft = LibNft(NftSettings(node=node, netns=ns))  # checks its argument only
    in_ns = ("nsenter", f"--net=/run/netns/{ns}")
    peer: list[str] = []

    async def add_foreign_real(table: Table, text: str) -> None:
        await _run(*in_ns, "nft", "-f", "-", stdin=_nft_text(table, text))

    async def foreign_state_real() -> str:
        listed = json.loads(await _run(*in_ns, "nft", "-j", "list", "ruleset"))["nftables"]
        return json.dumps([
            obj for obj in listed
            if not any(nft.is_ours(str(b.get("table", b.get("name")))) for b in obj.values())
        ])  # fmt: skip

    async def peer_ns() -> str:
        if not peer:
            peer.append(f"{ns}-p")
            await asyncio.to_thread(netns.create, peer[0])
            await asyncio.to_thread(_veth, ns, peer[0])
        return peer[0]

    async def send_udp_real(table: Table, chain: str, comment: str, port: int, n: int,
                            size: int) -> None:  # fmt: skip
        await _run("nsenter", f"--net=/run/netns/{await peer_ns()}", sys.executable, "-c",
                   SENDER, ADDR, str(port), str(size), str(n))  # fmt: skip

    async def flood(port: int, n: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/run/netns/{await peer_ns()}", sys.executable, "-c", SENDER,
            ADDR, str(port), "1", str(n))  # fmt: skip

    async def ruleset_real() -> str:
        return await _run(*in_ns, "nft", "list", "ruleset")

    try:
        yield Env("real", nft, add_foreign_real, foreign_state_real, send_udp_real,
                  ruleset_real, ns, flood)  # fmt: skip
    finally:
        await nft.close()
        for name in (ns, *peer):
            netns.remove(name)
    root = await _run("nft", "list", "tables")
    assert nft.prefix not in root, f"a table of ours in the root namespace: {root}"


async def put_foreign(env: Env) -> list[Table]:
    """docker's ``ip filter`` table and another node's table, both with content."""
    docker = Table(
        Family.IP,
        "filter",
        chains=(
            Chain("FORWARD", hook="forward", type="filter", priority=0, policy="accept"),
            Chain("DOCKER", rules=(Rule((match(payload("ip", "daddr"), "172.17.0.2"), ACCEPT)),)),
        ),
    )
    other = Table(Family.INET, table_prefix(OTHER_NODE) + "fw", chains=(Chain("c"),),
                  sets=(Set("s", "ipv4_addr", elements=("10.1.1.1",)),))  # fmt: skip
    await env.add_foreign(docker, "chain FORWARD { type filter hook forward priority 0; }\n"
                          "chain DOCKER { ip daddr 172.17.0.2 accept; }")  # fmt: skip
    await env.add_foreign(other, "set s { type ipv4_addr; elements = { 10.1.1.1 }; }\nchain c {}")
    return [docker, other]


async def timed(what: str, env: Env, call: Awaitable[None]) -> float:
    t0 = time.perf_counter()
    await call
    elapsed = time.perf_counter() - t0
    print(f"{env.kind}: {what} in {elapsed * 1e3:.1f} ms")
    return elapsed


# --- the contract --------------------------------------------------------------------------------


async def test_apply_round_trips_and_is_idempotent(env: Env, loop_watch: Any) -> None:
    nft = env.nft
    foreign = await put_foreign(env)
    before = await env.foreign_state()
    acl, nat = acl_table(env.name("acl")), nat_table(env.name("nat"))
    assert acl.name.startswith("eveagent_evetest-nft-") and nft.prefix.endswith("_")

    await timed("apply of two tables", env, nft.apply([acl, nat]))
    assert await nft.list_owned() == [acl, nat]  # sorted by (family, name): inet < ip
    await timed("re-apply of the same tables", env, nft.apply([nat, acl]))
    assert await nft.list_owned() == [acl, nat]
    counters = await nft.counters(Family.INET, acl.name)
    assert counters == {("if_a", f"ace:app1:a:{i}"): (0, 0) for i in (0, 1, 2, 3, 4)} | {
        ("if_b", "ace:app2:b:1"): (0, 0)
    }
    assert await nft.counters(Family.IP, nat.name) == {("pre", "portmap:app1:8080"): (0, 0)}
    assert await env.foreign_state() == before
    owned = {o.name for o in await nft.list_owned()}
    assert not owned & {t.name for t in foreign}
    if env.kind == "real":
        text = await env.ruleset()
        assert "iifname vmap @ifaces" in text and "counter packets 0 bytes 0 accept" in text
        assert 'comment "ace:app1:a:1"' in text and "dnat to 10.99.0.5:80" in text


async def test_foreign_tables_are_never_touched(env: Env) -> None:
    nft = env.nft
    docker, other = await put_foreign(env)
    before = await env.foreign_state()
    for table in (docker, other, dataclasses.replace(docker, name=nft.prefix)):
        with pytest.raises(PermanentError, match="not ours"):
            await nft.apply([dataclasses.replace(table, chains=())])
        for call in (
            nft.delete_table(table.family, table.name),
            nft.counters(table.family, table.name),
            nft.add_elements(table.family, table.name, "s", ["10.2.2.2"]),
            nft.delete_elements(table.family, table.name, "s", ["10.1.1.1"]),
        ):
            with pytest.raises(PermanentError, match="not ours"):
                await call
    mine = acl_table(env.name("acl"))
    with pytest.raises(PermanentError, match="not ours"):  # one foreign table: nothing applied
        await nft.apply([mine, dataclasses.replace(other, chains=())])
    assert await nft.list_owned() == []
    assert await env.foreign_state() == before


async def test_incremental_chain_replace(env: Env) -> None:
    nft = env.nft
    acl = acl_table(env.name("acl"))
    await nft.apply([acl])
    name = acl.name
    if_a = acl.chain("if_a")
    assert if_a is not None
    # One ACE edited, an address added to and one removed from a set.
    edited = dataclasses.replace(if_a, rules=(
        ace("app1", "a", 1, match(payload("ip", "daddr"), "@allow_a"),
            match(payload("udp", "dport"), 5011), ACCEPT), *if_a.rules[1:]))  # fmt: skip
    allow = Set("allow_a", "ipv4_addr", {"interval"}, (
        {"prefix": {"addr": "10.99.0.0", "len": 24}}, "192.168.8.8"))  # fmt: skip
    new = replace_set(with_chain(acl, edited), allow)
    await timed("one-ACE change", env, nft.apply([new], replace_chains={(name, "if_a")}))
    assert await nft.list_owned() == [new]

    # A new interface: its chain and its verdict map element; then it goes again.
    if_c = Chain("if_c", rules=(ace("app3", "c", 1, match(payload("udp", "dport"), 53), ACCEPT),))
    ifaces = dataclasses.replace(new.maps[0], elements=(
        *new.maps[0].elements, ("veth-c", {"jump": {"target": "if_c"}})))  # fmt: skip
    added = dataclasses.replace(with_chain(new, if_c), maps=(ifaces,))
    await nft.apply([added], replace_chains={(name, "if_c")})
    assert await nft.list_owned() == [added]
    await nft.apply([new], replace_chains={(name, "if_c")})
    assert await nft.list_owned() == [new]

    # A set that changed type cannot be changed in place: the table is applied whole.
    ports = Set("ports", "inet_service", frozenset(), (22, 443))
    retyped = replace_set(new, ports)
    await nft.apply([retyped], replace_chains={(name, "if_a")})
    assert await nft.list_owned() == [retyped]
    with pytest.raises(PermanentError, match="not applied"):
        await nft.apply([retyped], replace_chains={(env.name("other"), "if_a")})


async def test_whole_apply_changes_structure(env: Env) -> None:
    nft = env.nft
    acl = acl_table(env.name("acl"))
    await nft.apply([acl])
    forward = acl.chain("forward")
    assert forward is not None
    common = Chain("common", hook="output", type="filter", priority=0, policy="accept")
    changed = without_chain(acl, "if_b")
    changed = dataclasses.replace(changed, maps=(dataclasses.replace(
        acl.maps[0], elements=acl.maps[0].elements[:1]),))  # fmt: skip
    changed = with_chain(changed, dataclasses.replace(forward, priority=10, policy="accept"))
    changed = with_chain(changed, common)  # a regular chain becomes a base chain
    changed = replace_set(changed, Set("allow_a", "ipv6_addr", {"interval"}, ("fd00::1",)))
    changed = dataclasses.replace(changed, sets=tuple(s for s in changed.sets if s.name != "ports"))
    if_a = changed.chain("if_a")
    assert if_a is not None
    changed = with_chain(changed, dataclasses.replace(if_a, rules=(
        ace("app1", "a", 1, match(payload("ip6", "daddr"), "@allow_a"), ACCEPT),)))  # fmt: skip
    await nft.apply([changed])
    assert await nft.list_owned() == [changed]
    await nft.apply([acl])
    assert await nft.list_owned() == [acl]


async def test_set_and_map_elements(env: Env) -> None:
    nft = env.nft
    acl = acl_table(env.name("acl"))
    await nft.apply([acl])
    fam, name = Family.INET, acl.name
    timed_elem = {"elem": {"val": "203.0.113.9", "timeout": 600}}
    await nft.add_elements(fam, name, "fqdn_a", ["203.0.113.7", timed_elem])
    await nft.add_elements(fam, name, "fqdn_a", ["203.0.113.7"])  # present: fine
    await nft.add_elements(fam, name, "allow_a", [{"prefix": {"addr": "10.77.0.0", "len": 16}}])
    await nft.add_elements(fam, name, "ifaces", [("veth-z", {"jump": {"target": "common"}})])
    [table] = await nft.list_owned()
    sets = {s.name: s for s in table.sets}
    assert sets["fqdn_a"].elements == ("203.0.113.7", timed_elem)
    assert {"prefix": {"addr": "10.77.0.0", "len": 16}} in sets["allow_a"].elements
    assert ("veth-z", {"jump": {"target": "common"}}) in table.maps[0].elements

    # A whole re-apply resets static sets and maps and keeps the dynamic elements.
    await nft.apply([acl])
    [table] = await nft.list_owned()
    assert table.without_dynamic_elements() == acl
    assert {s.name: s for s in table.sets}["fqdn_a"].elements == ("203.0.113.7", timed_elem)

    await nft.delete_elements(fam, name, "fqdn_a", ["203.0.113.7", "198.51.100.1"])
    await nft.delete_elements(fam, name, "fqdn_a", ["203.0.113.9"])  # by value
    await nft.delete_elements(fam, name, "ifaces", [IFACE])  # a map: by key
    await nft.delete_elements(fam, name, "no_such_set", ["203.0.113.7"])  # gone: fine
    [table] = await nft.list_owned()
    assert {s.name: s for s in table.sets}["fqdn_a"].elements == ()
    assert [k for k, _ in table.maps[0].elements] == ["veth-b"]
    with pytest.raises(NotFoundError):
        await nft.add_elements(fam, name, "no_such_set", ["203.0.113.7"])
    with pytest.raises(PermanentError, match="not an IP address"):  # never resolved by DNS
        await nft.add_elements(fam, name, "fqdn_a", ["example.invalid"])


async def test_counters_count_packets_and_survive_changes(env: Env) -> None:
    nft = env.nft
    acl = acl_table(env.name("acl"))
    await nft.apply([acl])
    name = acl.name
    one, two = ("if_a", "ace:app1:a:1"), ("if_a", "ace:app1:a:2")
    await env.send_udp(acl, *one, 5001, 3, 100)
    await env.send_udp(acl, *two, 5002, 2, 50)
    expected = {one: (3, 3 * 128), two: (2, 2 * 78)}
    deadline = time.monotonic() + 5
    while True:
        counters = await nft.counters(Family.INET, name)
        if {k: counters[k] for k in expected} == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert {k: counters[k] for k in expected} == expected
    print(f"{env.kind}: counters {counters}")

    # ACE 2 edited (same id), ACE 4 gone, ACE 5 new: counters follow the comments.
    if_a = acl.chain("if_a")
    assert if_a is not None
    rules = [r for r in if_a.rules if r.comment != "ace:app1:a:4"]
    rules[1] = ace("app1", "a", 2, match(payload("udp", "dport"), 5003), DROP)
    rules.insert(2, ace("app1", "a", 5, match(payload("udp", "dport"), 5005), ACCEPT))
    new = with_chain(acl, dataclasses.replace(if_a, rules=tuple(rules)))
    await nft.apply([new], replace_chains={(name, "if_a")})
    after = await nft.counters(Family.INET, name)
    assert after[one] == expected[one] and after[two] == expected[two]
    assert after[("if_a", "ace:app1:a:5")] == (0, 0) and ("if_a", "ace:app1:a:4") not in after
    await nft.apply([new])  # whole
    after = await nft.counters(Family.INET, name)
    assert {k: after[k] for k in expected} == expected
    await nft.delete_table(Family.INET, name)
    with pytest.raises(NotFoundError):
        await nft.counters(Family.INET, name)


async def test_delete_table_is_idempotent(env: Env) -> None:
    nft = env.nft
    acl, nat = acl_table(env.name("acl")), nat_table(env.name("nat"))
    await nft.apply([acl, nat])
    await nft.delete_table(Family.INET, acl.name)
    await nft.delete_table(Family.INET, acl.name)
    await nft.delete_table(Family.IP, acl.name)  # never was
    assert await nft.list_owned() == [nat]
    await nft.apply([])
    assert await nft.list_owned() == [nat]


async def test_bad_rules_are_permanent_and_change_nothing(env: Env) -> None:
    nft = env.nft
    acl = acl_table(env.name("acl"))
    await nft.apply([acl])
    before = await env.ruleset()
    if_a = acl.chain("if_a")
    assert if_a is not None

    def bad(rule: Rule) -> Table:
        assert if_a is not None
        return with_chain(acl, dataclasses.replace(if_a, rules=(*if_a.rules[:2], rule)))

    cases: list[tuple[Table, str]] = [
        (bad(Rule(({"jump": {"target": "nowhere"}},), "ace:x:a:9")), "if_a.*nowhere"),
        (bad(Rule((match(payload("ip", "daddr"), "db.example.com"), ACCEPT))), "not an IP"),
        (bad(Rule((match(payload("ip", "daddr"), "@no_set"), ACCEPT))), "no set or map"),
        (bad(Rule(({"counter": None}, ACCEPT), "ace:x:a:9")), "Rule.counter"),
        (bad(Rule((ACCEPT,), "ace:app1:a:1")), "share a comment"),
    ]
    if env.kind == "real":  # what only libnftables or the kernel knows
        input_chain = acl.chain("input")
        assert input_chain is not None
        masq = Rule(({"masquerade": None},), "ace:x:input:1")
        cases += [
            (with_chain(acl, dataclasses.replace(input_chain, rules=(masq,))),
             "chain input: rule ace:x:input:1: .*Operation not supported"),
            (bad(Rule((match(payload("udp", "dport"), "no-such-service"), ACCEPT), "ace:x:a:8")),
             "chain if_a: rule ace:x:a:8: .*service"),
        ]  # fmt: skip
    for table, message in cases:
        for replace_chains in (None, {(acl.name, "if_a"), (acl.name, "input")}):
            with pytest.raises(PermanentError, match=message):
                await nft.apply([table], replace_chains=replace_chains)
            assert await nft.list_owned() == [acl]
    assert await env.ruleset() == before  # counters included: nothing was half-applied


async def test_no_packet_is_dropped_while_a_table_is_rebuilt(env: Env) -> None:
    """Policy drop and one accept rule; the table is rebuilt (a set changes definition) again
    and again while packets flow, and a foreign table hooked after ours counts every packet
    that got through (real half; the fake only goes through the applies)."""
    nft = env.nft

    def firewall(flags: frozenset[str]) -> Table:
        return Table(Family.INET, env.name("fw"), chains=(
            Chain("input", hook="input", type="filter", priority=0, policy="drop", rules=(
                Rule((match(payload("udp", "dport"), 5001), ACCEPT), "ace:flood:a:1", True),
                Rule((match(payload("ip", "saddr"), "@blocked"), DROP)))),),
            sets=(Set("blocked", "ipv4_addr", flags, ("192.0.2.1",)),))  # fmt: skip

    observer = Table(Family.INET, "observer", chains=(Chain(
        "obs", hook="input", type="filter", priority=10,
        rules=(Rule((match(payload("udp", "dport"), 5001),), counter=True),)),))  # fmt: skip
    await env.add_foreign(observer, "chain obs {\ntype filter hook input priority 10;\n"
                          "udp dport 5001 counter\n}")  # fmt: skip
    await nft.apply([firewall(frozenset())])
    packets = 100_000
    sender = None if env.flood is None else await env.flood(5001, packets)
    applies = 0
    while applies < 4 or (sender is not None and sender.returncode is None):
        table = firewall(frozenset({"interval"}) if applies % 2 else frozenset())
        await nft.apply([table])
        applies += 1
        if sender is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sender.wait(), 0.001)
    assert await nft.list_owned() == [table]
    if sender is not None:
        print(f"{env.kind}: {applies} rebuilds while {packets:,} packets flowed")
        assert sender.returncode == 0
        listed = await env.ruleset()
        [line] = [ln for ln in listed.splitlines() if "udp dport 5001 counter packets" in ln
                  and "accept" not in ln]  # fmt: skip
        assert f"counter packets {packets} " in line, line


async def test_namespace_recreated(env: Env) -> None:
    """The driver re-enters a namespace that was deleted and created again (real half)."""
    nft = env.nft
    acl = acl_table(env.name("acl"))
    await nft.apply([acl])
    if env.netns is not None:
        from pyroute2 import netns

        await asyncio.to_thread(netns.remove, env.netns)
        with pytest.raises(TemporaryError, match=env.netns):  # it may come back
            await nft.list_owned()
        await asyncio.to_thread(netns.create, env.netns)
        assert await nft.list_owned() == []
    await nft.apply([acl])
    assert await nft.list_owned() == [acl]


def test_model_values() -> None:
    """Order never makes two tables differ (rule order aside); the values hash; no node's
    prefix starts another's; the checks name what is wrong."""
    name = table_prefix("n1") + "acl"
    table = acl_table(name)
    shuffled = dataclasses.replace(
        table,
        chains=tuple(reversed(table.chains)),
        sets=tuple(dataclasses.replace(s, elements=tuple(reversed(s.elements)))
                   for s in reversed(table.sets)),
    )  # fmt: skip
    assert shuffled == table and hash(shuffled) == hash(table)
    if_a = table.chain("if_a")
    assert if_a is not None
    reordered = with_chain(table, dataclasses.replace(if_a, rules=tuple(reversed(if_a.rules))))
    assert reordered != table
    assert Chain("in", hook="input", type="filter", priority=0).policy == "accept"
    prefixes = [table_prefix(n) for n in ("n1", "n1_x", "N1", "n1-", "n1.x", "a" * 80)]
    assert len(set(prefixes)) == len(prefixes)
    assert not any(a != b and b.startswith(a) for a in prefixes for b in prefixes)
    assert all(p.startswith("eveagent_") and p.count("_") == 2 for p in prefixes)
    with pytest.raises(PermanentError, match="interval"):
        validate(replace_set(table, Set("allow_a", "ipv4_addr", elements=(
            {"prefix": {"addr": "10.0.0.0", "len": 8}},))))  # fmt: skip
    with pytest.raises(PermanentError, match="not an IP address"):
        validate(replace_set(table, Set("allow_a", "ipv4_addr", elements=("10.0.0.0/8",))))
    with pytest.raises(PermanentError, match="hook"):
        validate(with_chain(table, Chain("x", policy="drop")))
