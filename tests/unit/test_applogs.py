# SPDX-License-Identifier: Apache-2.0
"""agent.link.applogs: the per-app spool (EVE's app newlog files, bounds, notes) and the uploader
(oldest first, refusals, outages), and a container app's output through the collector and the
real controller app to ``eve-controller logs --app``."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from agent.drivers.containers import ContainerSpec
from agent.drivers.docker_fake import FakeContainerRuntime
from agent.link import applogs
from agent.link.applogs import AppLogSpool, AppLogUploader
from agent.link.checkpoint import CheckpointStore
from agent.link.controllercerts import ControllerCertStore
from agent.link.transport import ControllerClient
from agent.model.configitems import ConfigItems
from agent.reconcile.apptelemetry import AppTarget, AppTelemetry
from agent.util.liveness import Liveness
from agent.wire import envelope
from agent.wire.envelope import SoftwareSigner
from controller.cli import main
from tests.unit.link_harness import LiveController, live_controller, onboard_device, until
from tests.unit.test_logship import GO_KEYS, FakeClient, gzip_header

APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
OTHER = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
IMAGE = "127.0.0.1:5000/test/busybox@sha256:" + "ab" * 32


@dataclass(frozen=True)
class Line:
    time: float
    text: str
    stream: str = "output"


def lines(*texts: str, at: float = 1_900_000_000.5) -> list[Line]:
    return [Line(at + i, text) for i, text in enumerate(texts)]


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def fname(path: Path) -> bytes:
    """The gzip header's FNAME field of the file at ``path``."""
    blob = path.read_bytes()
    assert blob[3] & 0x08 and not blob[3] & 0x10  # FNAME, no FCOMMENT
    return blob[10 : blob.index(b"\0", 10)]


@pytest.fixture
def spool(tmp_path: Path) -> AppLogSpool:
    return AppLogSpool(tmp_path / "applogs")


# ---------------------------------------------------------------- the spool


def test_files_are_eve_app_newlog_files(spool: AppLogSpool) -> None:
    spool.add(APP, lines("hello", "caf\u00e9 \u2603"), app_name="web caf\u00e9 \u2603")
    assert spool.pending() == []  # nothing on disk before a roll
    assert spool.roll(force=True) == 1
    [path] = spool.pending()
    assert spool.app_of(path) == APP and path.parent == spool.pending_dir / APP
    assert fname(path) == b"web caf\xe9 \\u2603"  # Latin-1, others escaped as EVE does
    got = entries(path)
    assert [e["content"] for e in got] == ["hello", "caf\u00e9 \u2603"]
    for e in got:
        assert set(e) <= GO_KEYS
        assert (e["severity"], e["source"], e["tags"]) == ("info", APP, {"stream": "output"})
    assert got[0]["timestamp"] == {"seconds": 1_900_000_000, "nanos": 500_000_000}
    assert got[1]["msgid"] == got[0]["msgid"] + 1
    _flags, mtime, _os, _comment, _len = gzip_header(path.read_bytes())
    assert mtime > 1_700_000_000


def test_each_app_its_own_files_oldest_first(spool: AppLogSpool) -> None:
    spool.add(APP, lines("a1"), app_name="a")
    spool.roll(force=True)
    spool.add(OTHER, lines("b1"), app_name="b")
    spool.add(APP, lines("a2"), app_name="a")
    spool.roll(force=True)
    got = [(spool.app_of(p), [e["content"] for e in entries(p)]) for p in spool.pending()]
    assert got[0] == (APP, ["a1"])
    assert sorted(got[1:]) == [(APP, ["a2"]), (OTHER, ["b1"])]
    # msgid grows per app, across files.
    a1, a2 = (entries(p)[0]["msgid"] for p in spool.pending() if spool.app_of(p) == APP)
    assert a2 == a1 + 1


