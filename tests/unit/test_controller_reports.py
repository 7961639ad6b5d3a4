"""Info, metrics, flow logs, hardware health and newlogs are verified, decoded and stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.wire.pb.flowlog import flowlog_pb2
from agent.wire.pb.info import info_pb2
from agent.wire.pb.metrics import metrics_pb2
from controller.api import ApiSettings
from controller.records import ReportKind
from tests.unit.test_controller_harness import FakeDevice, Harness, controller_harness
from tests.unit.test_controller_newlogs import ENTRY, lines, make_gzip

APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


@pytest.fixture
async def ctl(tmp_path: Path) -> AsyncIterator[Harness]:
    async with controller_harness(tmp_path, settings=ApiSettings(max_log_bytes=100_000)) as h:
        yield h


@pytest.fixture
async def device(ctl: Harness) -> FakeDevice:
    return await ctl.onboarded()


async def test_info_metrics_flowlog_are_stored_as_json(ctl: Harness, device: FakeDevice) -> None:
    info = info_pb2.ZInfoMsg(devId=device.uuid)
    info.atTimeStamp.seconds = 1_800_000_000
    metrics = metrics_pb2.ZMetricMsg(devID=device.uuid)
    flows = flowlog_pb2.FlowMessage(devId=device.uuid)
    for path, message in (("info", info), ("metrics", metrics), ("flowlog", flows)):
        answer = await device.send(f"/id/{device.uuid}/{path}", message)
        assert answer.status == 201, path
        assert answer.content_type == "application/x-proto-binary"

    [stored] = ctl.store.reports(device.uuid, ReportKind.INFO)
    assert stored.json is not None
    assert json.loads(stored.json) == {"devId": device.uuid, "atTimeStamp": "2027-01-15T08:00:00Z"}
    assert stored.raw == info.SerializeToString()
    assert stored.received_at == ctl.clock.now
    counts = ctl.store.report_counts(device.uuid)
    assert counts[ReportKind.METRICS] == 1
    assert counts[ReportKind.FLOWLOG] == 1


async def test_hardwarehealth_is_kept_raw(ctl: Harness, device: FakeDevice) -> None:
    answer = await device.send(f"/id/{device.uuid}/hardwarehealth", b"\x0a\x03abc")
    assert answer.status == 201
    [stored] = ctl.store.reports(device.uuid, ReportKind.HARDWAREHEALTH)
    assert (stored.raw, stored.json) == (b"\x0a\x03abc", None)


async def test_undecodable_info_is_400(ctl: Harness, device: FakeDevice) -> None:
    answer = await device.send(f"/id/{device.uuid}/info", b"\xff\xff\xff\xff")
    assert answer.status == 400
    info = info_pb2.ZInfoMsg()
    info.atTimeStamp.seconds = 10**15  # parses, but is no valid time
    answer = await device.send(f"/id/{device.uuid}/info", info)
    assert answer.status == 400
    assert ctl.store.reports(device.uuid, ReportKind.INFO) == []


async def test_reports_keep_the_newest_last(ctl: Harness, device: FakeDevice) -> None:
    for n in range(3):
        ctl.clock.now += 1
        await device.send(f"/id/{device.uuid}/metrics", metrics_pb2.ZMetricMsg(devID=str(n)))
    newest = ctl.store.reports(device.uuid, ReportKind.METRICS, last=2)
    assert [json.loads(r.json or "")["devID"] for r in newest] == ["1", "2"]


async def test_device_logs_are_stored_with_their_metadata(ctl: Harness, device: FakeDevice) -> None:
    meta = {"devID": device.uuid, "image": "IMGA", "eveVersion": "1.2.3"}
    upload = make_gzip(lines(ENTRY, {**ENTRY, "msgid": 8}), comment=json.dumps(meta))
    answer = await device.send(f"/id/{device.uuid}/newlogs", upload)
    assert answer.status == 201
    records = ctl.store.log_entries(device.uuid)
    assert [json.loads(r.entry)["msgid"] for r in records] == [7, 8]
    assert json.loads(records[0].meta)["eveVersion"] == "1.2.3"
    assert records[0].app_uuid is None


async def test_app_logs_carry_the_app_name(ctl: Harness, device: FakeDevice) -> None:
    upload = make_gzip(lines(ENTRY), name="web-server")
    answer = await device.send(f"/id/{device.uuid}/apps/instanceid/{APP}/newlogs", upload)
    assert answer.status == 201
    [record] = ctl.store.log_entries(device.uuid, app_uuid=APP)
    assert json.loads(record.meta)["appName"] == "web-server"
    assert ctl.store.log_entries(device.uuid, app_uuid="other") == []

    answer = await device.send(f"/id/{device.uuid}/apps/instanceid/not-a-uuid/newlogs", upload)
    assert answer.status == 400


@pytest.mark.parametrize(
    "payload",
    [
        b"not gzip",
        make_gzip(b"x" * 200_000),  # over this harness's 100 kB inflate limit
        make_gzip(b"not json\n"),
    ],
)
async def test_bad_log_uploads_are_400(ctl: Harness, device: FakeDevice, payload: bytes) -> None:
    answer = await device.send(f"/id/{device.uuid}/newlogs", payload)
    assert answer.status == 400
    assert ctl.store.log_count(device.uuid) == 0


async def test_reports_need_a_registered_signer(ctl: Harness, device: FakeDevice) -> None:
    stranger = ctl.device("stranger")
    answer = await stranger.send(f"/id/{device.uuid}/info", info_pb2.ZInfoMsg())
    assert answer.status == 400
    assert ctl.store.reports(device.uuid, ReportKind.INFO) == []
