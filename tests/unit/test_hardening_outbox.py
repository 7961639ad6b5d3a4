# SPDX-License-Identifier: Apache-2.0
"""Hardening: one bad record never holds up the reports behind it.

Info outbox: a record the controller refuses for good (400, 413, 422, and the other 4xx EVE does
not retry) moves to ``rejected/`` at once, logged; one answered with a status worth retrying
(401, 403, 429, 5xx) waits with its own backoff while the others go; an entry that cannot be read
is moved aside; ``rejected/`` is bounded.  Logs (device and apps): a file refused for good moves
to ``failed/`` at the first refusal (before: after ten, about 20 minutes, the count lost on
restart), logged; an unreadable file too; ``failed/`` is bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from agent.link import gzlog
from agent.link import outbox as outbox_mod
from agent.link.logship import LogSpool, LogUploader
from agent.link.reporting import Outbox, Reporter
from agent.link.transport import ControllerClient
from agent.model.configitems import ConfigItems
from agent.wire.envelope import SoftwareSigner
from tests.unit.test_reporting import FakeClient, set_mtime_ns


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    tmp_path: Path, signer: SoftwareSigner, client: FakeClient, clock: Clock | None = None
) -> tuple[Reporter, Outbox]:
    box = Outbox(tmp_path / "outbox")
    kwargs = {"clock": clock} if clock is not None else {}
    rep = Reporter(
        cast(ControllerClient, client),
        device=signer,
        outbox=box,
        facts=lambda: None,
        items=ConfigItems,
        **kwargs,  # type: ignore[arg-type]
    )
    return rep, box


def queue(box: Outbox, *keys: str) -> None:
    """Entries oldest first in the order given."""
    for n, key in enumerate(keys):
        box.put(key, key.encode())
        set_mtime_ns(box.directory / f"{key}.info", 1_000_000_000 + n)


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_a_record_refused_for_good_is_moved_aside_at_once(
    tmp_path: Path,
    device_signer: SoftwareSigner,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    client = FakeClient(status, 201)
    rep, box = make(tmp_path, device_signer, client)
    queue(box, "app:bad", "device")
    await rep.flush()
    assert box.pending() == []
    assert (rep.refused_info, rep.sent_info) == (1, 1)
    rejected = box.directory / "rejected"
    (kept,) = rejected.iterdir()
    assert kept.name.startswith("app:bad.") and kept.read_bytes() == b"app:bad"
    assert f"refused info app:bad for good (HTTP {status})" in caplog.text


@pytest.mark.parametrize("status", [500, 503, 429, 401, 403])
async def test_a_record_answered_with_a_retriable_status_does_not_block_the_others(
    tmp_path: Path, device_signer: SoftwareSigner, status: int
) -> None:
    """Before: the pass stopped at the first record, so every later report waited for it."""
    client = FakeClient(status, 201, 201)
    clock = Clock()
    rep, box = make(tmp_path, device_signer, client, clock)
    queue(box, "app:stuck", "device", "app:other")
    await rep.flush()
    assert [k for k, _, _ in box.pending()] == ["app:stuck"]  # the others went
    assert rep.sent_info == 2
    await rep.flush()
    assert len(client.sent) == 3  # its own backoff: not retried at once
    clock.now += 60.0  # EVE's minRetryDelay
    await rep.flush()  # due: retried, delivered
    assert box.pending() == [] and rep.sent_info == 3
    assert not (box.directory / "rejected").exists()


async def test_no_answer_still_stops_the_pass(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    from agent.link.transport import TransportError

    client = FakeClient(TransportError("down"))
    rep, box = make(tmp_path, device_signer, client)
    queue(box, "device", "app:a")
    await rep.flush()
    assert len(client.sent) == 1 and len(box.pending()) == 2


async def test_an_unreadable_entry_is_moved_aside_and_the_rest_goes(
    tmp_path: Path, device_signer: SoftwareSigner, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: reading it raised out of flush(), ending the reporter task (and the daemon)."""
    client = FakeClient()
    rep, box = make(tmp_path, device_signer, client)
    queue(box, "device")
    (box.directory / "app:broken.info").mkdir()  # reads fail with EISDIR
    await rep.flush()
    assert box.pending() == [] and rep.sent_info == 1
    assert [p.name.split(".")[0] for p in (box.directory / "rejected").iterdir()] == ["app:broken"]
    assert "outbox entry app:broken.info unreadable" in caplog.text


