"""Device info and metrics to the controller.

Info is reliable, as in EVE's deferred queue: each message is first written to the on-disk outbox
under its object key (``device``, later one per app or network), replacing an older undelivered
one for the same key, and removed only once the controller answered 2xx.  So a node offline for a
week delivers its latest state, without loss, when the link returns.  Metrics are a periodic
sample and, like EVE's, are not retried.

The reporter's coroutines never block the event loop on the disk or the TPM: outbox writes (with
their fsync) and reads, and the signature of each message, run in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from agent.link.offload import seal_as_device_async
from agent.link.transport import ControllerClient, TransportError
from agent.model.configitems import ConfigItems
from agent.util.atomicfile import write_atomic
from agent.util.timing import jittered, wait_or_stop
from agent.wire.envelope import Signer
from agent.wire.pb.info import info_pb2
from agent.wire.pb.metrics import metrics_pb2

log = logging.getLogger(__name__)

_ATTEST_STATES = {
    "unspecified": info_pb2.ATTESTATION_STATE_UNSPECIFIED,
    "nonce-wait": info_pb2.ATTESTATION_STATE_NONCE_WAIT,
    "tpm-quote-wait": info_pb2.ATTESTATION_STATE_TPM_QUOTE_WAIT,
    "attest-wait": info_pb2.ATTESTATION_STATE_ATTEST_WAIT,
    "attest-escrow-wait": info_pb2.ATTESTATION_STATE_ATTEST_ESCROW_WAIT,
    "restart-wait": info_pb2.ATTESTATION_STATE_RESTART_WAIT,
    "complete": info_pb2.ATTESTATION_STATE_COMPLETE,
}


# EVE's mapping of vault states to DataSecAtRest (a locked vault is an error to the operator).
_VAULT_STATES = {
    "unlocked": info_pb2.DATASEC_AT_REST_ENABLED,
    "disabled": info_pb2.DATASEC_AT_REST_DISABLED,
    "locked": info_pb2.DATASEC_AT_REST_ERROR,
    "error": info_pb2.DATASEC_AT_REST_ERROR,
}


_MAINTENANCE_REASONS = {
    "user-requested": info_pb2.MAINTENANCE_MODE_REASON_USER_REQUESTED,
    "vault-locked-up": info_pb2.MAINTENANCE_MODE_REASON_VAULT_LOCKED_UP,
}


@dataclass(frozen=True)
class DeviceFacts:
    """What the device info message says, gathered by the daemon from its components."""

    uuid: str
    version: str
    boot_time: float
    attestation_state: str
    attestation_error: str
    items: ConfigItems
    item_errors: dict[str, str] = field(default_factory=dict)
    #: Maintenance mode reasons (``user-requested``, ``vault-locked-up``); empty: not in it.
    maintenance: tuple[str, ...] = ()
    last_received_config: float = 0.0
    last_processed_config: float = 0.0
    tpm: bool = False
    vault_state: str = "disabled"
    vault_reason: str = ""


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def device_info(facts: DeviceFacts) -> info_pb2.ZInfoMsg:
    """Build ``ZInfoMsg{ztype: ZiDevice}``.  Pure apart from reading host facts."""
    msg = info_pb2.ZInfoMsg(ztype=info_pb2.ZiDevice, devId=facts.uuid, atTimeStamp=_ts(time.time()))
    dinfo = msg.dinfo
    dinfo.machineArch = platform.machine()
    dinfo.cpuArch = platform.machine()
    dinfo.platform = "eve-agent"
    dinfo.ncpu = os.cpu_count() or 1
    dinfo.memory = _mem_total_mb()
    dinfo.HostName = socket.gethostname()
    dinfo.bootTime.CopyFrom(_ts(facts.boot_time))
    sw = dinfo.swList.add()
    sw.shortVersion = facts.version
    sw.partitionLabel = "IMGA"
    sw.partitionState = "active"
    sw.activated = True
    sw.status = info_pb2.RUNNING
    dinfo.state = (
        info_pb2.ZDEVICE_STATE_MAINTENANCE_MODE if facts.maintenance
        else info_pb2.ZDEVICE_STATE_ONLINE
    )  # fmt: skip
    dinfo.maintenance_mode = bool(facts.maintenance)
    for reason in facts.maintenance:
        dinfo.maintenance_mode_reasons.append(_MAINTENANCE_REASONS[reason])
    dinfo.HSMStatus = info_pb2.ENABLED if facts.tpm else info_pb2.DISABLED
    dinfo.HSMInfo = "TPM 2.0" if facts.tpm else "software keys (no TPM)"
    sec = dinfo.dataSecAtRestInfo
    sec.status = _VAULT_STATES.get(facts.vault_state, info_pb2.DATASEC_AT_REST_UNKNOWN)
    sec.info = facts.vault_reason or ("vault needs a TPM" if not facts.tpm else "")
    vault = sec.vaultList.add(name="Application Data Store", status=sec.status)
    vault.pcrStatus = info_pb2.PCR_ENABLED if facts.tpm else info_pb2.PCR_DISABLED
    if sec.status == info_pb2.DATASEC_AT_REST_ERROR:
        vault.vaultErr.description = facts.vault_reason
    dinfo.attestation_info.state = _ATTEST_STATES.get(
        facts.attestation_state, info_pb2.ATTESTATION_STATE_UNSPECIFIED
    )
    if facts.attestation_error:
        dinfo.attestation_info.error.description = facts.attestation_error
    status = dinfo.configItemStatus
    for key, value in facts.items.explicit().items():
        target = status.unknownConfigItems if key in facts.items.unknown else status.configItems
        target[key].value = value
    for key, error in facts.item_errors.items():
        target = status.unknownConfigItems if key in facts.items.unknown else status.configItems
        target[key].error = error
    return msg


def _mem_total_mb() -> int:
    return _meminfo().get("MemTotal", 0) // 1024


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                out[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def device_metrics(facts: DeviceFacts) -> metrics_pb2.ZMetricMsg:
    msg = metrics_pb2.ZMetricMsg(devID=facts.uuid, atTimeStamp=_ts(time.time()))
    mem = _meminfo()
    total, avail = mem.get("MemTotal", 0) // 1024, mem.get("MemAvailable", 0) // 1024
    dm = msg.dm
    dm.memory.usedMem = max(0, total - avail)
    dm.memory.availMem = avail
    if total:
        dm.memory.usedPercentage = 100.0 * (total - avail) / total
        dm.memory.availPercentage = 100.0 * avail / total
    if facts.last_received_config:
        dm.last_received_config.CopyFrom(_ts(facts.last_received_config))
    if facts.last_processed_config:
        dm.last_processed_config.CopyFrom(_ts(facts.last_processed_config))
    return msg


class Outbox:
    """Durable latest-per-key queue of info messages.  Methods raise OSError on disk trouble."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, key: str, payload: bytes) -> None:
        write_atomic(self.directory / f"{key}.info", payload)

    def pending(self) -> list[tuple[str, bytes, int]]:
        """(key, payload, mtime_ns) oldest first."""
        if not self.directory.is_dir():
            return []
        entries = []
        for path in self.directory.glob("*.info"):
            try:
                entries.append((path.stem, path.read_bytes(), path.stat().st_mtime_ns))
            except FileNotFoundError:
                continue
        return sorted(entries, key=lambda e: e[2])

    def done(self, key: str, mtime_ns: int) -> None:
        """Remove ``key`` unless it was replaced meanwhile (newer mtime)."""
        path = self.directory / f"{key}.info"
        try:
            if path.stat().st_mtime_ns == mtime_ns:
                path.unlink()
        except FileNotFoundError:
            pass


