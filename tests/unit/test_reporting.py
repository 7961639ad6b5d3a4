# SPDX-License-Identifier: Apache-2.0
"""agent.link.reporting: the durable info outbox, device info contents and change detection."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from agent.link.reporting import DeviceFacts, Outbox, Reporter, device_info
from agent.link.transport import ControllerClient, Response, TransportError
from agent.model.configitems import ConfigItems, parse_items
from agent.wire import envelope
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.info import info_pb2

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

    def put(self, key: str, payload: bytes) -> None:
        self.puts.append(payload)
        super().put(key, payload)


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


def reporter(
    tmp_path: Path, signer: SoftwareSigner, client: FakeClient | None = None
) -> tuple[Reporter, CountingOutbox]:
    box = CountingOutbox(tmp_path / "outbox")
    rep = Reporter(
        cast(ControllerClient, client or FakeClient()),
        device=signer,
        outbox=box,
        facts=lambda: None,
        items=ConfigItems,
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


@pytest.mark.parametrize("answer", [500, 404, TransportError("down")])
async def test_flush_keeps_undelivered(
    tmp_path: Path, device_signer: SoftwareSigner, answer: int | Exception
) -> None:
    client = FakeClient(answer)
    rep, box = reporter(tmp_path, device_signer, client)
    rep.queue_info(facts())
    await rep.flush()
    assert len(box.pending()) == 1
    assert rep.sent_info == 0
    await rep.flush()  # link back: delivered
    assert box.pending() == []
    assert rep.sent_info == 1
