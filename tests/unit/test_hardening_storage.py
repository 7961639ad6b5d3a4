# SPDX-License-Identifier: Apache-2.0
"""Hardening: a full (or failing) disk is an error handled where the write happens, never a crash.

Unit level, with fakes that raise ENOSPC/EDQUOT/EIO: the typed errors of the atomic write, the
storage health (one log line per run of failures), and each persistent writer of the link (config
checkpoint, controller certificates, outbox, log spools, status file, vault).  The real small
filesystem is in tests/integration/test_hardening_fullfs.py; the whole daemon on a full disk at
first boot is at the end here.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.link import checkpoint as checkpoint_mod
from agent.link import configsync, identity, logship
from agent.link import outbox as outbox_mod
from agent.link.logship import LogSpool, LogUploader
from agent.link.reporting import Outbox, device_info
from agent.util import atomicfile
from agent.util.atomicfile import write_atomic
from agent.wire.pb.info import info_pb2
from tests.unit.link_harness import until
from tests.unit.test_link_configsync import Rig, rig  # noqa: F401 - the fixture
from tests.unit.test_reporting import FakeClient, facts


def health_tracker() -> Any:
    """A new StorageHealth (imported here: the module is part of the fix under test)."""
    from agent.util.storagehealth import StorageHealth

    return StorageHealth()


def no_space(path: str = "/persist/x") -> OSError:
    return atomicfile.NoSpaceError(errno.ENOSPC, "No space left on device", path)


class DiskFull:
    """Replaces ``write_atomic`` in a module: raises ``error`` while ``full``, else writes."""

    def __init__(self, error: int = errno.ENOSPC) -> None:
        self.full = True
        self.error = error
        self.attempts = 0

    def __call__(self, path: Path, data: bytes, *, mode: int = 0o600) -> None:
        self.attempts += 1
        if self.full:
            error = OSError(self.error, os.strerror(self.error), str(path))
            typed = getattr(atomicfile, "typed_storage_error", None)  # absent before the fix
            raise typed(error, path) if typed is not None else error
        write_atomic(path, data, mode=mode)


# ---------------------------------------------------------------- the typed errors


@pytest.mark.parametrize(
    ("code", "typed_name"),
    [
        (errno.ENOSPC, "NoSpaceError"),
        (errno.EDQUOT, "NoSpaceError"),
        (errno.EIO, "StorageError"),
        (errno.EROFS, "StorageError"),
    ],
)
def test_storage_errnos_become_typed_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, typed_name: str
) -> None:
    typed: type[OSError] = getattr(atomicfile, typed_name)
    target = tmp_path / "file"
    write_atomic(target, b"old")

    def refuse(*_args: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(typed) as info:
        write_atomic(target, b"new")
    monkeypatch.undo()
    assert type(info.value) is typed and isinstance(info.value, OSError)
    assert info.value.errno == code
    assert info.value.filename == str(target)
    assert atomicfile.is_storage_error(info.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_other_errors_stay_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "dir").write_text("a file where a directory should be")
    with pytest.raises(OSError) as info:
        write_atomic(tmp_path / "dir" / "file", b"x")
    assert not isinstance(info.value, atomicfile.StorageError)
    assert not atomicfile.is_storage_error(info.value)


def test_a_full_disk_while_making_the_directory_is_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(atomicfile.NoSpaceError):
        write_atomic(tmp_path / "new" / "file", b"x")


# ---------------------------------------------------------------- the storage health


def test_storage_health_logs_once_per_run_of_failures(caplog: pytest.LogCaptureFixture) -> None:
    health = health_tracker()
    for _ in range(5):
        health.failed("outbox", no_space())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot write the outbox" in errors[0].getMessage()
    (problem,) = health.problems()
    assert (problem.what, problem.attempts, problem.no_space) == ("outbox", 5, True)
    assert "no space left" in health.summary() and "outbox" in health.summary()
    health.ok("outbox")
    health.ok("outbox")
    assert health.problems() == [] and health.summary() == ""
    recovered = [r for r in caplog.records if "written again" in r.getMessage()]
    assert len(recovered) == 1


# ---------------------------------------------------------------- the config checkpoint


async def test_a_full_disk_does_not_stop_config_sync_and_it_recovers(
    rig: Rig,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the checkpoint's OSError ended poll_once, so the config task and the daemon."""
    disk = DiskFull()
    monkeypatch.setattr(checkpoint_mod, "write_atomic", disk)
    node = rig.node
    await node.poll()  # no exception
    assert len(node.applied) == 1  # the verified config is in effect all the same
    assert node.sync.status.config_hash
    assert node.sync.checkpoint_pending
    assert not node.checkpoints.primary.exists()
    health = node.sync._health
    assert [p.what for p in health.problems()] == [configsync.CHECKPOINT]
    # The next rounds retry with backoff, logging nothing more.
    await node.sync.save_pending()
    await node.sync.save_pending()
    assert disk.attempts == 1  # the retry is not due yet
    node.sync._save_retry_at = 0.0
    await node.sync.save_pending()
    assert disk.attempts == 2
    errors = [r for r in caplog.records if "cannot write the config checkpoint" in r.getMessage()]
    assert len(errors) == 1
    # Space again: the next due retry writes the config in effect; nothing is promoted before.
    disk.full = False
    node.sync._save_retry_at = 0.0
    assert await node.sync.save_pending() is True
    assert node.saved().configHash == node.sync.status.config_hash
    assert not node.sync.checkpoint_pending and health.problems() == []


