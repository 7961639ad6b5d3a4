"""Issue 9, controller side: one registered device must not be able to stall or fill the controller.

Uploads are capped by entries and elements, not only bytes; decoding and storing run off the
event loop; each device has upload and log-entry rates, an in-flight limit and a storage quota,
refused with 429 + Retry-After and one throttled warning naming the device.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.wire import envelope
from agent.wire.pb.eveuuid import eveuuid_pb2
from agent.wire.pb.metrics import metrics_pb2
from controller import newlogs
from controller.api import PREFIX, ApiSettings
from controller.limits import ReportLimits
from controller.records import ReportKind
from controller.store import Store
from tests.unit.test_controller_harness import (
    Answer,
    FakeDevice,
    Harness,
    controller_harness,
    software_signer,
)
from tests.unit.test_controller_newlogs import ENTRY, lines, make_gzip

SLOW = 1.0
"""Seconds a patched decoder or insert blocks whatever thread runs it."""


@asynccontextmanager
async def harness(tmp_path: Path, **limits: Any) -> AsyncIterator[Harness]:
    settings = ApiSettings(limits=ReportLimits(**limits))
    async with controller_harness(tmp_path, settings=settings) as ctl:
        yield ctl


def slowed(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
    """Make ``owner.name`` block its thread for SLOW seconds before doing its work."""
    original: Callable[..., Any] = getattr(owner, name)

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, slow)


async def ping(ctl: Harness) -> int:
    async with ctl.client.get(f"{PREFIX}/ping") as resp:
        return resp.status


def throttle_lines(caplog: pytest.LogCaptureFixture, device_uuid: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "controller.api"
        and r.levelno == logging.WARNING
        and f"device {device_uuid}:" in r.getMessage()
    ]


async def metrics(device: FakeDevice) -> Answer:
    return await device.send(f"/id/{device.uuid}/metrics", metrics_pb2.ZMetricMsg(devID="x"))


# --- caps that count work, not bytes ------------------------------------------------------------


async def test_a_kilobyte_of_tiny_log_entries_is_refused_cheaply(tmp_path: Path) -> None:
    bomb = gzip.compress(b"{}\n" * 340_000, 9)  # inflates to just under 1 MiB
    assert len(bomb) < 2_000
    async with harness(tmp_path) as ctl:
        device = await ctl.onboarded()
        started = time.monotonic()
        answer = await device.send(f"/id/{device.uuid}/newlogs", bomb)
        elapsed = time.monotonic() - started
        assert answer.status == 400
        assert b"more than 10000 entries" in answer.body
        assert ctl.store.log_count(device.uuid) == 0
        assert elapsed < 1.0


async def test_an_upload_within_the_caps_is_stored_whole(tmp_path: Path) -> None:
    async with harness(tmp_path, max_log_entries=50) as ctl:
        device = await ctl.onboarded()
        ok = await device.send(f"/id/{device.uuid}/newlogs", make_gzip(lines(*[ENTRY] * 50)))
        assert ok.status == 201
        too_many = await device.send(f"/id/{device.uuid}/newlogs", make_gzip(lines(*[ENTRY] * 51)))
        assert too_many.status == 400
        assert ctl.store.log_count(device.uuid) == 50


async def test_a_report_of_many_tiny_elements_is_refused(tmp_path: Path) -> None:
    message = metrics_pb2.ZMetricMsg(devID="x")
    for _ in range(150_000):
        message.am.add()  # two bytes each on the wire
    payload = message.SerializeToString()
    assert len(payload) < 400_000
    async with harness(tmp_path) as ctl:
        device = await ctl.onboarded()
        answer = await device.send(f"/id/{device.uuid}/metrics", payload)
        assert answer.status == 400
        assert b"more than 100000 fields and elements" in answer.body
        assert ctl.store.reports(device.uuid, ReportKind.METRICS) == []


async def test_a_report_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    async with harness(tmp_path, max_report_bytes=1000) as ctl:
        device = await ctl.onboarded()
        big = metrics_pb2.ZMetricMsg(devID="x" * 2000)
        answer = await device.send(f"/id/{device.uuid}/metrics", big)
        assert answer.status == 400
        assert b"at most 1000" in answer.body


# --- heavy work off the event loop --------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "name", "path", "body"),
    [
        (newlogs, "decode_upload", "newlogs", make_gzip(lines(ENTRY))),
        (Store, "add_logs", "newlogs", make_gzip(lines(ENTRY))),
        (Store, "add_report", "metrics", metrics_pb2.ZMetricMsg(devID="x").SerializeToString()),
    ],
    ids=["decode", "insert logs", "insert report"],
)
async def test_pings_are_answered_while_an_upload_is_worked_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    path: str,
    body: bytes,
) -> None:
    async with harness(tmp_path) as ctl:
        device = await ctl.onboarded()
        slowed(monkeypatch, owner, name)
        started = time.monotonic()
        upload = asyncio.create_task(device.send(f"/id/{device.uuid}/{path}", body))
        await asyncio.sleep(0.2)  # the upload is being worked on now
        assert await ping(ctl) == 200
        answered = time.monotonic() - started
        assert not upload.done()
        assert answered < SLOW * 0.7, f"ping took {answered:.2f} s: the event loop was blocked"
        assert (await upload).status == 201


# --- per-device limits --------------------------------------------------------------------------


async def test_upload_rate_is_per_device_with_429_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="controller.api")
    async with harness(tmp_path, request_burst=3, requests_per_second=0.01) as ctl:
        noisy = await ctl.onboarded("noisy")
        quiet = await ctl.onboarded("quiet")
        statuses = [(await metrics(noisy)).status for _ in range(3)]
        assert statuses == [201, 201, 201]
        refused = [await metrics(noisy) for _ in range(20)]
        assert {a.status for a in refused} == {429}
        async with ctl.client.post(
            f"{PREFIX}/id/{noisy.uuid}/metrics", data=b""
        ) as resp:  # an unsigned request is refused before the device is known
            assert resp.status == 400
        async with ctl.client.post(
            f"{PREFIX}/id/{noisy.uuid}/metrics",
            data=(await _sealed_metrics(noisy)),
        ) as resp:
            assert resp.status == 429
            retry_after = int(resp.headers["Retry-After"])
            assert 1 <= retry_after <= 101
        assert (await metrics(quiet)).status == 201  # another device's share is untouched
        assert await ping(ctl) == 200
        assert len(ctl.store.reports(noisy.uuid, ReportKind.METRICS)) == 3

    warnings = throttle_lines(caplog, noisy.uuid)
    assert len(warnings) == 1, warnings
    assert "upload rate over 0.01/s" in warnings[0]
    assert "429" in warnings[0]
    assert throttle_lines(caplog, quiet.uuid) == []
    # The refused requests' own lines are at DEBUG: the warning above is all an operator sees.
    request_lines = [r for r in caplog.records if r.getMessage().startswith("POST ")]
    refused_lines = [r for r in request_lines if " 429 " in r.getMessage()]
    assert len(refused_lines) == 21
    assert {r.levelno for r in refused_lines} == {logging.DEBUG}


async def _sealed_metrics(device: FakeDevice) -> bytes:
    return envelope.seal_as_device(
        metrics_pb2.ZMetricMsg(devID="x").SerializeToString(), device.signer
    )


async def test_log_entries_are_rate_limited_by_count(tmp_path: Path) -> None:
    async with harness(tmp_path, log_entry_burst=100, log_entries_per_second=1.0) as ctl:
        device = await ctl.onboarded()
        path = f"/id/{device.uuid}/newlogs"
        # A large upload is taken whole, putting the device in debt ...
        assert (await device.send(path, make_gzip(lines(*[ENTRY] * 150)))).status == 201
        # ... so the next one waits until the debt is paid, whatever its size.
        answer = await device.send(path, make_gzip(lines(ENTRY)))
        assert answer.status == 429
        assert b"log entry rate over 1/s" in answer.body
        # Other reports are not held up by the log debt.
        assert (await metrics(device)).status == 201
        assert ctl.store.log_count(device.uuid) == 150


async def test_refused_log_uploads_still_cost_the_entries_decoded(tmp_path: Path) -> None:
    async with harness(
        tmp_path, log_entry_burst=100, log_entries_per_second=1.0, max_log_entries=60
    ) as ctl:
        device = await ctl.onboarded()
        path = f"/id/{device.uuid}/newlogs"
        for _ in range(2):  # 2 x 60 entries decoded, then refused for the 61st
            assert (await device.send(path, make_gzip(lines(*[ENTRY] * 61)))).status == 400
        assert (await device.send(path, make_gzip(lines(ENTRY)))).status == 429


async def test_storage_quota_is_per_device(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controller.api")
    async with harness(tmp_path, quota_bytes=2_000) as ctl:
        device = await ctl.onboarded()
        other = await ctl.onboarded("other")
        path = f"/id/{device.uuid}/newlogs"
        answers = [await device.send(path, make_gzip(lines(*[ENTRY] * 5))) for _ in range(10)]
        statuses = [a.status for a in answers]
        assert 201 in statuses and 429 in statuses
        first_refusal = statuses.index(429)
        assert set(statuses[first_refusal:]) == {429}
        refused = answers[first_refusal]
        assert b"storage quota of 2000 bytes used up" in refused.body
        assert (await metrics(device)).status == 429  # reports share the quota
        assert (await metrics(other)).status == 201
    warnings = throttle_lines(caplog, device.uuid)
    assert len(warnings) == 1 and "quota" in warnings[0]


async def test_quota_retry_after_says_come_back_much_later(tmp_path: Path) -> None:
    async with harness(tmp_path, quota_bytes=1) as ctl:
        device = await ctl.onboarded()
        await metrics(device)  # the first upload is counted after it is stored
        body = await _sealed_metrics(device)
        async with ctl.client.post(f"{PREFIX}/id/{device.uuid}/metrics", data=body) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "3600"


async def test_one_device_cannot_run_many_uploads_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(tmp_path, max_inflight=1) as ctl:
        device = await ctl.onboarded()
        slowed(monkeypatch, newlogs, "decode_upload")
        path = f"/id/{device.uuid}/newlogs"
        answers = await asyncio.gather(
            *(device.send(path, make_gzip(lines(ENTRY))) for _ in range(3))
        )
        assert sorted(a.status for a in answers) == [201, 429, 429]


async def test_too_much_pending_work_from_all_devices_is_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(tmp_path, max_pending=2) as ctl:
        devices = [await ctl.onboarded(f"serial-{n}") for n in range(3)]
        slowed(monkeypatch, newlogs, "decode_upload")
        answers = await asyncio.gather(
            *(d.send(f"/id/{d.uuid}/newlogs", make_gzip(lines(ENTRY))) for d in devices)
        )
        assert sorted(a.status for a in answers) == [201, 201, 503]


async def test_requests_over_the_device_rate_wait_then_get_429(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="controller.api")
    delay = 0.3
    async with harness(
        tmp_path, device_request_burst=5, device_requests_per_second=0.01, over_rate_delay=delay
    ) as ctl:
        noisy = await ctl.onboarded("noisy")  # /uuid: the first of its 5
        quiet = await ctl.onboarded("quiet")
        uuid_request = eveuuid_pb2.UuidRequest()
        # Requests that fail the signature check cannot spend the device's share.
        stranger = software_signer("stranger")
        forged = envelope.seal(
            b"", stranger, sender_cert_hash=envelope.device_cert_hash(noisy.signer.certificate)
        )
        for _ in range(10):
            assert (await noisy.post("/uuid", forged)).status == 401
        statuses = [(await noisy.send("/uuid", uuid_request)).status for _ in range(4)]
        assert statuses == [200] * 4
        started = time.monotonic()
        waiting = asyncio.create_task(noisy.send("/uuid", uuid_request))
        await asyncio.sleep(delay / 3)
        # While the noisy device's request waits, everyone else is answered at once.
        assert await ping(ctl) == 200
        assert (await quiet.send("/uuid", uuid_request)).status == 200
        assert not waiting.done()
        refused = await waiting
        assert time.monotonic() - started >= delay
        assert refused.status == 429
        assert b"request rate over 0.01/s" in refused.body
        assert (await metrics(noisy)).status == 429  # every kind of request counts
    warnings = throttle_lines(caplog, noisy.uuid)
    assert len(warnings) == 1 and "request rate over 0.01/s" in warnings[0], warnings
    assert throttle_lines(caplog, quiet.uuid) == []


async def test_a_burst_is_worked_off_at_the_device_pace(tmp_path: Path) -> None:
    """Within its request burst a device's requests beyond the pace burst wait their turn
    (none refused) while other devices are answered at once; more than ``max_pace_wait``
    of waiting is refused 429."""
    pace = 20.0
    async with harness(
        tmp_path, device_pace_per_second=pace, device_pace_burst=2, max_pace_wait=0.5,
        over_rate_delay=0.05,
    ) as ctl:  # fmt: skip
        busy = await ctl.onboarded("busy")  # /uuid: the first of its 2 at once
        quiet = await ctl.onboarded("quiet")
        await asyncio.sleep(2 / pace)  # the pace burst full again
        uuid_request = eveuuid_pb2.UuidRequest()
        started = time.monotonic()
        burst = [asyncio.create_task(busy.send("/uuid", uuid_request)) for _ in range(8)]
        await asyncio.sleep(0.05)
        quiet_started = time.monotonic()
        assert (await quiet.send("/uuid", uuid_request)).status == 200
        assert time.monotonic() - quiet_started < 0.2, "the other device waited its turn"
        assert not all(t.done() for t in burst), "the burst was not paced"
        answers = await asyncio.gather(*burst)
        assert [a.status for a in answers] == [200] * 8
        # 2 at once, then 6 more at 20/s: the last one's turn came after 0.3 s.
        assert time.monotonic() - started >= 6 / pace - 0.02
        # 20 at once would queue the last ones past 0.5 s: those are refused, the rest served.
        flood = await asyncio.gather(*(busy.send("/uuid", uuid_request) for _ in range(20)))
        statuses = sorted(a.status for a in flood)
        assert 200 in statuses and 429 in statuses, statuses
        refused = next(a for a in flood if a.status == 429)
        assert b"more requests at once than 20/s works off" in refused.body
        assert statuses.count(200) <= 0.5 * pace + 2
