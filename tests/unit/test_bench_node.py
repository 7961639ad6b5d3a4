"""The node bench's readings of what a node says (tools/bench_node.py), without a node."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tools.bench_node import AgentMarks, ConsoleWatch, agent_marks, extension_modules

PREFIX = "2026-11-29 22:40:01,000 INFO "


def entry(stamp: int, message: str) -> dict[str, Any]:
    return {"__MONOTONIC_TIMESTAMP": str(stamp), "MESSAGE": PREFIX + message}


def test_agent_marks_need_the_config_applied() -> None:
    entries = [
        entry(10, "agent.daemon: onboarded: device UUID 1234"),
        entry(11, "agent.link.attestation: attestation failed: the event log does not account"),
        entry(12, "agent.link.attestation: attestation failed: again"),
        entry(20, "agent.link.attestation: attestation complete"),
        entry(21, "agent.link.configsync: new config abcdef (version '1', 0 apps, 0 network ...)"),
    ]
    assert agent_marks(entries) is None  # received, not applied yet
    entries.append(entry(22, "agent.reconcile.configitems: config items changed: other.item"))
    assert agent_marks(entries) is None  # not the bench's item
    entries.append(entry(23, "agent.reconcile.configitems: config items changed: "
                             "timer.config.interval"))  # fmt: skip
    entries.append(entry(30, "agent.link.attestation: attestation failed: later, not counted"))
    assert agent_marks(entries) == AgentMarks(10, 20, 2, 21, 23)


def test_agent_marks_skip_entries_without_a_text_message() -> None:
    entries = [
        {"__MONOTONIC_TIMESTAMP": "1", "MESSAGE": [1, 2, 3]},  # journald's binary message
        entry(5, "x: new config aa"),
        entry(6, "x: config items changed: timer.config.interval"),
    ]
    assert agent_marks(entries) == AgentMarks(None, None, 0, 5, 6)


def test_extension_modules_from_a_memory_map() -> None:
    site = "/opt/eve-agent/lib/python3.11/site-packages"
    maps = "\n".join(
        f"7f00-7f01 r-xp 00000000 fe:01 123 {path}"
        for path in (
            f"{site}/yaml/_yaml.cpython-311-x86_64-linux-gnu.so",
            f"{site}/cryptography/hazmat/bindings/_rust.abi3.so",
            f"{site}/tpm2_pytss.libs/libtss2-esys-1a2b3c.so",  # a grafted library, no module
            f"{site}/libvirtmod.cpython-311-x86_64-linux-gnu.so",
            "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
            "/usr/lib/x86_64-linux-gnu/libnftables.so.1.1.0",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        )
    )
    maps += "\n7f02-7f03 rw-p 00000000 00:00 0 \n7f04-7f05 r--p 00000000 00:00 0 [heap]"
    assert extension_modules(maps) == [
        "_ssl", "cryptography.hazmat.bindings._rust", "libvirtmod", "nftables", "yaml._yaml",
    ]  # fmt: skip


def test_console_watch_sees_coloured_text_split_across_writes(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    texts = {"multi-user": ("Reached target multi-user.target",)}
    with ConsoleWatch(console, texts, interval=0.005) as watch:
        time.sleep(0.05)  # the file does not exist yet: nothing seen, no error
        with open(console, "w") as out:
            out.write("[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1")
            out.flush()
            time.sleep(0.05)
            assert "multi-user" not in watch.seen
            before = time.monotonic()
            out.write(";39mmulti-user.target\x1b[0m - Multi-User System.\n")
        deadline = time.monotonic() + 5
        while "multi-user" not in watch.seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert before <= watch.seen["multi-user"] <= time.monotonic()
