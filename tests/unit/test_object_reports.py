"""Per-object info end to end: the controller keeps the last state of each app, network instance,
volume and content tree a device reports (hostile input bounded), forgets deleted ones, and
``eve-controller device objects`` shows them; the agent's reporter feeds it through the real
controller app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.link.checkpoint import CheckpointStore
from agent.link.controllercerts import ControllerCertStore
from agent.link.objectinfo import object_info
from agent.link.reporting import DeviceFacts, Outbox, Reporter
from agent.model.configitems import ConfigItems
from agent.reconcile.node import OwnerReport as Owner
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.info import common_pb2, info_pb2
from controller.api import ApiSettings
from controller.cli import main
from controller.records import ObjectKind, ReportKind
from tests.unit.link_harness import live_controller, onboard_device
from tests.unit.test_controller_harness import FakeDevice, Harness, controller_harness

APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
NI = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
VOLUME = "6ba7b812-9dad-11d1-80b4-00c04fd430c8"
TREE = "6ba7b814-9dad-11d1-80b4-00c04fd430c8"


@pytest.fixture
async def ctl(tmp_path: Path) -> AsyncIterator[Harness]:
    async with controller_harness(tmp_path, settings=ApiSettings(max_objects=3)) as h:
        yield h


@pytest.fixture
async def device(ctl: Harness) -> FakeDevice:
    return await ctl.onboarded()


def app_info(device_uuid: str, **fields: object) -> info_pb2.ZInfoMsg:
    msg = info_pb2.ZInfoMsg(ztype=info_pb2.ZiApp, devId=device_uuid)
    msg.atTimeStamp.seconds = 1_800_000_000
    msg.ainfo.CopyFrom(info_pb2.ZInfoApp(**fields))  # type: ignore[arg-type]
    return msg


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------- controller


async def test_app_state_and_errors_are_kept_and_replaced(ctl: Harness, device: FakeDevice) -> None:
    failed = app_info(device.uuid, AppID=APP.upper(), AppName="web", state=info_pb2.ERROR)
    err = failed.ainfo.appErr.add(description="pull failed", severity=common_pb2.SEVERITY_ERROR)
    err.timestamp.seconds = 1_799_999_990
    assert (await device.send(f"/id/{device.uuid}/info", failed)).status == 201
    [status] = ctl.store.object_statuses(device.uuid)
    assert (status.kind, status.object_id, status.name, status.state) == (
        ObjectKind.APP,
        APP,
        "web",
        "ERROR",
    )
    [stored_err] = status.errors
    assert (stored_err.description, stored_err.time, stored_err.severity) == (
        "pull failed",
        1_799_999_990.0,
        "ERROR",
    )
    assert status.reported_at == 1_800_000_000.0 and status.received_at == ctl.clock.now
    # The message itself is kept too, as every info message is.
    assert len(ctl.store.reports(device.uuid, ReportKind.INFO)) == 1

    running = app_info(device.uuid, AppID=APP, AppName="web", state=info_pb2.RUNNING)
    assert (await device.send(f"/id/{device.uuid}/info", running)).status == 201
    [status] = ctl.store.object_statuses(device.uuid)
    assert (status.state, status.errors) == ("RUNNING", ())


async def test_every_kind_and_deleted_objects(ctl: Harness, device: FakeDevice) -> None:
    for kind, obj_id in (
        ("networkinstance", NI),
        ("volume", VOLUME),
        ("contenttree", TREE),
    ):
        msg = object_info(device.uuid, kind, obj_id, "error", name=kind)
        assert (await device.send(f"/id/{device.uuid}/info", msg)).status == 201
    states = {s.kind: s.state for s in ctl.store.object_statuses(device.uuid)}
    assert states == {
        ObjectKind.NETWORK_INSTANCE: "ERROR",
        ObjectKind.VOLUME: "ERROR",
        ObjectKind.CONTENT_TREE: "ERROR",
    }
    # What EVE sends for a deleted object: only its ID.
    for kind, obj_id in (("networkinstance", NI), ("volume", VOLUME)):
        gone = object_info(device.uuid, kind, obj_id, None)
        assert (await device.send(f"/id/{device.uuid}/info", gone)).status == 201
    assert [s.kind for s in ctl.store.object_statuses(device.uuid)] == [ObjectKind.CONTENT_TREE]
    # Deleting what is not known is no error; device info touches no object.
    gone = object_info(device.uuid, "app", APP, None)
    assert (await device.send(f"/id/{device.uuid}/info", gone)).status == 201
    dinfo = info_pb2.ZInfoMsg(ztype=info_pb2.ZiDevice, devId=device.uuid)
    dinfo.dinfo.ncpu = 2
    assert (await device.send(f"/id/{device.uuid}/info", dinfo)).status == 201
    assert len(ctl.store.object_statuses(device.uuid)) == 1


@pytest.mark.parametrize(
    "message",
    [
        # Not a UUID.
        info_pb2.ZInfoMsg(ztype=info_pb2.ZiApp, ainfo=info_pb2.ZInfoApp(AppID="../etc")),
        info_pb2.ZInfoMsg(ztype=info_pb2.ZiVolume, vinfo=info_pb2.ZInfoVolume(uuid="")),
        # ztype and content disagree.
        info_pb2.ZInfoMsg(ztype=info_pb2.ZiVolume, ainfo=info_pb2.ZInfoApp(AppID=APP)),
        info_pb2.ZInfoMsg(ztype=info_pb2.ZiDevice, cinfo=info_pb2.ZInfoContentTree(uuid=TREE)),
    ],
)
async def test_impossible_object_messages_are_400(
    ctl: Harness, device: FakeDevice, message: info_pb2.ZInfoMsg
) -> None:
    assert (await device.send(f"/id/{device.uuid}/info", message)).status == 400
    assert ctl.store.object_statuses(device.uuid) == []
    assert ctl.store.reports(device.uuid, ReportKind.INFO) == []


async def test_hostile_sizes_are_bounded(ctl: Harness, device: FakeDevice) -> None:
    msg = app_info(device.uuid, AppID=APP, AppName="n" * 100_000, state=999)
    # Under the controller's 1 MiB cap on a report (larger ones are refused whole, below).
    for _ in range(30):
        err = msg.ainfo.appErr.add(description="\x1b[2J" + "e" * 25_000, severity=77)  # type: ignore[arg-type]
        err.timestamp.seconds = 1_800_000_000
    msg.ainfo.appErr[1].timestamp.seconds = -86_400  # 1969: valid protobuf, no usable time
    assert (await device.send(f"/id/{device.uuid}/info", msg)).status == 201
    [status] = ctl.store.object_statuses(device.uuid)
    assert len(status.name) == 256 and status.state == "UNKNOWN(999)"
    assert len(status.errors) == 17  # 16 kept, one saying how many were not
    assert status.errors[-1].description == "14 more not stored"
    assert all(len(e.description) <= 2048 for e in status.errors)
    assert status.errors[0].severity == "UNKNOWN(77)"
    assert status.errors[0].time == 1_800_000_000.0 and status.errors[1].time is None
    # A time protobuf cannot express at all (past year 9999): the message is refused.
    msg.ainfo.appErr[1].timestamp.seconds = 253_402_300_800
    assert (await device.send(f"/id/{device.uuid}/info", msg)).status == 400
    # So is a report over the cap, before anything is decoded.
    msg.ainfo.appErr[1].timestamp.seconds = 0
    for _ in range(10):
        msg.ainfo.appErr.add(description="e" * 25_000)
    assert (await device.send(f"/id/{device.uuid}/info", msg)).status == 400


async def test_object_count_is_capped(ctl: Harness, device: FakeDevice) -> None:
    ids = [f"6ba7b81{n}-9dad-11d1-80b4-00c04fd430c8" for n in range(5)]
    answers = []
    for obj_id in ids:
        msg = app_info(device.uuid, AppID=obj_id, AppName="a", state=info_pb2.RUNNING)
        answers.append((await device.send(f"/id/{device.uuid}/info", msg)).status)
    assert answers == [201, 201, 201, 400, 400]  # max_objects=3
    # Known objects still update, and a deleted one makes room.
    msg = app_info(device.uuid, AppID=ids[0], AppName="a", state=info_pb2.HALTED)
    assert (await device.send(f"/id/{device.uuid}/info", msg)).status == 201
    gone = object_info(device.uuid, "app", ids[1], None)
    assert (await device.send(f"/id/{device.uuid}/info", gone)).status == 201
    msg = app_info(device.uuid, AppID=ids[3], AppName="a", state=info_pb2.RUNNING)
    assert (await device.send(f"/id/{device.uuid}/info", msg)).status == 201
    assert [s.object_id for s in ctl.store.object_statuses(device.uuid)] == [ids[0], ids[2], ids[3]]


async def test_removing_the_device_forgets_its_objects(ctl: Harness, device: FakeDevice) -> None:
    msg = app_info(device.uuid, AppID=APP, AppName="a", state=info_pb2.RUNNING)
    assert (await device.send(f"/id/{device.uuid}/info", msg)).status == 201
    ctl.store.remove_device(device.uuid)
    assert ctl.store.object_statuses(device.uuid) == []


async def test_cli_lists_objects_with_errors(
    ctl: Harness, device: FakeDevice, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = app_info(device.uuid, AppID=APP, AppName="web\x1b[31m", state=info_pb2.ERROR)
    err = failed.ainfo.appErr.add(description="pull failed\nno such image", severity=3)
    err.timestamp.seconds = 1_800_000_000
    await device.send(f"/id/{device.uuid}/info", failed)
    await device.send(
        f"/id/{device.uuid}/info", object_info(device.uuid, "networkinstance", NI, "ok", name="lan")
    )
    s = str(ctl.state.root)
    out = cli(capsys, "device", "objects", "--state", s, device.uuid[:8])
    lines = out.splitlines()
    assert lines[0].split() == ["KIND", "UUID", "NAME", "STATE", "ERRORS", "REPORTED"]
    assert lines[1].split()[:5] == ["app", APP, "web\\x1b[31m", "ERROR", "1"]
    assert lines[2].split()[:5] == ["networkinstance", NI, "lan", "ONLINE", "0"]
    assert f"app web\\x1b[31m ({APP}):" in lines
    assert "  ERROR 2027-01-15T08:00:00.000Z  pull failed" in lines
    assert "      no such image" in lines
    assert "\x1b" not in out  # nothing a device sends drives the operator's terminal

    shown = json.loads(cli(capsys, "device", "objects", "--state", s, device.uuid, "--json"))
    assert [(o["kind"], o["state"]) for o in shown] == [
        ("app", "ERROR"),
        ("networkinstance", "ONLINE"),
    ]
    assert shown[0]["errors"] == [
        {
            "description": "pull failed\nno such image",
            "time": "2027-01-15T08:00:00.000Z",
            "severity": "ERROR",
        }
    ]
    only = json.loads(
        cli(capsys, "device", "objects", "--state", s, device.uuid, "--json", "--kind", "app")
    )
    assert [o["uuid"] for o in only] == [APP]

    detail = json.loads(cli(capsys, "device", "show", "--state", s, device.uuid, "--json"))
    assert detail["objects"] == {
        "app": 1,
        "networkinstance": 1,
        "volume": 0,
        "contenttree": 0,
        "with_errors": 1,
    }
    text = cli(capsys, "device", "show", "--state", s, device.uuid)
    assert "app 1, networkinstance 1; 1 with errors" in text


# ---------------------------------------------------------------- agent to controller


async def test_agent_reports_an_app_error_the_operator_sees(
    tmp_path: Path, device_signer: SoftwareSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    async with live_controller(tmp_path) as ctl:
        client = ctl.client()
        try:
            certs = ControllerCertStore(
                CheckpointStore(tmp_path / "checkpoint", "controllercerts"), ctl.pki.root_pem
            )
            device_uuid = await onboard_device(client, device_signer, certs, ctl.pki.onboard)
            owners = [
                Owner(
                    "app", APP, "web", "error", (("app/web: pull failed: 404", 1_800_000_000.0),)
                ),
                Owner("volume", VOLUME, "disk", "ok"),
            ]
            device_facts = DeviceFacts(
                uuid=device_uuid,
                version="1.0",
                boot_time=1_700_000_000.0,
                attestation_state="complete",
                attestation_error="",
                items=ConfigItems(),
            )
            reporter = Reporter(
                client,
                device=device_signer,
                outbox=Outbox(tmp_path / "outbox"),
                facts=lambda: device_facts,
                items=ConfigItems,
                owners=lambda: owners,
            )
            await reporter.queue_objects_async(device_uuid)
            await reporter.flush()
            assert reporter.sent_info == 2
            [app, volume] = ctl.store.object_statuses(device_uuid)
            assert (app.name, app.state) == ("web", "ERROR")
            assert [e.description for e in app.errors] == ["app/web: pull failed: 404"]
            assert (volume.name, volume.state) == ("disk", "CREATED_VOLUME")

            out = cli(capsys, "device", "objects", "--state", str(ctl.pki.state.root), device_uuid)
            assert "app/web: pull failed: 404" in out
            assert any(
                line.split()[:4] == ["app", APP, "web", "ERROR"] for line in out.splitlines()
            )

            # Fixed, and the volume deleted: the controller follows.
            owners = [Owner("app", APP, "web", "ok")]
            await reporter.queue_objects_async(device_uuid)
            await reporter.flush()
            [app] = ctl.store.object_statuses(device_uuid)
            assert (app.state, app.errors) == ("RUNNING", ())
            assert ctl.count("info", 201) == 4
        finally:
            await client.close()
