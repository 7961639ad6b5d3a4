"""Flow logs to the controller: EVE's ``FlowMessage`` posted to
``/api/v2/edgedevice/id/<device>/flowlog`` (the transport adds ``id/<device>/``, as for every
v2 report; EVE's ``publishFlowMessage`` does the same through ``URLPathString``).

The collector (:mod:`agent.reconcile.flows`, wired by the daemon) hands over reports, each one
app interface's records (at most 125, as EVE packs them); :meth:`FlowLogUploader.add` turns
each into a ``FlowMessage`` (``devId``; ``scope``: app UUID, interface name, the instance's
bridge as ``localIntf``, the instance's UUID; one ``FlowRecord`` per flow with its ``IpFlow``,
``inbound``, ``aclId``, ``action``, start and end times and counters) and writes it to an
on-disk queue, one file per message, from a worker thread.  The uploader posts the files oldest
first, sealed as every device message is, and deletes each once the controller answered 2xx:
reports survive controller outages and agent restarts.  EVE keeps at most 100 messages in
memory and retries one at a time; here the queue is bounded on disk (:data:`MAX_FILES`,
:data:`MAX_BYTES`), dropping the oldest past a bound (counted in
:attr:`FlowLogQueue.dropped`, logged).  A message the controller refuses for good (a 4xx other
than 401, 403, 407, 408, 429) is dropped, as the info outbox does, so it cannot hold up the
rest; any other failure keeps it and backs off (5 s doubling to 300 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from agent.link.offload import seal_as_device_async
from agent.link.transport import ControllerClient, TransportError
from agent.util.atomicfile import write_atomic
from agent.util.liveness import Liveness
from agent.util.storagehealth import StorageHealth
from agent.util.timing import jittered, wait_or_stop
from agent.wire.envelope import Signer
from agent.wire.pb.flowlog import flowlog_pb2

log = logging.getLogger(__name__)

MAX_FILES = 1000
MAX_BYTES = 16 * 1024 * 1024
_RETRIABLE = frozenset({401, 403, 407, 408, 429})


class FlowScopeLike(Protocol):
    @property
    def app_id(self) -> str: ...

    @property
    def ifname(self) -> str: ...

    @property
    def bridge(self) -> str: ...

    @property
    def ni_id(self) -> str: ...


class FlowRecordLike(Protocol):
    """One flow: ``src`` is the app's end; times are wall clock seconds."""

    @property
    def src(self) -> str: ...

    @property
    def sport(self) -> int: ...

    @property
    def dst(self) -> str: ...

    @property
    def dport(self) -> int: ...

    @property
    def proto(self) -> int: ...

    @property
    def inbound(self) -> bool: ...

    @property
    def acl_id(self) -> int: ...

    @property
    def drop(self) -> bool: ...

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def tx_bytes(self) -> int: ...

    @property
    def tx_packets(self) -> int: ...

    @property
    def rx_bytes(self) -> int: ...

    @property
    def rx_packets(self) -> int: ...


class DnsRecordLike(Protocol):
    """A name the app resolved, the addresses it was given, when (wall clock seconds)."""

    @property
    def name(self) -> str: ...

    @property
    def addrs(self) -> Sequence[str]: ...

    @property
    def time(self) -> float: ...


class FlowReportLike(Protocol):
    @property
    def scope(self) -> FlowScopeLike: ...

    @property
    def flows(self) -> Sequence[FlowRecordLike]: ...

    @property
    def dns(self) -> Sequence[DnsRecordLike]: ...


def _stamp(when: float) -> Timestamp:
    """Wall clock seconds as a Timestamp, to the microsecond (a float holds no more)."""
    out = Timestamp()
    if when > 0:
        seconds = int(when)
        out.seconds, out.nanos = seconds, min(999_999_000, round((when - seconds) * 1e6) * 1000)
    return out


def flow_message(device_uuid: str, report: FlowReportLike) -> flowlog_pb2.FlowMessage:
    """The ``FlowMessage`` of one report."""
    scope = report.scope
    msg = flowlog_pb2.FlowMessage(devId=device_uuid)
    msg.scope.uuid = scope.app_id
    msg.scope.intf = scope.ifname
    msg.scope.localIntf = scope.bridge
    msg.scope.netInstUUID = scope.ni_id
    for rec in report.flows:
        out = msg.flows.add(inbound=rec.inbound, aclId=rec.acl_id)
        out.flow.src, out.flow.srcPort = rec.src, rec.sport
        out.flow.dest, out.flow.destPort = rec.dst, rec.dport
        out.flow.protocol = rec.proto
        out.action = flowlog_pb2.ActionDrop if rec.drop else flowlog_pb2.ActionAccept
        out.startTime.CopyFrom(_stamp(rec.start))
        out.endTime.CopyFrom(_stamp(rec.end))
        out.txBytes, out.txPkts = rec.tx_bytes, rec.tx_packets
        out.rxBytes, out.rxPkts = rec.rx_bytes, rec.rx_packets
    for answer in report.dns:
        req = msg.dnsReqs.add(hostName=answer.name, addrs=list(answer.addrs))
        req.requestTime.CopyFrom(_stamp(answer.time))
    return msg