async def test_the_run_loop_survives_a_full_disk(
    rig: Rig,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checkpoint_mod, "write_atomic", DiskFull())
    node = rig.node
    stop = asyncio.Event()
    task = asyncio.create_task(node.sync.run(stop))
    await until(lambda: node.applied, what="the config applied")
    await asyncio.sleep(0.05)
    assert not task.done()  # before: the task ended with the OSError
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_controller_certs_kept_in_memory_then_saved(
    rig: Rig,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = rig.node
    node.certs._checkpoints.primary.unlink()
    node.certs._checkpoints.backup.unlink()
    node.certs._saved = None
    disk = DiskFull(errno.EIO)
    monkeypatch.setattr(checkpoint_mod, "write_atomic", disk)
    certs = await node.certs.refresh(node.client)  # no exception
    assert node.certs.current is certs
    assert [p.what for p in node.certs._health.problems()] == ["controller certificates"]
    assert await node.certs.save_pending() is False
    disk.full = False
    assert await node.certs.save_pending() is True
    assert node.certs._checkpoints.primary.read_bytes() == certs.raw
    assert node.certs._checkpoints.backup.read_bytes() == certs.raw


# ---------------------------------------------------------------- the outbox


def test_outbox_keeps_what_the_disk_refuses_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskFull()
    monkeypatch.setattr(outbox_mod, "write_atomic", disk)
    health = health_tracker()
    box = Outbox(tmp_path / "outbox", health=health)
    assert box.put("device", b"v1") is False  # before: raised OSError
    assert box.put("device", b"v2") is False
    ((key, payload, mtime),) = box.pending()
    assert (key, payload) == ("device", b"v2") and box.in_memory == 1
    assert [p.what for p in health.problems()] == ["outbox"]
    box.done(key, mtime)
    assert box.pending() == [] and box.in_memory == 0
    disk.full = False
    assert box.put("device", b"v3") is True
    assert health.problems() == []
    assert [(k, p) for k, p, _ in box.pending()] == [("device", b"v3")]


async def test_device_info_reaches_the_controller_while_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device_signer: Any
) -> None:
    from typing import cast

    from agent.link.reporting import Reporter
    from agent.link.transport import ControllerClient
    from agent.model.configitems import ConfigItems

    monkeypatch.setattr(outbox_mod, "write_atomic", DiskFull())
    health = health_tracker()
    box = Outbox(tmp_path / "outbox", health=health)
    client = FakeClient()
    rep = Reporter(
        cast(ControllerClient, client),
        device=device_signer,
        outbox=box,
        facts=lambda: None,
        items=ConfigItems,
    )
    rep.queue_info(facts(storage_problems=tuple(health.problems())))
    rep.queue_info(facts(storage_problems=tuple(health.problems())))  # now it says "outbox"
    await rep.flush()
    assert rep.sent_info == 1 and box.pending() == []