class Reporter:
    """Sends device info (on change and every ``timer.deviceinfo.interval``) and metrics."""

    def __init__(
        self,
        client: ControllerClient,
        *,
        device: Signer,
        outbox: Outbox,
        facts: Callable[[], DeviceFacts | None],
        items: Callable[[], ConfigItems],
    ) -> None:
        self._client = client
        self._device = device
        self._outbox = outbox
        self._facts = facts
        self._items = items
        self._last_info: bytes | None = None
        self._last_info_at = 0.0
        self._next_metrics = 0.0
        self.sent_info = 0
        self.sent_metrics = 0
        self.wake = asyncio.Event()

    async def _post(self, action: str, payload: bytes) -> bool:
        body = await seal_as_device_async(payload, self._device)
        try:
            resp = await self._client.request(action, body)
        except TransportError as exc:
            log.debug("%s not delivered: %s", action, exc)
            return False
        if resp.status in (200, 201, 202, 204):
            return True
        log.warning("%s answered HTTP %d", action, resp.status)
        return False

    def _info_change(self, facts: DeviceFacts, force: bool) -> tuple[bytes, bytes] | None:
        """(message, comparison key) when the device info changed (ignoring its timestamps)
        or ``force``; None when there is nothing to queue."""
        msg = device_info(facts)
        stable = info_pb2.ZInfoMsg()
        stable.CopyFrom(msg)
        stable.ClearField("atTimeStamp")
        stable.dinfo.ClearField("bootTime")
        key = stable.SerializeToString(deterministic=True)
        if force or key != self._last_info:
            return msg.SerializeToString(), key
        return None

    def _queued(self, key: bytes) -> None:
        self._last_info = key
        self._last_info_at = time.monotonic()

    def queue_info(self, facts: DeviceFacts, *, force: bool = False) -> None:
        """Put device info in the outbox when it changed (ignoring its timestamp) or forced."""
        change = self._info_change(facts, force)
        if change is not None:
            self._outbox.put("device", change[0])
            self._queued(change[1])

    async def queue_info_async(self, facts: DeviceFacts, *, force: bool = False) -> None:
        """:meth:`queue_info` with the outbox write (fsync) in a worker thread."""
        change = self._info_change(facts, force)
        if change is not None:
            await asyncio.to_thread(self._outbox.put, "device", change[0])
            self._queued(change[1])

    async def flush(self) -> None:
        """Deliver the outbox, oldest first; stop at the first failure (keep order)."""
        for key, payload, mtime in await asyncio.to_thread(self._outbox.pending):
            if not await self._post("info", payload):
                return
            await asyncio.to_thread(self._outbox.done, key, mtime)
            self.sent_info += 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            facts = self._facts()
            items = self._items()
            if facts is not None:
                now = time.monotonic()
                force = now - self._last_info_at >= items.int("timer.deviceinfo.interval")
                try:
                    await self.queue_info_async(facts, force=force)
                except OSError as exc:
                    log.error("cannot queue device info: %s", exc)
                await self.flush()
                if now >= self._next_metrics:
                    self._next_metrics = now + jittered(items.int("timer.metric.interval"))
                    if await self._post("metrics", device_metrics(facts).SerializeToString()):
                        self.sent_metrics += 1
            if await wait_or_stop(stop, jittered(5.0, 0.8, 1.2), wake=self.wake):
                return