class FlowLogQueue:
    """Serialized messages waiting, one file each (``<ns>.pb``, named in arrival order) under
    ``directory``.  Disk work: call from a worker thread.  Raises OSError on disk trouble."""

    def __init__(
        self, directory: Path, *, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES
    ) -> None:
        self.directory = directory
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.dropped = 0
        self._last_ns = 0
        self._lock = threading.Lock()

    def put(self, payloads: Sequence[bytes]) -> None:
        """Queue ``payloads`` in order, then drop the oldest past the bounds."""
        for data in payloads:
            with self._lock:
                # Names order the upload: never backwards, even when the clock is set back.
                self._last_ns = max(time.time_ns(), self._last_ns + 1)
                name = f"{self._last_ns}.pb"
            write_atomic(self.directory / name, data)
        self._trim()

    def pending(self) -> list[Path]:
        """The queued files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.glob("*.pb") if p.stem.isdigit()]
        return sorted(found, key=lambda p: int(p.stem))

    def _trim(self) -> None:
        sizes = []
        for path in self.pending():
            with contextlib.suppress(FileNotFoundError):
                sizes.append((path, path.stat().st_size))
        total, count, cut = sum(s for _, s in sizes), len(sizes), 0
        for path, size in sizes:
            if count <= self.max_files and total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total, count, cut = total - size, count - 1, cut + 1
        if cut:
            self.dropped += cut
            log.warning("flow logs: %d oldest messages dropped (queue bound reached)", cut)


class FlowLogUploader:
    """Queues reports (:meth:`add`) and posts them (:meth:`run`); see the module docstring."""

    def __init__(
        self,
        client: ControllerClient,
        *,
        device: Signer,
        device_uuid: str,
        queue: FlowLogQueue,
        liveness: Liveness | None = None,
        health: StorageHealth | None = None,
    ) -> None:
        self._client = client
        self._health = health or StorageHealth()
        self._device = device
        self._uuid = device_uuid
        self.queue = queue
        self.liveness = liveness
        self.wake = asyncio.Event()
        self.uploaded = 0
        self.refused = 0
        #: Files that could be neither sent nor removed: skipped, so they hold up nothing.
        self._stuck: set[Path] = set()

    def _write(self, reports: Sequence[FlowReportLike]) -> None:
        self.queue.put([flow_message(self._uuid, r).SerializeToString() for r in reports])

    async def add(self, reports: Sequence[FlowReportLike]) -> None:
        """Queue one message per report (built and written in a worker thread).  Disk
        trouble goes to the storage health (one line while it lasts): those reports are lost,
        the next ones are tried again."""
        if not reports:
            return
        try:
            await asyncio.to_thread(self._write, list(reports))
        except OSError as exc:
            self._health.failed("flow log queue", exc)
            return
        self._health.ok("flow log queue")
        self.wake.set()

    async def _post(self, path: Path, data: bytes) -> bool | None:
        """True delivered, False refused for good (dropped), None kept (stop the pass)."""
        body = await seal_as_device_async(data, self._device)
        try:
            resp = await self._client.request("flowlog", body)
        except TransportError as exc:
            log.debug("flow logs not delivered: %s", exc)
            return None
        if resp.status in (200, 201, 202, 204):
            return True
        log.warning("flowlog answered HTTP %d", resp.status)
        if 400 <= resp.status < 500 and resp.status not in _RETRIABLE:
            return False
        return None

    async def upload_pending(self) -> bool:
        """Post every queued message in order; False at the first one that must wait."""
        for path in await asyncio.to_thread(self.queue.pending):
            if path in self._stuck:
                continue
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                continue  # trimmed meanwhile
            except OSError as exc:  # it would fail for ever and hold up the rest: drop it
                log.error("flow logs: %s unreadable (%s): dropped", path.name, exc)
                await self._discard(path)
                continue
            sent = await self._post(path, data)
            if sent is None:
                return False
            await self._discard(path)
            if sent:
                self.uploaded += 1
            else:
                self.refused += 1
                log.error("controller refused flow log %s for good; dropped", path.name)
        return True

    async def _discard(self, path: Path) -> None:
        """Remove a sent or dropped file; one that cannot be removed is skipped from now on."""
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            log.error("flow logs: cannot remove %s (%s): skipped from now on", path.name, exc)
            self._stuck.add(path)

    async def run(self, stop: asyncio.Event) -> None:
        """Upload until ``stop``: at once when reports arrive, backing off from 5 s to 300 s
        while the controller cannot take them."""
        delay = 5.0
        while not stop.is_set():
            limit = 3600.0
            with (
                self.liveness.activity("flow log upload", limit)
                if self.liveness is not None
                else contextlib.nullcontext()
            ):
                try:
                    ok = await self.upload_pending()
                except OSError as exc:
                    log.error("flow logs: cannot read the queue: %s", exc)
                    ok = False
            delay = 5.0 if ok else min(delay * 2, 300.0)
            wait = jittered(60.0 if ok else delay, 0.8, 1.2)
            if await wait_or_stop(stop, wait, wake=self.wake if ok else None):
                return
