# SPDX-License-Identifier: Apache-2.0
"""Hardening on a real full filesystem: the node's persist directory is a small tmpfs
(``mount -t tmpfs -o size=...``, root) that the test fills to the last byte.

* The atomic write raises the typed NoSpaceError, keeps the old file, leaves no temporary file.
* A running node whose disk fills keeps running: a new config is applied though its checkpoint
  cannot be written, the controller is told (device info ``storage_info`` DEGRADED), one log
  line per writer; when space returns the checkpoint is written and ONLINE reported, by itself.
* A first boot on a full disk waits (no traceback, no exit) and onboards once space returns.

The tmpfs is always unmounted, whatever the test does.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.settings import AgentSettings, NodePaths
from agent.util import atomicfile
from controller.records import ReportKind
from tests.integration.conftest import service_missing
from tests.unit.link_harness import LiveController, live_controller, until
from tests.unit.test_daemon import provision


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, unmounted at the end."""
    if os.geteuid() != 0:
        service_missing("root", "mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        service_missing("tmpfs", done.stderr.strip())
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):  # big writes first, then what a page can still take
            chunk = b"\0" * size
            while True:
                try:
                    if os.write(fd, chunk) == 0:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def test_atomic_write_on_a_real_full_filesystem(small_fs: Path) -> None:
    target = small_fs / "file"
    atomicfile.write_atomic(target, b"old")
    filler = fill(small_fs)
    with pytest.raises(atomicfile.NoSpaceError) as info:
        atomicfile.write_atomic(target, b"new" * 100_000)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in small_fs.iterdir()) == ["file", "filler"]
    filler.unlink()
    atomicfile.write_atomic(target, b"new")
    assert target.read_bytes() == b"new"


class FastBackoff:
    """Retries at once (the agent's real backoff starts at seconds)."""

    def __init__(self, **_kwargs: Any) -> None:
        pass

    def next(self) -> float:
        return 0.05

    def reset(self) -> None:
        pass

    @property
    def attempts(self) -> int:
        return 0


def storage_states(ctl: LiveController, device_uuid: str) -> list[str]:
    """The storage_info state of each device info the controller received, oldest first."""
    states = []
    for report in ctl.store.reports(device_uuid, ReportKind.INFO):
        doc = json.loads(report.json or "{}")
        for info in doc.get("dinfo", {}).get("storageInfo", []):
            states.append(str(info.get("storageState")))
    return states


def node_on(paths: NodePaths, small_fs: Path) -> NodePaths:
    """``paths`` with persist on the small filesystem."""
    return NodePaths(config=paths.config, persist=small_fs / "persist", run=paths.run,
                     platform=paths.platform)  # fmt: skip


async def test_a_running_node_whose_disk_fills_keeps_running_and_says_so(
    tmp_path: Path,
    small_fs: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agent.daemon import Node

    monkeypatch.setattr("agent.link.configsync.Backoff", FastBackoff, raising=False)
    # Rounds of the config and report loops in tenths of a second, not seconds.
    monkeypatch.setattr("agent.link.configsync.jittered", lambda i, *_a, **_k: min(i, 0.3))
    monkeypatch.setattr("agent.link.reporting.jittered", lambda i, *_a, **_k: min(i, 0.2))
    async with live_controller(tmp_path) as ctl:
        paths = node_on(provision(tmp_path / "node", ctl, "fullfs-node-1"), small_fs)
        settings = AgentSettings(paths=paths, status_interval=0.1, stop_grace=2.0,
                                 workloads=False, networks=False)  # fmt: skip
        node = Node(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(node.run(stop))
        try:
            await until(lambda: node.sync and node.sync.status.config_hash, within=20,
                        what="the first config")  # fmt: skip
            sync = node.sync
            assert node.device_uuid is not None and sync is not None
            uuid = node.device_uuid
            first = sync.status.config_hash
            await until(lambda: "STORAGE_STATUS_ONLINE" in storage_states(ctl, uuid),
                        within=20, what="device info with the persist filesystem")  # fmt: skip

            filler = fill(small_fs)
            new = ctl.set_config(
                uuid, {"configItems": [{"key": "timer.config.interval", "value": "5"}]},
                timestamp=time.time() + 10,
            ).config_hash  # fmt: skip
            sync.wake.set()
            await until(lambda: sync.status.config_hash == new, within=20,
                        what="the new config applied on a full disk")  # fmt: skip
            assert new != first and sync.checkpoint_pending
            assert not task.done()
            await until(lambda: "STORAGE_STATUS_DEGRADED" in storage_states(ctl, uuid),
                        within=30, what="the controller told of the full disk")  # fmt: skip
            problems = {p.what for p in node.storage.problems()}
            assert "config checkpoint" in problems
            lines = [r for r in caplog.records if "cannot write the config checkpoint" in r.message]
            assert len(lines) == 1

            filler.unlink()  # space again: nothing to do but wait
            await until(lambda: not sync.checkpoint_pending, within=30,
                        what="the checkpoint written once space returned")  # fmt: skip
            saved = (paths.checkpoint / "lastconfig").read_bytes()
            assert saved  # the signed response of the config in effect
            await until(lambda: storage_states(ctl, uuid)[-1] == "STORAGE_STATUS_ONLINE",
                        within=30, what="ONLINE again")  # fmt: skip
            assert not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("agent"))


async def test_a_first_boot_on_a_full_disk_waits_then_onboards(
    tmp_path: Path,
    small_fs: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agent.daemon import Node

    monkeypatch.setattr("agent.daemon.Backoff", FastBackoff, raising=False)
    async with live_controller(tmp_path) as ctl:
        paths = node_on(provision(tmp_path / "node", ctl, "fullfs-node-2"), small_fs)
        filler = fill(small_fs)
        settings = AgentSettings(paths=paths, status_interval=0.1, stop_grace=2.0,
                                 workloads=False, networks=False)  # fmt: skip
        node = Node(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(node.run(stop))
        try:
            await until(lambda: node.phase == "waiting for storage", within=10,
                        what="waiting for storage")  # fmt: skip
            await asyncio.sleep(0.5)  # several retries
            assert not task.done()
            assert ctl.count("register") == 0
            lines = [r for r in caplog.records if "cannot write the node identity" in r.message]
            assert len(lines) == 1
            filler.unlink()
            await until(lambda: node.device_uuid, within=20, what="onboarding after space")
            assert paths.device_cert.exists() and paths.uuid.read_text().strip()
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("agent"))