def test_device_info_reports_the_storage_problem() -> None:
    health = health_tracker()
    ok = device_info(facts(persist="/persist")).dinfo.storage_info
    assert [(s.pool_name, s.storage_state) for s in ok] == [
        ("/persist", info_pb2.STORAGE_STATUS_ONLINE)
    ]
    health.failed("config checkpoint", no_space("/p/c"))
    health.failed("outbox", no_space("/p/o"))
    (full,) = device_info(facts(storage_problems=tuple(health.problems()))).dinfo.storage_info
    assert full.storage_state == info_pb2.STORAGE_STATUS_DEGRADED
    assert "no space left on device since" in full.pool_status_msg
    assert "config checkpoint, outbox" in full.pool_status_msg
    assert "No space left" in full.collector_errors
    eio = health_tracker()
    eio.failed("outbox", atomicfile.StorageError(errno.EIO, "Input/output error", "/p/o"))
    (bad,) = device_info(facts(storage_problems=tuple(eio.problems()))).dinfo.storage_info
    assert bad.storage_state == info_pb2.STORAGE_STATUS_FAULTED


# ---------------------------------------------------------------- log spools


def test_log_spool_keeps_its_lines_when_the_disk_refuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskFull()
    monkeypatch.setattr(logship, "write_atomic", disk)
    spool = LogSpool(tmp_path / "newlog", dict)
    logger = logging.getLogger("test.hardening.spool")
    logger.addHandler(spool)
    try:
        logger.warning("keep me")
        with pytest.raises(OSError):
            spool.roll(force=True)
        disk.full = False
        assert spool.roll(force=True) == 1  # before: the lines were lost with the failed roll
    finally:
        logger.removeHandler(spool)
    (path,) = spool.pending()
    import gzip

    assert b"keep me" in gzip.decompress(path.read_bytes())


def test_log_spool_memory_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logship, "MAX_MEMORY_BYTES", 10_000)
    spool = LogSpool(tmp_path / "newlog", dict)
    logger = logging.getLogger("test.hardening.bound")
    logger.addHandler(spool)
    try:
        for n in range(1000):
            logger.warning("line %d of a disk that never comes back", n)
    finally:
        logger.removeHandler(spool)
    assert spool._size <= 10_000 and spool.dropped_lines > 0


async def test_upload_loop_reports_a_full_spool_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    device_signer: Any,
) -> None:
    from typing import cast

    from agent.link.transport import ControllerClient

    monkeypatch.setattr(logship, "write_atomic", DiskFull())
    monkeypatch.setattr("agent.link.gzlog.jittered", lambda *_a, **_k: 0.001)
    health = health_tracker()
    spool = LogSpool(tmp_path / "newlog", dict)
    spool.emit(logging.makeLogRecord({"msg": "a record", "levelno": logging.INFO}))
    up = LogUploader(
        cast(ControllerClient, FakeClient()), device=device_signer, spool=spool, health=health
    )
    monkeypatch.setattr(spool, "roll", lambda **_k: LogSpool.roll(spool, force=True))
    stop = asyncio.Event()
    task = asyncio.create_task(up.run(stop))
    await until(lambda: health.problems() and health.problems()[0].attempts >= 5, what="rounds")
    stop.set()
    await asyncio.wait_for(task, 5)
    lines = [r for r in caplog.records if "cannot write the log upload spool" in r.getMessage()]
    assert len(lines) == 1  # before: one error line per round


# ---------------------------------------------------------------- the status file


def test_status_file_is_written_on_change_only(tmp_path: Path) -> None:
    from agent.status import StatusWriter

    writer = StatusWriter(tmp_path / "status.json", heartbeat=5)
    snapshot = {"phase": "running", "updated_at": 1.0}
    assert writer.offer(snapshot) is True
    for n in range(3):
        assert writer.offer({**snapshot, "updated_at": 2.0 + n}) is False  # time aside: same
    assert writer.offer({**snapshot, "phase": "stopped"}) is True
    for _ in range(5):
        writer.offer({**snapshot, "phase": "stopped"})
    assert writer.writes == 3  # the heartbeat: the 5th snapshot after a write is written
    assert writer.offer({"phase": "stopped"}, force=True) is True


