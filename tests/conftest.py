"""The whole suite's promise to the host: its network state is as the suite found it.

Tests make their own namespaces and only touch what they made; as root, this session fixture
checks it: the root namespace's links, addresses, routes and nftables ruleset are compared
before and after the session, and a difference fails the run, naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def _run(*argv: str) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    return done.stdout


def _snapshot() -> dict[str, list[str]]:
    links = json.loads(_run("ip", "-j", "link", "show") or "[]")
    addrs = json.loads(_run("ip", "-j", "addr", "show") or "[]")
    routes = json.loads(_run("ip", "-j", "route", "show", "table", "all") or "[]")
    return {
        "links": sorted(f"{link['ifname']} master={link.get('master', '')}" for link in links),
        "addresses": sorted(
            f"{a['ifname']} {i['local']}/{i['prefixlen']}"
            for a in addrs
            for i in a.get("addr_info", [])
            if i.get("scope") != "link"
        ),
        "routes": sorted(
            f"{r.get('table', 'main')} {r.get('dst')} {r.get('dev', '')} {r.get('gateway', '')}"
            for r in routes
            if r.get("protocol") != "kernel" or r.get("dst") != "fe80::/64"
        ),
        "nft": _run("nft", "-s", "list", "ruleset").splitlines() if shutil.which("nft") else [],
    }


@pytest.fixture(scope="session", autouse=True)
def host_network_untouched() -> Iterator[None]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield
        return
    before = _snapshot()
    yield
    after = _snapshot()
    changes = []
    for key, old in before.items():
        new = after[key]
        gone = [x for x in old if x not in new]
        came = [x for x in new if x not in old]
        if gone or came:
            changes.append(f"{key}: gone {gone[:10]}, new {came[:10]}")
    if changes:
        pytest.fail("the suite changed the host's network state: " + "; ".join(changes))