async def test_rejected_is_bounded(
    tmp_path: Path, device_signer: SoftwareSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_mod, "MAX_REJECTED", 3, raising=False)
    keys = [f"app:{n}" for n in range(6)]
    client = FakeClient(*([400] * 6))
    rep, box = make(tmp_path, device_signer, client)
    queue(box, *keys)
    await rep.flush()
    assert len(list((box.directory / "rejected").iterdir())) == 3


# ---------------------------------------------------------------- logs


def log_files(spool: LogSpool, count: int) -> list[Path]:
    spool.pending_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(count):
        path = spool.pending_dir / f"dev.{1000 + n}.gz"
        path.write_bytes(gzlog.gzip_member(f"line {n}\n".encode(), mtime=0, comment="{}"))
        files.append(path)
    return files


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_a_log_file_refused_for_good_moves_aside_at_the_first_refusal(
    tmp_path: Path,
    device_signer: SoftwareSigner,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    spool = LogSpool(tmp_path / "newlog", dict)
    bad, good = log_files(spool, 2)
    client = FakeClient(status, 201)
    up = LogUploader(cast(ControllerClient, client), device=device_signer, spool=spool)
    assert await up.upload_pending() is True  # before: False, nine more rounds to go
    assert (spool.failed_dir / bad.name).exists() and not good.exists()
    assert f"newlogs: file {bad.name} refused for good (HTTP {status})" in caplog.text


async def test_an_unreadable_log_file_is_moved_aside(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    spool = LogSpool(tmp_path / "newlog", dict)
    (good,) = log_files(spool, 1)
    broken = spool.pending_dir / "dev.999.gz"
    broken.mkdir()
    client = FakeClient(201)
    up = LogUploader(cast(ControllerClient, client), device=device_signer, spool=spool)
    assert await up.upload_pending() is True  # before: IsADirectoryError out of the task
    assert (spool.failed_dir / broken.name).is_dir() and not good.exists()


async def test_the_device_logs_failed_directory_is_bounded(
    tmp_path: Path, device_signer: SoftwareSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gzlog, "MAX_FAILED_FILES", 2, raising=False)
    spool = LogSpool(tmp_path / "newlog", dict)
    log_files(spool, 5)
    client = FakeClient(*([400] * 5))
    up = LogUploader(cast(ControllerClient, client), device=device_signer, spool=spool)
    assert await up.upload_pending() is True
    assert sorted(p.name for p in spool.failed_dir.iterdir()) == ["dev.1003.gz", "dev.1004.gz"]


async def test_an_unreadable_flow_log_message_does_not_hold_up_the_rest(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    from agent.link.flowlog import FlowLogQueue, FlowLogUploader
    from tests.unit.test_flowlog import DEV, report

    client = FakeClient()
    up = FlowLogUploader(
        cast(ControllerClient, client),
        device=device_signer,
        device_uuid=DEV,
        queue=FlowLogQueue(tmp_path / "flowlog"),
    )
    (tmp_path / "flowlog").mkdir()
    (tmp_path / "flowlog" / "1.pb").mkdir()  # oldest, and reads fail with EISDIR
    await up.add([report(1)])
    assert await up.upload_pending() is True  # before: the OSError ended every pass
    assert up.uploaded == 1 and len(client.sent) == 1
    assert await up.upload_pending() is True  # the unremovable one is skipped, not retried
    assert len(client.sent) == 1
