"""The link naming scheme of :mod:`agent.drivers.netlink_api`: short enough for Linux, one
prefix per node, and a name tells whose it is."""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.drivers.errors import PermanentError
from agent.drivers.netlink import (
    IFNAMSIZ,
    MAX_INDEX,
    LinkKind,
    is_ours,
    link_name,
    node_tag,
    parse_name,
)
from agent.drivers.netlink_api import Route, check_ifname, check_mac, check_ours, netns_path

nodes = st.text(min_size=1, max_size=64)
kinds = st.sampled_from(list(LinkKind))
indexes = st.integers(min_value=0, max_value=MAX_INDEX)


@given(nodes, kinds, indexes)
def test_names_fit_linux_and_parse_back(node: str, kind: LinkKind, index: int) -> None:
    name = link_name(node, kind, index)
    assert 9 <= len(name) <= IFNAMSIZ
    assert re.fullmatch(r"[a-z0-9]+", name)
    assert name.startswith(node_tag(node))
    assert parse_name(node, name) == (kind, index)
    assert is_ours(node, name)
    check_ifname(name)


def test_the_longest_name_is_fifteen_characters() -> None:
    assert len(link_name("n", LinkKind.VIF, MAX_INDEX)) == 15
    with pytest.raises(ValueError):
        link_name("n", LinkKind.VIF, MAX_INDEX + 1)
    with pytest.raises(ValueError):
        link_name("n", LinkKind.VIF, -1)
    with pytest.raises(ValueError):
        node_tag("")


def test_tags_differ_across_many_nodes() -> None:
    names = [f"node-{i}" for i in range(5000)] + ["edge", "edge-1", "Edge", "edge\n"]
    tags = {node_tag(n) for n in names}
    assert len(tags) == len(names)  # 30-bit tags: no collision among these


@given(nodes, nodes, kinds, indexes)
def test_another_nodes_names_are_not_ours(a: str, b: str, kind: LinkKind, index: int) -> None:
    if node_tag(a) == node_tag(b):
        return  # the same node, or a 2**-30 collision
    name = link_name(b, kind, index)
    assert not is_ours(a, name)
    with pytest.raises(PermanentError, match="not this node's"):
        check_ours(a, name)


@pytest.mark.parametrize(
    "name",
    ["eth0", "enp3s0", "eno1", "ens192", "enx001122334455", "lo", "docker0", "virbr0",
     "vethab12cd3", "br-0123456789ab", "wlp2s0", "enp129s0f1np1"],
)  # fmt: skip
def test_common_interface_names_are_nobodys(name: str) -> None:
    assert not is_ours("node-a", name) and parse_name("node-a", name) is None


def test_only_canonical_names_are_ours() -> None:
    node = "node-a"
    good = link_name(node, LinkKind.BRIDGE, 12)
    tag = node_tag(node)
    assert good == f"{tag}b12"
    for bad in (f"{tag}b012", f"{tag}x12", f"{tag}b", f"{tag}b12345678", f"{tag}B12",
                f"{tag}b1 2", f"{tag}b\u0661", tag, good + "0" * 8):  # fmt: skip
        assert not is_ours(node, bad), bad


def test_input_checks() -> None:
    for bad in ("", "a" * 16, "a/b", "a b", "a:b", ".", ".."):
        with pytest.raises(PermanentError):
            check_ifname(bad)
    assert check_mac("02:AB:cd:00:00:01") == "02:ab:cd:00:00:01"
    assert check_mac(None) is None
    for mac in ("01:00:5e:00:00:01", "02:00:00:00:00", "zz:00:00:00:00:00"):
        with pytest.raises(PermanentError):
            check_mac(mac)
    assert netns_path("c1") == "/run/netns/c1"
    assert netns_path("/proc/42/ns/net") == "/proc/42/ns/net"
    with pytest.raises(PermanentError):
        netns_path("..")
    with pytest.raises(PermanentError, match="gateway or a device"):
        Route(ip_network("10.0.0.0/8"))
    with pytest.raises(PermanentError, match="another family"):
        Route(ip_network("10.0.0.0/8"), gateway=ip_address("fd00::1"))