def test_roll_waits_for_age_or_size(tmp_path: Path) -> None:
    now = [100.0]
    spool = AppLogSpool(tmp_path, clock=lambda: now[0])
    spool.add(APP, lines("young"))
    assert spool.roll() == 0
    now[0] += applogs.MAX_AGE
    assert spool.roll() == 1
    spool.add(APP, [Line(1.0, "x" * 1000)] * 300)  # 300 KB: big enough at once
    assert spool.roll() >= 1
    assert sum(len(entries(p)) for p in spool.pending()) == 301


def test_large_volume_is_split_under_50kb(spool: AppLogSpool) -> None:
    spool.add(APP, [Line(1.0, os.urandom(96).hex()) for _ in range(2000)], app_name="noisy")
    assert spool.roll(force=True) > 1
    assert all(p.stat().st_size < 50_000 for p in spool.pending())
    assert sum(len(entries(p)) for p in spool.pending()) == 2000
    assert all(fname(p) == b"noisy" for p in spool.pending())


def test_no_name_uses_the_uuid(spool: AppLogSpool) -> None:
    spool.add(APP, lines("x"))
    spool.roll(force=True)
    assert fname(spool.pending()[0]) == APP.encode()


def test_memory_bound_drops_oldest_lines_with_a_note(
    spool: AppLogSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(applogs, "MAX_BUFFER_BYTES", 1000)
    spool.add(APP, [Line(1.0, f"line {i} " + "y" * 80) for i in range(50)], app_name="web")
    assert spool.dropped_lines > 0
    spool.roll(force=True)
    got = [e for p in spool.pending() for e in entries(p)]
    note = got[-1]  # after the lines it was written with: msgid and time keep growing
    assert (note["severity"], note["source"]) == ("warning", "eve-agent")
    assert f"{spool.dropped_lines} lines" in note["content"]
    assert got[-2]["content"].startswith("line 49 ")
    assert len(got) == 1 + 50 - spool.dropped_lines
    assert [e["msgid"] for e in got] == sorted(e["msgid"] for e in got)


def test_disk_bound_per_app_drops_its_oldest_files(
    spool: AppLogSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        spool.add(APP, [Line(1.0, os.urandom(2000).hex())], app_name="web")
        spool.add(OTHER, lines(f"other {i}"), app_name="other")
        spool.roll(force=True)
    first_app_file = next(p for p in spool.pending() if spool.app_of(p) == APP)
    size = first_app_file.stat().st_size
    monkeypatch.setattr(applogs, "MAX_APP_SPOOL_BYTES", 3 * size + size // 2)
    spool.trim()
    mine = [p for p in spool.pending() if spool.app_of(p) == APP]
    assert len(mine) == 3 and first_app_file not in mine
    assert len([p for p in spool.pending() if spool.app_of(p) == OTHER]) == 5
    assert spool.dropped_files == 2
    spool.roll(force=True)  # the note goes out in the app's next file
    newest = [p for p in spool.pending() if spool.app_of(p) == APP][-1]
    assert newest not in mine
    assert entries(newest)[0]["content"].startswith("eve-agent: 2 files")


def test_total_bound_drops_the_oldest_of_all(
    spool: AppLogSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        spool.add(APP if i % 2 else OTHER, lines(f"n{i}"))
        spool.roll(force=True)
    files = spool.pending()
    monkeypatch.setattr(applogs, "MAX_SPOOL_BYTES", sum(p.stat().st_size for p in files[2:]))
    spool.trim()
    assert spool.pending() == files[2:]
    # Directories left empty go.
    assert all(any(d.iterdir()) for d in spool.pending_dir.iterdir())


def test_a_failed_write_keeps_the_lines(spool: AppLogSpool) -> None:
    spool.pending_dir.parent.mkdir(parents=True)
    spool.pending_dir.write_text("not a directory")
    spool.add(APP, lines("keep me"))
    with pytest.raises(OSError):
        spool.roll(force=True)
    spool.pending_dir.unlink()
    spool.roll(force=True)
    assert [e["content"] for p in spool.pending() for e in entries(p)] == ["keep me"]


def test_only_app_uuids_are_spooled(spool: AppLogSpool) -> None:
    spool.add("../../etc", lines("x"))
    assert spool.dropped_lines == 1
    spool.add(APP.upper(), lines("y"))  # one directory per app, whatever the case
    spool.roll(force=True)
    assert [spool.app_of(p) for p in spool.pending()] == [APP]
    spool.pending()[0].unlink()
    (spool.pending_dir / "not-an-app").mkdir(parents=True)
    (spool.pending_dir / "not-an-app" / "1.gz").write_bytes(b"x")
    assert spool.pending() == []


def test_failed_files_are_bounded(spool: AppLogSpool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(applogs, "MAX_FAILED_FILES", 3)
    for n in range(5):
        path = spool.failed_dir / APP / f"{1000 + n}.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    spool.trim()
    assert sorted(p.name for p in (spool.failed_dir / APP).iterdir()) == [
        "1002.gz",
        "1003.gz",
        "1004.gz",
    ]


# ---------------------------------------------------------------- the uploader


def uploader(client: FakeClient, spool: AppLogSpool, signer: SoftwareSigner) -> AppLogUploader:
    return AppLogUploader(cast(ControllerClient, client), device=signer, spool=spool)


async def test_upload_posts_each_file_to_its_app(
    spool: AppLogSpool, device_signer: SoftwareSigner
) -> None:
    spool.add(APP, lines("a"), app_name="a")
    spool.roll(force=True)
    spool.add(OTHER, lines("b"), app_name="b")
    spool.roll(force=True)
    contents = [p.read_bytes() for p in spool.pending()]
    client = FakeClient(201, 200)
    up = uploader(client, spool, device_signer)
    assert await up.upload_pending() is True
    assert [a for a, _ in client.sent] == [
        f"apps/instanceid/{APP}/newlogs",
        f"apps/instanceid/{OTHER}/newlogs",
    ]
    trusted = {envelope.device_cert_hash(device_signer.cert): device_signer.cert}
    sent = [envelope.open_signed(cast(bytes, body), trusted).payload for _, body in client.sent]
    assert sent == contents and spool.pending() == [] and up.uploaded == 2


@pytest.mark.parametrize("failure", [503, 429, 500, "transport"])
async def test_upload_keeps_files_when_not_delivered(
    spool: AppLogSpool, device_signer: SoftwareSigner, failure: int | str
) -> None:
    from agent.link.transport import TransportError

    spool.add(APP, lines("a"))
    spool.roll(force=True)
    spool.add(OTHER, lines("b"))
    spool.roll(force=True)
    answer: int | Exception = TransportError("down") if failure == "transport" else int(failure)
    client = FakeClient(answer)
    up = uploader(client, spool, device_signer)
    assert await up.upload_pending() is False
    assert len(client.sent) == 1 and len(spool.pending()) == 2  # stopped at the first


async def test_a_file_refused_for_good_moves_aside_at_once(
    spool: AppLogSpool, device_signer: SoftwareSigner
) -> None:
    spool.add(APP, lines("bad"))
    spool.roll(force=True)
    spool.add(OTHER, lines("good"))
    spool.roll(force=True)
    bad, good = spool.pending()
    client = FakeClient(400, 201)
    up = uploader(client, spool, device_signer)
    assert await up.upload_pending() is True
    assert (spool.failed_dir / APP / bad.name).exists()
    assert not good.exists() and up.uploaded == 1 and up.moved_aside == 1


async def test_run_rolls_uploads_and_keeps_memory_at_stop(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    now = [100.0]
    spool = AppLogSpool(tmp_path / "applogs", clock=lambda: now[0])
    client = FakeClient()
    liveness = Liveness()
    up = AppLogUploader(
        cast(ControllerClient, client), device=device_signer, spool=spool, liveness=liveness
    )
    spool.add(APP, lines("first"))
    now[0] += applogs.MAX_AGE  # old enough for the first round
    stop = asyncio.Event()
    task = asyncio.create_task(up.run(stop))
    await until(lambda: up.uploaded == 1, what="the first upload")
    assert liveness.problems() == []
    spool.add(APP, lines("at stop"))  # young: only the final roll writes it
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(client.sent) == 1
    assert [e["content"] for p in spool.pending() for e in entries(p)] == ["at stop"]


# ---------------------------------------------------------------- through the controller


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[LiveController]:
    async with live_controller(tmp_path) as ctl:
        yield ctl


async def onboarded(
    ctl: LiveController, tmp_path: Path, signer: SoftwareSigner
) -> tuple[ControllerClient, str]:
    client = ctl.client()
    certs = ControllerCertStore(
        CheckpointStore(tmp_path / "checkpoint", "controllercerts"), ctl.pki.root_pem
    )
    return client, await onboard_device(client, signer, certs, ctl.pki.onboard)


async def test_container_output_reaches_eve_controller_logs(
    controller: LiveController,
    tmp_path: Path,
    device_signer: SoftwareSigner,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, device_uuid = await onboarded(controller, tmp_path, device_signer)
    try:
        runtime = FakeContainerRuntime("node-a")
        runtime.publish(IMAGE)
        await runtime.pull(IMAGE)
        await runtime.create(ContainerSpec(name=APP, image=IMAGE, app=APP))
        await runtime.start(APP)  # prints its environment, then "ready"
        spool = AppLogSpool(tmp_path / "persist" / "applogs")
        telemetry = AppTelemetry(
            targets=lambda: [AppTarget(APP, "web", "container")],
            containers=runtime,
            hypervisor=None,
            items=ConfigItems,
            sink=spool.add,
        )
        up = AppLogUploader(client, device=device_signer, spool=spool)
        await telemetry.sample_once()
        await asyncio.to_thread(spool.roll, force=True)
        assert await up.upload_pending() is True
        stored = controller.store.log_entries(device_uuid, app_uuid=APP)
        assert [json.loads(r.entry)["content"] for r in stored][-1] == "ready"
        assert json.loads(stored[0].meta)["appName"] == "web"
        assert controller.count(f"apps/instanceid/{APP}/newlogs", 201) == 1

        out = cli(
            capsys, "logs", "--state", str(controller.pki.state.root), device_uuid, "--app", APP
        )
        printed = [json.loads(line) for line in out.splitlines()]
        assert printed[-1]["entry"]["content"] == "ready"
        assert {(p["app"], p["app_name"]) for p in printed} == {(APP, "web")}
    finally:
        await client.close()


async def test_app_logs_wait_out_an_outage_and_an_agent_restart(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    spool_dir = tmp_path / "persist" / "applogs"
    async with live_controller(tmp_path / "up") as ctl:
        client, device_uuid = await onboarded(ctl, tmp_path, device_signer)
        pki = ctl.pki
    # The controller is gone: the lines stay on disk.
    spool = AppLogSpool(spool_dir)
    spool.add(APP, lines("during the outage"), app_name="web")
    await asyncio.to_thread(spool.roll, force=True)
    assert await AppLogUploader(client, device=device_signer, spool=spool).upload_pending() is False
    await client.close()
    # The agent restarts (a new spool over the same directory) and the controller is back.
    async with live_controller(tmp_path / "up", pki=pki) as ctl:
        client = ctl.client()
        client.device_uuid = device_uuid
        try:
            again = AppLogUploader(client, device=device_signer, spool=AppLogSpool(spool_dir))
            assert await again.upload_pending() is True
            stored = ctl.store.log_entries(device_uuid, app_uuid=APP)
            assert [json.loads(r.entry)["content"] for r in stored] == ["during the outage"]
        finally:
            await client.close()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out
