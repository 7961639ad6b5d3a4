"""The dnsmasq files of a network instance: rendering, validation of hostile values, leases.

Everything in a :class:`DnsmasqConfig` comes from the controller; the tests feed it newlines,
commas, slashes, ``#``, NULs and non-ASCII where names and values go, and check that nothing
reaches a file as an extra option or entry.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.drivers.dnsmasq import (
    DnsmasqConfig,
    DnsmasqPaths,
    HostRecord,
    InvalidConfig,
    Lease,
    NftSet,
    NftsetRule,
    Route,
    StaticHost,
    conflicting_leases,
    parse_leases,
    render,
)
from agent.drivers.errors import PermanentError

NI = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
PATHS = DnsmasqPaths.of(Path("/run/eve-agent/node1/dnsmasq"), NI)
D = f"/run/eve-agent/node1/dnsmasq/{NI}"
A = IPv4Address


def config(**changes: Any) -> DnsmasqConfig:
    base: dict[str, Any] = {
        "instance_id": NI,
        "bridge": "bn1",
        "gateway": A("10.1.0.1"),
        "subnet": IPv4Network("10.1.0.0/24"),
        "dhcp_range": (A("10.1.0.10"), A("10.1.0.99")),
    }
    return DnsmasqConfig(**(base | changes))


def files(cfg: DnsmasqConfig) -> tuple[str, str, str]:
    out = render(cfg, PATHS, user="dnsmasq", group="nogroup")
    return out.conf, out.dhcp_hosts, out.addn_hosts


# --- rendering ---------------------------------------------------------------------------------


def test_a_minimal_instance_is_isolated_and_authoritative() -> None:
    conf, dhcp_hosts, addn_hosts = files(config())
    assert conf == (
        f"# written by eve-agent for network instance {NI}: do not edit\n"
        "no-hosts\n"
        "no-resolv\n"
        "bind-interfaces\n"
        "interface=bn1\n"
        "except-interface=lo\n"
        "user=dnsmasq\n"
        "group=nogroup\n"
        f"pid-file={D}/dnsmasq.pid\n"
        f"log-facility={D}/dnsmasq.log\n"
        "quiet-dhcp\n"
        f"dhcp-leasefile={D}/leases\n"
        f"dhcp-hostsfile={D}/dhcp-hosts\n"
        f"addn-hosts={D}/hosts\n"
        "dhcp-authoritative\n"
        "no-ping\n"
        "domain-needed\n"
        "bogus-priv\n"
        "neg-ttl=10\n"
        "dhcp-range=10.1.0.10,10.1.0.99,255.255.255.0,3600\n"
        "dhcp-option=option:router,10.1.0.1\n"
        "dhcp-option=option:dns-server,10.1.0.1\n"
    )
    assert "server=" not in conf  # no upstream: resolves only its own names
    assert dhcp_hosts == addn_hosts == ""


def test_options_upstreams_domain_and_nft_sets() -> None:
    conf, _, _ = files(
        config(
            upstreams=(A("192.0.2.53"), IPv6Address("2001:db8::53")),
            domain="Apps.Example",
            mtu=1400,
            ntp_servers=(A("192.0.2.123"), A("192.0.2.124")),
            lease_time=600,
            nftsets=(
                NftsetRule(
                    "example.com",
                    (NftSet("eve_acl", "host4"), NftSet("eve_acl", "host6", "inet", 6)),
                ),
                NftsetRule("cdn.example.net", (NftSet("acl", "v4", "ip", 4),)),
            ),
        )
    )
    lines = conf.splitlines()
    for line in (
        "dhcp-range=10.1.0.10,10.1.0.99,255.255.255.0,600",
        "server=192.0.2.53",
        "server=2001:db8::53",
        "domain=apps.example",
        "local=/apps.example/",
        "expand-hosts",
        "dhcp-option=option:mtu,1400",
        "dhcp-option=option:ntp-server,192.0.2.123,192.0.2.124",
        "nftset=/example.com/4#inet#eve_acl#host4,6#inet#eve_acl#host6",
        "nftset=/cdn.example.net/4#ip#acl#v4",
    ):
        assert line in lines
    # rules sorted by domain: their order in the config never causes a restart
    assert lines.index("nftset=/cdn.example.net/4#ip#acl#v4") < lines.index(
        "nftset=/example.com/4#inet#eve_acl#host4,6#inet#eve_acl#host6"
    )


def test_classless_routes_carry_the_subnet_and_the_default_route() -> None:
    routes = (Route(IPv4Network("192.168.50.0/24"), A("10.1.0.5")),)
    conf, _, _ = files(config(routes=routes))
    assert (
        "dhcp-option=option:classless-static-route,"
        "10.1.0.0/24,0.0.0.0,192.168.50.0/24,10.1.0.5,0.0.0.0/0,10.1.0.1\n"
    ) in conf
    conf, _, _ = files(config(routes=routes, default_route=False))
    assert "classless-static-route,10.1.0.0/24,0.0.0.0,192.168.50.0/24,10.1.0.5\n" in conf
    assert "dhcp-option=option:router\n" in conf  # no default route through the bridge


def test_hosts_files_are_sorted_so_order_never_reloads() -> None:
    hosts = (
        StaticHost("02:00:00:00:00:02", A("10.1.0.102"), "Web"),
        StaticHost("02-00-00-00-00-01", A("10.1.0.101")),
    )
    records = (
        HostRecord("web", (A("10.1.0.102"),)),
        HostRecord("db.internal", (A("10.1.0.103"), IPv6Address("fd00::3"))),
    )
    _, dhcp_hosts, addn_hosts = files(config(static_hosts=hosts, dns_records=records))
    assert (
        dhcp_hosts == "02:00:00:00:00:01,id:*,10.1.0.101\n02:00:00:00:00:02,id:*,10.1.0.102,web\n"
    )
    assert addn_hosts == "10.1.0.103 db.internal\nfd00::3 db.internal\n10.1.0.102 web\n"
    reordered = config(static_hosts=hosts[::-1], dns_records=records[::-1])
    assert files(reordered) == files(config(static_hosts=hosts, dns_records=records))


def test_the_main_file_does_not_change_with_hosts() -> None:
    """Hosts live in the files re-read on SIGHUP: changing them leaves the main file alone."""
    plain = files(config())[0]
    busy = config(
        static_hosts=(StaticHost("02:00:00:00:00:01", A("10.1.0.5"), "a"),),
        dns_records=(HostRecord("b", (A("10.1.0.6"),)),),
    )
    assert files(busy)[0] == plain


def test_lists_become_tuples_and_configs_compare_by_value() -> None:
    one = config(upstreams=[A("192.0.2.1")], static_hosts=[])
    assert one.upstreams == (A("192.0.2.1"),)
    assert one == config(upstreams=(A("192.0.2.1"),))
    assert hash(one) == hash(config(upstreams=(A("192.0.2.1"),)))


def test_strings_are_parsed_into_addresses() -> None:
    cfg = config(gateway="10.1.0.1", dhcp_range=("10.1.0.10", "10.1.0.20"))
    assert cfg.gateway == A("10.1.0.1") and cfg.dhcp_range == (A("10.1.0.10"), A("10.1.0.20"))


# --- hostile values ----------------------------------------------------------------------------

HOSTILE_NAMES = [
    "app\nserver=203.0.113.66",
    "app,10.1.0.66",
    "app name",
    "app#x",
    "app/x",
    "app=x",
    "app\x00",
    "app\r",
    "äpp",
    "-app",
    "app-",
    "",
    "a" * 64,
    "app\n",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_host_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        StaticHost("02:00:00:00:00:01", A("10.1.0.5"), name)
    assert "\n" not in str(info.value)  # the message quotes it escaped
    with pytest.raises(InvalidConfig):
        HostRecord(name, (A("10.1.0.5"),))
    with pytest.raises(InvalidConfig):
        config(domain=name)
    with pytest.raises(InvalidConfig):
        NftsetRule(name, (NftSet("t", "s"),))


def test_a_dhcp_host_name_is_one_label_and_records_may_be_dotted() -> None:
    with pytest.raises(InvalidConfig):
        StaticHost("02:00:00:00:00:01", A("10.1.0.5"), "web.example")
    assert HostRecord("www.Example.COM", (A("10.1.0.5"),)).name == "www.example.com"
    with pytest.raises(InvalidConfig):
        HostRecord(".".join(["x" * 63] * 4), (A("10.1.0.5"),))  # 255 > 253 characters
    with pytest.raises(InvalidConfig):
        HostRecord("a..b", (A("10.1.0.5"),))


@pytest.mark.parametrize(
    "bridge", ["bn1\ninterface=eth0", "bn1,eth0", "bn1 eth0", "a" * 16, "", "bn1/x", "-bn1"]
)
def test_hostile_bridge_names_are_refused(bridge: str) -> None:
    with pytest.raises(InvalidConfig):
        config(bridge=bridge)


@pytest.mark.parametrize(
    ("table", "name", "family", "version"),
    [
        ("t#x", "s", "inet", 4),
        ("t", "s,6#inet#t#s", "inet", 4),
        ("t", "s/x", "inet", 4),
        ("t", "s\n", "inet", 4),
        ("t", "s", "bridge", 4),
        ("t", "s", "ip", 6),
        ("t", "s", "ip6", 4),
        ("t", "s", "inet", 5),
    ],
)
def test_hostile_nft_sets_are_refused(table: str, name: str, family: Any, version: Any) -> None:
    with pytest.raises(InvalidConfig):
        NftSet(table, name, family, version)


@pytest.mark.parametrize(
    "mac", ["02:00:00:00:00:4g", "02:00:00:00:00:42\n", "02:00:00:00:00", "02:00:00:00:00:42,x", 2]
)
def test_hostile_macs_are_refused(mac: Any) -> None:
    with pytest.raises(InvalidConfig):
        StaticHost(mac, A("10.1.0.5"))


@pytest.mark.parametrize("value", ["10.1.0.5\n", "10.1.0.5,10.1.0.6", 167837701, None, "fd00::1"])
def test_addresses_must_be_ipv4_addresses(value: Any) -> None:
    with pytest.raises(InvalidConfig):
        StaticHost("02:00:00:00:00:01", value)


@pytest.mark.parametrize(
    "changes",
    [
        {"dhcp_range": (A("10.1.0.99"), A("10.1.0.10"))},  # reversed
        {"dhcp_range": (A("10.1.0.10"), A("10.1.1.10"))},  # outside the subnet
        {"dhcp_range": (A("10.1.0.1"), A("10.1.0.10"))},  # holds the gateway
        {"dhcp_range": (A("10.1.0.0"), A("10.1.0.10")), "gateway": A("10.1.0.200")},
        {"gateway": A("10.1.0.255")},  # broadcast
        {"gateway": A("10.2.0.1")},
        {"subnet": IPv4Network("10.1.0.0/31")},
        {"lease_time": 60},
        {"lease_time": True},
        {"lease_time": "3600\ndhcp-range=1.2.3.4"},
        {"mtu": 67},
        {"mtu": 70000},
        {"upstreams": (A("0.0.0.0"),)},
        {"upstreams": ("192.0.2.1\nserver=203.0.113.1",)},
        {"ntp_servers": (IPv6Address("2001:db8::1"),)},
        {"routes": (Route(IPv4Network("192.168.0.0/16"), A("10.9.0.1")),)},
        {"static_hosts": (StaticHost("02:00:00:00:00:01", A("10.1.0.1")),)},  # the gateway
        {"static_hosts": (StaticHost("02:00:00:00:00:01", A("10.2.0.1")),)},
        {"static_hosts": ("02:00:00:00:00:01,10.1.0.5",)},  # not a StaticHost
        {
            "static_hosts": (
                StaticHost("02:00:00:00:00:01", A("10.1.0.5")),
                StaticHost("02:00:00:00:00:01", A("10.1.0.6")),
            )
        },
        {
            "static_hosts": (
                StaticHost("02:00:00:00:00:01", A("10.1.0.5")),
                StaticHost("02:00:00:00:00:02", A("10.1.0.5")),
            )
        },
        {"default_route": "yes"},
        {"instance_id": str(NI)},
    ],
)
def test_inconsistent_configs_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfig) as info:
        config(**changes)
    assert isinstance(info.value, PermanentError) and isinstance(info.value, ValueError)


def test_a_record_needs_an_address() -> None:
    with pytest.raises(InvalidConfig):
        HostRecord("app", ())


def test_unsafe_paths_users_and_groups_are_refused() -> None:
    for paths in (
        DnsmasqPaths.of(Path("/run/a b"), NI),
        DnsmasqPaths.of(Path("/run/a\npid-file=/etc/passwd"), NI),
        DnsmasqPaths.of(Path("/run/a,b"), NI),
        DnsmasqPaths(Path("relative")),
    ):
        with pytest.raises(InvalidConfig):
            render(config(), paths, user="dnsmasq", group="nogroup")
    with pytest.raises(InvalidConfig):
        render(config(), PATHS, user="dnsmasq\nuser=root", group="nogroup")


@given(st.text(max_size=80))
def test_no_text_injects_a_line(name: str) -> None:
    """Any text as a name is refused, or ends up as exactly one entry in one line."""
    try:
        cfg = config(
            static_hosts=(StaticHost("02:00:00:00:00:01", A("10.1.0.5"), name),),
            dns_records=(HostRecord(name, (A("10.1.0.5"),)),),
            nftsets=(NftsetRule(name + ".example", (NftSet("t", "s"),)),),
        )
    except InvalidConfig:
        return
    conf, dhcp_hosts, addn_hosts = files(cfg)
    assert dhcp_hosts == f"02:00:00:00:00:01,id:*,10.1.0.5,{name.lower()}\n"
    assert addn_hosts == f"10.1.0.5 {name.lower()}\n"
    assert conf.splitlines()[-1] == f"nftset=/{name.lower()}.example/4#inet#t#s"
    assert len(conf.splitlines()) == len(files(config())[0].splitlines()) + 1


def test_replacing_a_field_revalidates() -> None:
    with pytest.raises(InvalidConfig):
        dataclasses.replace(config(), bridge="bn1\nno-resolv")


# --- leases ------------------------------------------------------------------------------------


def test_leases_are_parsed() -> None:
    data = (
        b"1795974355 02:00:00:00:00:42 10.1.0.14 client1 01:02:00:00:00:00:42\n"
        b"0 02:00:00:00:00:07 10.1.0.7 * *\n"
    )
    assert parse_leases(data) == [
        Lease(
            "02:00:00:00:00:42", A("10.1.0.14"), "client1", datetime.fromtimestamp(1795974355, UTC)
        ),
        Lease("02:00:00:00:00:07", A("10.1.0.7"), None, None),
    ]


def test_a_partly_written_lease_file_yields_its_complete_lines() -> None:
    whole = (
        b"1795974355 02:00:00:00:00:42 10.1.0.14 client1 *\n"
        b"1795974355 02:00:00:00:00:43 10.1.0.15 c2 *\n"
    )
    # dnsmasq rewrites the file in place: any prefix may be seen, never a wrong lease
    for cut in range(len(whole) + 1):
        leases = parse_leases(whole[:cut])
        assert leases == parse_leases(whole)[: len(leases)]
    assert parse_leases(whole[:60]) == parse_leases(whole)[:1]  # "10.1.0.1" of "10.1.0.15" dropped


def test_garbage_and_ipv6_lines_are_skipped() -> None:
    data = (
        b"garbage\n"
        b"\xff\xfe\n"
        b"1795974355 02:00:00:00:00:42 not-an-ip client1 *\n"
        b"1795974355 zz:00:00:00:00:42 10.1.0.3 client1 *\n"
        b"-5 02:00:00:00:00:42 10.1.0.3 client1 *\n"
        b"99999999999999999999 02:00:00:00:00:42 10.1.0.3 client1 *\n"
        b"duid 00:01:00:01:2c:2e:7a:10:02:00:00:00:00:01\n"
        b"1795974355 1234 fd00::5 client6 00:01:00:01\n"
        b"1795974355 02:00:00:00:00:44 10.1.0.16 ok *\n"
    )
    assert [lease.hostname for lease in parse_leases(data)] == ["ok"]


def test_conflicting_leases_hold_a_static_address_for_another_mac() -> None:
    hosts = [StaticHost("02:00:00:00:00:01", A("10.1.0.50"))]
    mine = Lease("02:00:00:00:00:01", A("10.1.0.50"), None, None)
    other = Lease("02:00:00:00:00:09", A("10.1.0.50"), "old", None)
    elsewhere = Lease("02:00:00:00:00:01", A("10.1.0.11"), None, None)
    assert conflicting_leases([mine, other, elsewhere], hosts) == [other]
