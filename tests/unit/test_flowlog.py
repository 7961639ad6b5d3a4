"""agent.link.flowlog: FlowMessage as EVE sends it, the bounded on-disk queue, and the uploader
(``flowlog`` under the device's path, oldest first, refusals, outages)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from agent.link.flowlog import FlowLogQueue, FlowLogUploader, flow_message
from agent.link.transport import ControllerClient, Response, TransportError
from agent.reconcile.flows import FlowRecord, FlowReport, FlowScope
from agent.wire import envelope
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.flowlog import flowlog_pb2

DEV = "11111111-2222-3333-4444-555555555555"
APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
NI = "7a1e5f0c-3b2d-4c8e-9f10-00000000e001"


def report(*acl_ids: int) -> FlowReport:
    flows = tuple(
        FlowRecord("10.1.0.10", 40000 + i, "192.0.2.2", 80, 6, inbound=False, acl_id=i,
                   drop=i == 0, start=1_900_000_000.25, end=1_900_000_010.5, tx_bytes=900,
                   tx_packets=9, rx_bytes=500, rx_packets=2)
        for i in acl_ids
    )  # fmt: skip
    return FlowReport(FlowScope(APP, "eth0", "bn1", NI), flows)


def test_the_message_is_eves_flow_message() -> None:
    msg = flow_message(DEV, report(5, 0))
    assert msg.devId == DEV
    assert (msg.scope.uuid, msg.scope.intf, msg.scope.localIntf, msg.scope.netInstUUID) == (
        APP, "eth0", "bn1", NI,
    )  # fmt: skip
    accepted, dropped = msg.flows
    assert (accepted.flow.src, accepted.flow.srcPort, accepted.flow.dest) == (
        "10.1.0.10", 40005, "192.0.2.2",
    )  # fmt: skip
    assert (accepted.flow.destPort, accepted.flow.protocol, accepted.inbound) == (80, 6, False)
    assert accepted.aclId == 5 and accepted.action == flowlog_pb2.ActionAccept
    assert dropped.aclId == 0 and dropped.action == flowlog_pb2.ActionDrop
    assert accepted.startTime.ToNanoseconds() == 1_900_000_000_250_000_000
    assert accepted.endTime.seconds == 1_900_000_010 and accepted.endTime.nanos == 500_000_000
    assert (accepted.txBytes, accepted.txPkts, accepted.rxBytes, accepted.rxPkts) == (
        900, 9, 500, 2,
    )  # fmt: skip
    again = flowlog_pb2.FlowMessage.FromString(msg.SerializeToString())
    assert again == msg


def test_the_queue_keeps_order_and_drops_the_oldest_past_its_bounds(tmp_path: Path) -> None:
    queue = FlowLogQueue(tmp_path / "q", max_files=3, max_bytes=1000)
    queue.put([b"a", b"b"])
    queue.put([b"c", b"d", b"e"])
    assert [p.read_bytes() for p in queue.pending()] == [b"c", b"d", b"e"]
    assert queue.dropped == 2
    queue.put([b"x" * 600, b"y" * 600])  # past max_bytes: only the newest fits
    assert [p.read_bytes()[:1] for p in queue.pending()] == [b"y"] and queue.dropped == 6
    assert FlowLogQueue(tmp_path / "none").pending() == []


class FakeClient:
    """Stands in for ControllerClient: scripted answers, records what was sent."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, bytes | None]] = []

    async def request(self, action: str, body: bytes | None = None) -> Response:
        self.sent.append((action, body))
        answer = self.answers.pop(0) if self.answers else 201
        if isinstance(answer, Exception):
            raise answer
        return Response(answer, b"", "")


def uploader(client: FakeClient, tmp_path: Path, signer: SoftwareSigner) -> FlowLogUploader:
    return FlowLogUploader(cast(ControllerClient, client), device=signer, device_uuid=DEV,
                           queue=FlowLogQueue(tmp_path / "flowlog"))  # fmt: skip


async def test_uploads_oldest_first_signed_and_deletes(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    client = FakeClient()
    up = uploader(client, tmp_path, device_signer)
    await up.add([report(1), report(2)])
    await up.add([])
    assert up.wake.is_set() and len(up.queue.pending()) == 2
    assert await up.upload_pending() is True
    assert up.queue.pending() == [] and up.uploaded == 2
    trusted = {envelope.device_cert_hash(device_signer.cert): device_signer.cert}
    got = []
    for action, body in client.sent:
        assert action == "flowlog" and body is not None
        got.append(flowlog_pb2.FlowMessage.FromString(envelope.open_signed(body, trusted).payload))
    assert [m.flows[0].aclId for m in got] == [1, 2] and {m.devId for m in got} == {DEV}


@pytest.mark.parametrize("failure", [500, 429, 401, TransportError("down")])
async def test_failures_keep_the_queue(
    tmp_path: Path, device_signer: SoftwareSigner, failure: int | Exception
) -> None:
    client = FakeClient(failure)
    up = uploader(client, tmp_path, device_signer)
    await up.add([report(1), report(2)])
    assert await up.upload_pending() is False
    assert len(client.sent) == 1 and len(up.queue.pending()) == 2  # the pass stopped
    assert await up.upload_pending() is True and up.uploaded == 2


async def test_a_refused_message_is_dropped_and_the_rest_goes(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    client = FakeClient(400, 201)
    up = uploader(client, tmp_path, device_signer)
    await up.add([report(1), report(2)])
    assert await up.upload_pending() is True
    assert up.refused == 1 and up.uploaded == 1 and up.queue.pending() == []


async def test_a_disk_that_refuses_loses_only_those_reports(
    tmp_path: Path, device_signer: SoftwareSigner
) -> None:
    (tmp_path / "flowlog").write_text("a file where the directory should be")
    up = uploader(FakeClient(), tmp_path, device_signer)
    await up.add([report(1)])  # logged, not raised
    assert not up.wake.is_set()