def test_status_file_failure_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agent import status as status_mod

    disk = DiskFull()
    monkeypatch.setattr(status_mod, "write_atomic", disk)
    health = health_tracker()
    writer = status_mod.StatusWriter(tmp_path / "status.json", health=health)
    for n in range(10):
        assert writer.offer({"n": n}) is False
    assert len([r for r in caplog.records if "status file" in r.getMessage()]) == 1
    disk.full = False
    assert writer.offer({"n": 10}) is True and health.problems() == []


# ---------------------------------------------------------------- the vault


def test_vault_policy_write_on_a_full_disk_is_a_vault_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.vault import manager as manager_mod
    from agent.vault.manager import VaultError, VaultManager, VaultPaths

    monkeypatch.setattr(manager_mod, "write_atomic", DiskFull())
    vault = VaultManager(VaultPaths(tmp_path / "persist"), None)
    with pytest.raises(VaultError, match="No space left"):  # before: a bare OSError
        vault.set_policy_pcrs([0, 1, 2, 3, 4, 6, 7, 8, 9, 13, 14])


# ---------------------------------------------------------------- the whole daemon


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


async def test_first_boot_on_a_full_disk_waits_then_onboards(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    notify_socket: socket.socket,
) -> None:
    """Before: the device key write raised out of Node.run (a traceback, exit, crash loop)."""
    from agent.daemon import Node
    from agent.settings import AgentSettings
    from tests.unit.link_harness import live_controller
    from tests.unit.test_daemon import provision, received, status_of

    disk = DiskFull()
    monkeypatch.setattr(identity, "write_atomic", disk)
    monkeypatch.setattr("agent.daemon.Backoff", lambda **_k: _FastBackoff(), raising=False)
    async with live_controller(tmp_path) as ctl:
        paths = provision(tmp_path / "node", ctl, "full-disk-node")
        settings = AgentSettings(paths=paths, status_interval=0.05, stop_grace=2.0)
        node = Node(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(node.run(stop))
        messages: list[bytes] = []
        try:
            await until(lambda: disk.attempts >= 3, what="identity retries")
            assert not task.done()
            assert node.phase == "waiting for storage"

            def ready() -> bool:
                messages.extend(received(notify_socket))
                return b"READY=1" in messages

            await until(ready, what="READY while waiting for storage")
            assert [p.what for p in node.storage.problems()] == ["node identity"]

            def reported() -> bool:
                problems = status_of(paths).get("storage")
                return isinstance(problems, list) and [p["what"] for p in problems] == [
                    "node identity"
                ]

            await until(reported, what="the problem in status.json")
            lines = [r for r in caplog.records if "cannot write the node identity" in r.message]
            assert len(lines) == 1 and not any(r.exc_info for r in caplog.records)
            # Nothing else is logged per retry either.
            assert len([r for r in caplog.records if "software-only" in r.message]) == 1
            assert "interrupted" not in caplog.text
            disk.full = False  # space again: it goes on by itself
            await until(lambda: node.device_uuid, within=10, what="onboarding")
            assert node.storage.problems() == []
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)


class _FastBackoff:
    def next(self) -> float:
        return 0.01

    def reset(self) -> None:
        pass


# ---------------------------------------------------------------- flow logs


async def test_flow_log_queue_on_a_full_disk_is_reported_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    device_signer: Any,
) -> None:
    """Before: one error line per sample (every two minutes, for as long as the disk is full)."""
    from typing import cast

    from agent.link import flowlog
    from agent.link.flowlog import FlowLogQueue, FlowLogUploader
    from agent.link.transport import ControllerClient
    from tests.unit.test_flowlog import DEV, report

    disk = DiskFull()
    monkeypatch.setattr(flowlog, "write_atomic", disk)
    health = health_tracker()
    up = FlowLogUploader(
        cast(ControllerClient, FakeClient()),
        device=device_signer,
        device_uuid=DEV,
        queue=FlowLogQueue(tmp_path / "flowlog"),
        health=health,
    )
    for _ in range(5):
        await up.add([report(1)])
    assert len([r for r in caplog.records if "flow log queue" in r.getMessage()]) == 1
    assert [p.what for p in health.problems()] == ["flow log queue"]
    disk.full = False
    await up.add([report(2)])
    assert health.problems() == [] and len(up.queue.pending()) == 1
