# SPDX-License-Identifier: Apache-2.0
"""agent.link.reporting: the durable info outbox, device and per-object info contents, change
detection, deleted objects, refusals and the reporter's liveness."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import pytest

from agent.link import objectinfo, reporting
from agent.link.objectinfo import object_info
from agent.link.reporting import DeviceFacts, Outbox, Reporter, device_info
from agent.link.transport import ControllerClient, Response, TransportError
from agent.model.configitems import ConfigItems, parse_items
from agent.util.liveness import Liveness
from agent.wire import envelope
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.info import common_pb2, info_pb2
from tests.unit.link_harness import until

DEVICE = "11111111-1111-4111-8111-111111111111"


def facts(**changes: object) -> DeviceFacts:
    base = DeviceFacts(
        uuid=DEVICE,
        version="0.1.0-test",
        boot_time=1_700_000_000.5,
        attestation_state="complete",
        attestation_error="",
        items=ConfigItems(),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def set_mtime_ns(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))


# ---------------------------------------------------------------- Outbox


def test_outbox_empty(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    assert box.pending() == []
    box.done("device", 123)  # nothing there: no error


def test_outbox_put_and_pending_oldest_first(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    box.put("device", b"dev")
    box.put("app-1", b"app")
    set_mtime_ns(box.directory / "device.info", 2_000_000_000)
    set_mtime_ns(box.directory / "app-1.info", 1_000_000_000)
    assert box.pending() == [("app-1", b"app", 1_000_000_000), ("device", b"dev", 2_000_000_000)]


def test_outbox_put_replaces_same_key(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    box.put("device", b"v1")
    box.put("device", b"v2")
    ((key, payload, _mtime),) = box.pending()
    assert (key, payload) == ("device", b"v2")
    assert sorted(p.name for p in box.directory.iterdir()) == ["device.info"]


def test_outbox_done_removes(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    box.put("device", b"v1")
    box.put("other", b"o")
    ((key, _payload, mtime),) = [e for e in box.pending() if e[0] == "device"]
    box.done(key, mtime)
    assert [e[0] for e in box.pending()] == ["other"]


def test_outbox_replaced_while_sending_is_kept(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    box.put("device", b"v1")
    path = box.directory / "device.info"
    set_mtime_ns(path, 1_000_000_000)
    ((key, payload, mtime),) = box.pending()
    assert payload == b"v1"
    box.put("device", b"v2")  # newer state queued while v1 was in flight
    set_mtime_ns(path, 1_000_000_001)
    box.done(key, mtime)
    assert box.pending() == [("device", b"v2", 1_000_000_001)]


def test_outbox_replaced_without_forced_mtime(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    box.put("device", b"v1")
    ((key, _payload, mtime),) = box.pending()
    box.put("device", b"v2")
    box.done(key, mtime)
    assert [(k, p) for k, p, _ in box.pending()] == [("device", b"v2")]


def test_outbox_files_private(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    box.put("device", b"x")
    assert (box.directory / "device.info").stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------- device_info


def test_device_info_basics() -> None:
    msg = device_info(facts())
    assert msg.ztype == info_pb2.ZiDevice
    assert msg.devId == DEVICE
    assert msg.atTimeStamp.seconds > 1_700_000_000
    d = msg.dinfo
    assert d.bootTime.seconds == 1_700_000_000 and d.bootTime.nanos == 500_000_000
    assert len(d.swList) == 1
    sw = d.swList[0]
    assert (sw.shortVersion, sw.partitionLabel, sw.activated) == ("0.1.0-test", "IMGA", True)
    assert sw.status == info_pb2.RUNNING
    assert d.state == info_pb2.ZDEVICE_STATE_ONLINE
    assert d.maintenance_mode is False
    assert d.HSMStatus == info_pb2.DISABLED
    assert d.ncpu >= 1
    assert d.HostName != ""
    assert not d.attestation_info.HasField("error")
    # Round-trips through the wire.
    back = info_pb2.ZInfoMsg()
    back.ParseFromString(msg.SerializeToString())
    assert back == msg


def test_device_info_maintenance_and_tpm() -> None:
    d = device_info(facts(maintenance=("vault-locked-up",), tpm=True)).dinfo
    assert d.state == info_pb2.ZDEVICE_STATE_MAINTENANCE_MODE
    assert d.maintenance_mode is True
    assert list(d.maintenance_mode_reasons) == [info_pb2.MAINTENANCE_MODE_REASON_VAULT_LOCKED_UP]
    assert d.HSMStatus == info_pb2.ENABLED
    assert d.HSMInfo == "TPM 2.0"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("unspecified", info_pb2.ATTESTATION_STATE_UNSPECIFIED),
        ("nonce-wait", info_pb2.ATTESTATION_STATE_NONCE_WAIT),
        ("tpm-quote-wait", info_pb2.ATTESTATION_STATE_TPM_QUOTE_WAIT),
        ("attest-wait", info_pb2.ATTESTATION_STATE_ATTEST_WAIT),
        ("attest-escrow-wait", info_pb2.ATTESTATION_STATE_ATTEST_ESCROW_WAIT),
        ("restart-wait", info_pb2.ATTESTATION_STATE_RESTART_WAIT),
        ("complete", info_pb2.ATTESTATION_STATE_COMPLETE),
        ("something-new", info_pb2.ATTESTATION_STATE_UNSPECIFIED),
    ],
)
def test_attestation_state_mapping(state: str, expected: int) -> None:
    info = device_info(facts(attestation_state=state)).dinfo.attestation_info
    assert info.state == expected


def test_attestation_states_cover_the_agent_enum() -> None:
    from agent.link.attestation import AttestState

    for state in AttestState:
        got = device_info(facts(attestation_state=state.value)).dinfo.attestation_info.state
        name = "ATTESTATION_STATE_" + state.name
        assert got == info_pb2.AttestationState.Value(name), state


def test_attestation_error() -> None:
    info = device_info(
        facts(attestation_state="restart-wait", attestation_error="nonce refused")
    ).dinfo.attestation_info
    assert info.error.description == "nonce refused"


def test_config_item_status() -> None:
    items = parse_items(
        [
            ("timer.config.interval", "30"),
            ("maintenance.mode", "on"),
            ("timer.metric.interval", "1"),  # refused
            ("agent.zedagent.debug.loglevel", "debug"),  # unknown, accepted
            ("timer.bogus", "5"),  # unknown, an error
        ]
    )
    errors = {e.key: e.message for e in items.errors}
    status = device_info(facts(items=items, item_errors=errors)).dinfo.configItemStatus
    known = {k: (v.value, v.error) for k, v in status.configItems.items()}
    unknown = {k: (v.value, v.error) for k, v in status.unknownConfigItems.items()}
    assert known == {
        "timer.config.interval": ("30", ""),
        "maintenance.mode": ("true", ""),
        "timer.metric.interval": ("", errors["timer.metric.interval"]),
    }
    assert "outside [5, 3600]" in known["timer.metric.interval"][1]
    assert unknown == {
        "agent.zedagent.debug.loglevel": ("debug", ""),
        "timer.bogus": ("5", errors["timer.bogus"]),
    }


def test_config_item_status_empty_by_default() -> None:
    status = device_info(facts()).dinfo.configItemStatus
    assert len(status.configItems) == 0 and len(status.unknownConfigItems) == 0


# ---------------------------------------------------------------- Reporter


class CountingOutbox(Outbox):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.puts: list[bytes] = []

    def put(self, key: str, payload: bytes) -> bool:
        self.puts.append(payload)
        return super().put(key, payload)


class FakeClient:
    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, bytes | None]] = []

    async def request(self, action: str, body: bytes | None = None) -> Response:
        self.sent.append((action, body))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return Response(answer, b"", "")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reporter(
    tmp_path: Path,
    signer: SoftwareSigner,
    client: FakeClient | None = None,
    clock: Clock | None = None,
) -> tuple[Reporter, CountingOutbox]:
    box = CountingOutbox(tmp_path / "outbox")
    rep = Reporter(
        cast(ControllerClient, client or FakeClient()),
        device=signer,
        outbox=box,
        facts=lambda: None,
        items=ConfigItems,
        clock=clock or Clock(),
    )
    return rep, box


def test_queue_info_only_on_change(tmp_path: Path, device_signer: SoftwareSigner) -> None:
    rep, box = reporter(tmp_path, device_signer)
    rep.queue_info(facts())
    assert len(box.puts) == 1
    queued = info_pb2.ZInfoMsg()
    queued.ParseFromString(box.pending()[0][1])
    assert queued.devId == DEVICE and queued.ztype == info_pb2.ZiDevice

    rep.queue_info(facts())  # same facts (only the timestamp differs)
    rep.queue_info(facts(boot_time=1_800_000_000.0))  # boot time is not a change either
    assert len(box.puts) == 1

    rep.queue_info(facts(attestation_state="restart-wait"))
    assert len(box.puts) == 2
    rep.queue_info(facts(attestation_state="restart-wait"))
    assert len(box.puts) == 2

    rep.queue_info(facts(attestation_state="restart-wait"), force=True)
    assert len(box.puts) == 3
    rep.queue_info(facts(attestation_state="restart-wait", maintenance=("user-requested",)))
    assert len(box.puts) == 4
    assert len(box.pending()) == 1  # one key, latest wins


async def test_flush_delivers_and_empties(tmp_path: Path, device_signer: SoftwareSigner) -> None:
    client = FakeClient(200)
    rep, box = reporter(tmp_path, device_signer, client)
    rep.queue_info(facts())
    await rep.flush()
    assert box.pending() == []
    assert rep.sent_info == 1
    ((action, body),) = client.sent
    assert action == "info" and body is not None
    trusted = {envelope.device_cert_hash(device_signer.cert): device_signer.cert}
    assert envelope.open_signed(body, trusted).payload == box.puts[0]


@pytest.mark.parametrize("answer", [500, 503, 429, 403, 401, TransportError("down")])
async def test_flush_keeps_undelivered(
    tmp_path: Path, device_signer: SoftwareSigner, answer: int | Exception
) -> None:
    client = FakeClient(answer)
    clock = Clock()
    rep, box = reporter(tmp_path, device_signer, client, clock)
    rep.queue_info(facts())
    await rep.flush()
    assert len(box.pending()) == 1
    assert rep.sent_info == 0
    if not isinstance(answer, Exception):
        # An answer worth retrying: this message waits for its own retry time (1 min first).
        await rep.flush()
        assert len(client.sent) == 1
        clock.now += reporting.RETRY_MIN
    await rep.flush()  # link back: delivered
    assert box.pending() == []
    assert rep.sent_info == 1


async def test_flush_moves_aside_what_the_controller_refuses_for_good(
    tmp_path: Path, device_signer: SoftwareSigner, caplog: pytest.LogCaptureFixture
) -> None:
    # 400 and 404 would refuse the same bytes again (EVE drops them too): moved to rejected/
    # at once, with an error line each; the rest goes on.
    client = FakeClient(400, 404, 200)
    rep, box = reporter(tmp_path, device_signer, client)
    box.put("app:a", b"a")
    box.put("app:b", b"b")
    box.put("app:c", b"c")
    for n, name in enumerate(("app:a.info", "app:b.info", "app:c.info")):
        set_mtime_ns(box.directory / name, 1_000_000_000 + n)
    await rep.flush()
    assert box.pending() == []
    assert (rep.refused_info, rep.sent_info) == (2, 1)
    assert len(client.sent) == 3
    kept = sorted(p.name.split(".")[0] for p in box.rejected_dir.iterdir())
    assert kept == ["app:a", "app:b"]
    assert "refused info app:a for good (HTTP 400)" in caplog.text
    assert "refused info app:b for good (HTTP 404)" in caplog.text


async def test_flush_budget_wakes_the_next_round(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    rep, box = reporter(tmp_path, device_signer, FakeClient())
    box.put("device", b"d")
    box.put("app:a", b"a")
    await rep.flush(budget=-1.0)  # out of time before the first delivery
    assert len(box.pending()) == 2 and rep.wake.is_set()


# ---------------------------------------------------------------- per-object info

APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
NI = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
VOLUME = "6ba7b812-9dad-11d1-80b4-00c04fd430c8"
TREE = "6ba7b814-9dad-11d1-80b4-00c04fd430c8"


@dataclass(frozen=True)
class Owner:
    """What NodeReconciler.owners() hands the reporter (agent.reconcile.node.OwnerReport)."""

    kind: str
    id: str
    name: str = "web"
    state: str = "ok"
    errors: tuple[tuple[str, float], ...] = ()
    pending: tuple[str, ...] = ()


def queued(box: Outbox, key: str) -> info_pb2.ZInfoMsg:
    [payload] = [p for k, p, _ in box.pending() if k == key]
    msg = info_pb2.ZInfoMsg()
    msg.ParseFromString(payload)
    return msg


def test_owner_error_becomes_app_info_with_app_err(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    rep, box = reporter(tmp_path, device_signer)
    failed = Owner(
        "app", APP, "web", "error", (("app/web: pull failed: no such image", 1_800_000_000.25),)
    )
    assert rep.queue_objects(DEVICE, [failed]) == 1
    msg = queued(box, f"app:{APP}")
    assert msg.ztype == info_pb2.ZiApp and msg.devId == DEVICE
    assert msg.atTimeStamp.seconds > 1_700_000_000
    app = msg.ainfo
    assert (app.AppID, app.AppName, app.state) == (APP, "web", info_pb2.ERROR)
    [err] = app.appErr
    assert err.description == "app/web: pull failed: no such image"
    assert (err.timestamp.seconds, err.timestamp.nanos) == (1_800_000_000, 250_000_000)
    assert err.severity == common_pb2.SEVERITY_ERROR


def test_unchanged_object_is_not_queued_again_changed_is(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    rep, box = reporter(tmp_path, device_signer)
    failed = Owner("app", APP, "web", "error", (("app/web: pull failed", 1_800_000_000.0),))
    rep.queue_objects(DEVICE, [failed])
    assert rep.queue_objects(DEVICE, [failed]) == 0
    # A retry that failed the same way only moves the error's time: not a change.
    retried = replace(failed, errors=(("app/web: pull failed", 1_800_000_060.0),))
    assert rep.queue_objects(DEVICE, [retried]) == 0
    assert len(box.puts) == 1

    other = replace(failed, errors=(("app/web: disk full", 1_800_000_120.0),))
    assert rep.queue_objects(DEVICE, [other]) == 1
    [err] = queued(box, f"app:{APP}").ainfo.appErr
    assert (err.description, err.timestamp.seconds) == ("app/web: disk full", 1_800_000_120)

    fixed = replace(other, state="ok", errors=())
    assert rep.queue_objects(DEVICE, [fixed]) == 1
    app = queued(box, f"app:{APP}").ainfo
    assert app.state == info_pb2.RUNNING and len(app.appErr) == 0
    assert rep.queue_objects(DEVICE, [fixed], force=True) == 1  # the periodic full publish
    assert len(box.puts) == 4


def test_removed_owner_is_reported_deleted_once(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    rep, box = reporter(tmp_path, device_signer)
    rep.queue_objects(DEVICE, [Owner("app", APP), Owner("volume", VOLUME, "disk")])
    assert rep.queue_objects(DEVICE, [Owner("volume", VOLUME, "disk")]) == 1
    gone = queued(box, f"app:{APP}")
    gone.ClearField("atTimeStamp")
    # What EVE sends for a deleted app: the ID and nothing else.
    assert gone == info_pb2.ZInfoMsg(
        ztype=info_pb2.ZiApp, devId=DEVICE, ainfo=info_pb2.ZInfoApp(AppID=APP)
    )
    assert rep.queue_objects(DEVICE, [Owner("volume", VOLUME, "disk")]) == 0
    assert rep.queue_objects(DEVICE, []) == 1
    assert queued(box, f"volume:{VOLUME}").vinfo == info_pb2.ZInfoVolume(uuid=VOLUME)
    assert rep.queue_objects(DEVICE, [], force=True) == 0  # forgotten: not deleted again
    assert len(box.puts) == 4
    # Back again: reported as new.
    assert rep.queue_objects(DEVICE, [Owner("app", APP)]) == 1
    assert queued(box, f"app:{APP}").ainfo.state == info_pb2.RUNNING


async def test_outbox_keeps_the_latest_per_object_while_offline(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    client = FakeClient(TransportError("down"))
    rep, box = reporter(tmp_path, device_signer, client)
    rep.queue_info(facts())
    for n in range(3):
        errors = (((f"app/web: attempt {n} failed", 1_800_000_000.0 + n),),)[0]
        rep.queue_objects(
            DEVICE,
            [Owner("app", APP, state="error", errors=errors), Owner("networkinstance", NI, "lan")],
        )
    rep.queue_objects(DEVICE, [Owner("app", APP, state="error", errors=errors)])  # NI deleted
    await rep.flush()  # offline
    assert sorted(k for k, _, _ in box.pending()) == [
        "app:" + APP,
        "device",
        "networkinstance:" + NI,
    ]
    assert len(client.sent) == 1 and rep.sent_info == 0

    await rep.flush()  # the link is back: each object's latest, once
    assert box.pending() == [] and rep.sent_info == 3
    trusted = {envelope.device_cert_hash(device_signer.cert): device_signer.cert}
    delivered = []
    for _action, body in client.sent[1:]:
        assert body is not None
        msg = info_pb2.ZInfoMsg()
        msg.ParseFromString(envelope.open_signed(body, trusted).payload)
        delivered.append(msg)
    by_type = {m.ztype: m for m in delivered}
    assert [e.description for e in by_type[info_pb2.ZiApp].ainfo.appErr] == [
        "app/web: attempt 2 failed"
    ]
    assert by_type[info_pb2.ZiNetworkInstance].niinfo == info_pb2.ZInfoNetworkInstance(networkID=NI)


@pytest.mark.parametrize(
    ("state", "app", "volume", "tree", "ni"),
    [
        ("ok", "RUNNING", "CREATED_VOLUME", "DELIVERED", "ZNETINST_STATE_ONLINE"),
        ("in-progress", "BOOTING", "CREATING_VOLUME", "DOWNLOAD_STARTED", "ZNETINST_STATE_INIT"),
        ("pending", "PENDING", "INITIAL", "INITIAL", "ZNETINST_STATE_INIT"),
        ("error", "ERROR", "ERROR", "ERROR", "ZNETINST_STATE_ERROR"),
    ],
)
def test_state_mapping(state: str, app: str, volume: str, tree: str, ni: str) -> None:
    def build(kind: str, obj_id: str) -> info_pb2.ZInfoMsg:
        return object_info(DEVICE, kind, obj_id, state, name="x")

    assert info_pb2.ZSwState.Name(build("app", APP).ainfo.state) == app
    assert info_pb2.ZSwState.Name(build("volume", VOLUME).vinfo.state) == volume
    assert info_pb2.ZSwState.Name(build("contenttree", TREE).cinfo.state) == tree
    niinfo = build("networkinstance", NI).niinfo
    assert info_pb2.ZNetworkInstanceState.Name(niinfo.state) == ni
    assert niinfo.activated is (state == "ok")


def test_each_kind_carries_id_name_and_errors(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    rep, box = reporter(tmp_path, device_signer)
    two = (("volume/v: mkfs failed", 1_800_000_000.0), ("volume/v: retry gave up", 1_800_000_009.0))
    rep.queue_objects(
        DEVICE,
        [
            Owner("networkinstance", NI, "lan", "error", (("bridge/lan: EBUSY", 1_800_000_000.0),)),
            Owner("volume", VOLUME, "disk", "error", two),
            Owner(
                "contenttree",
                TREE,
                "debian",
                "pending",
                pending=("blob/x: waiting for condition/vault not ready: locked",),
            ),
        ],
    )
    ni = queued(box, f"networkinstance:{NI}")
    assert ni.ztype == info_pb2.ZiNetworkInstance
    assert (ni.niinfo.networkID, ni.niinfo.displayname) == (NI, "lan")
    assert [e.description for e in ni.niinfo.networkErr] == ["bridge/lan: EBUSY"]

    vol = queued(box, f"volume:{VOLUME}")
    assert vol.ztype == info_pb2.ZiVolume
    assert (vol.vinfo.uuid, vol.vinfo.displayName) == (VOLUME, "disk")
    # One error field: the failures joined, the latest time.
    assert vol.vinfo.volumeErr.description == "volume/v: mkfs failed\nvolume/v: retry gave up"
    assert vol.vinfo.volumeErr.timestamp.seconds == 1_800_000_009

    tree = queued(box, f"contenttree:{TREE}")
    assert tree.ztype == info_pb2.ZiContentTree
    assert (tree.cinfo.uuid, tree.cinfo.displayName, tree.cinfo.state) == (
        TREE,
        "debian",
        info_pb2.INITIAL,
    )
    # Why it waits, as a notice (EVE reports retry conditions with a lower severity).
    assert tree.cinfo.err.description == "blob/x: waiting for condition/vault not ready: locked"
    assert tree.cinfo.err.severity == common_pb2.SEVERITY_NOTICE
    assert tree.cinfo.err.timestamp.seconds > 1_700_000_000


def test_errors_without_a_time_keep_when_first_seen(
    tmp_path: Path, device_signer: SoftwareSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    rep, box = reporter(tmp_path, device_signer)
    invalid = Owner("app", APP, "web", "error", (("app 6ba7: refers to missing volume", 0.0),))
    monkeypatch.setattr(reporting.time, "time", lambda: 1_800_000_000.0)
    rep.queue_objects(DEVICE, [invalid])
    monkeypatch.setattr(reporting.time, "time", lambda: 1_800_000_600.0)
    rep.queue_objects(DEVICE, [invalid], force=True)
    [err] = queued(box, f"app:{APP}").ainfo.appErr
    assert err.timestamp.seconds == 1_800_000_000


def test_only_objects_with_an_info_message_are_reported(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    rep, box = reporter(tmp_path, device_signer)
    owners = [
        Owner("device", "", "", "error", (("configitem x: bad", 0.0),)),  # in configItemStatus
        Owner("datastore", APP, "ds"),
        Owner("app", "../../etc/passwd", "evil", "error", (("not a UUID", 0.0),)),
        Owner("app", APP.upper()),
        Owner("app", APP, "duplicate"),
    ]
    assert rep.queue_objects(DEVICE, owners) == 1
    assert [k for k, _, _ in box.pending()] == [f"app:{APP}"]
    assert queued(box, f"app:{APP}").ainfo.AppName == "web"


def test_error_lists_are_bounded() -> None:
    many = [
        objectinfo.ReportedError("x" * 10_000, 1_800_000_000.0 + n, common_pb2.SEVERITY_ERROR)
        for n in range(40)
    ]
    app = object_info(DEVICE, "app", APP, "error", errors=many).ainfo
    assert len(app.appErr) == objectinfo.MAX_ERRORS
    assert all(len(e.description) <= objectinfo.MAX_ERROR_CHARS for e in app.appErr)
    assert app.appErr[-1].description == f"... and {40 - objectinfo.MAX_ERRORS + 1} more"
    vol = object_info(DEVICE, "volume", VOLUME, "error", errors=many).vinfo
    assert len(vol.volumeErr.description) == objectinfo.MAX_ERROR_CHARS


async def test_run_reports_objects_and_marks_each_round_as_an_activity(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    clock = [1000.0]
    liveness = Liveness(clock=lambda: clock[0])
    seen_during: list[list[str]] = []

    class HangingClient(FakeClient):
        async def request(self, action: str, body: bytes | None = None) -> Response:
            clock[0] += 3 * 120 + 61  # this round has now run past its limit
            seen_during.append(liveness.problems())
            return await super().request(action, body)

    client = HangingClient()
    failed = Owner("app", APP, "web", "error", (("app/web: boom", 1_800_000_000.0),))
    rep = Reporter(
        cast(ControllerClient, client),
        device=device_signer,
        outbox=Outbox(tmp_path / "outbox"),
        facts=lambda: facts(),
        items=ConfigItems,
        owners=lambda: [failed],
        liveness=liveness,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(rep.run(stop))
    await until(lambda: rep.sent_info >= 2 and rep.sent_metrics >= 1, what="first round")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [a for a, _ in client.sent] == ["info", "info", "metrics"]
    assert seen_during[0] and seen_during[0][0].startswith("reporter running for")
    assert liveness.problems() == []  # the round ended: no hang left behind
