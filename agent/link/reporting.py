"""Device info, per-object info and metrics to the controller.

Info is reliable, as in EVE's deferred queue: each message is first written to the on-disk outbox
under its object key (``device``, ``app:<uuid>``, ``networkinstance:<uuid>``, ``volume:<uuid>``,
``contenttree:<uuid>``), replacing an older undelivered one for the same key, and removed once
the controller answered 2xx.  So a node offline for a week delivers its latest state, without
loss, when the link returns.  As in EVE's deferred queue (``controllerconn/deferred.go``), no
message can hold up the rest:

* one the controller refuses for good (a 4xx other than 401, 403, 407, 408 and 429: 400, 413,
  422...) is moved at once to ``rejected/`` beside the outbox (the newest
  :data:`MAX_REJECTED` kept, for a person to look at) with an error line;
* one answered with a status worth retrying (those five, and 5xx) waits with its own backoff
  (1 min doubling to 15 min) while the pass goes on with the others;
* only a request with no answer at all ends the pass (the others would fail the same way);
* an entry that cannot be read is moved aside like a refused one.

When the disk refuses an outbox write (full, I/O error), the message is kept in memory instead
(latest per key, so bounded by the number of objects) and delivered from there, the problem is
reported once to the shared :class:`agent.util.storagehealth.StorageHealth`, and the device info
says so in ``storage_info`` (see :func:`device_info`).
Metrics are a periodic sample and, like EVE's, are not retried; with an ``app_metrics`` provider
they carry one ``appMetric`` per app (:mod:`agent.link.appmetrics`).

Per-object info is what the reconciler rolls up by owner (:class:`Owner`): EVE's ``ZInfoApp``,
``ZInfoNetworkInstance``, ``ZInfoVolume`` and ``ZInfoContentTree`` with the object's state and
errors (see :data:`SW_STATES` for the mapping).  Each is queued when its content, timestamps
aside, changed, and again at every periodic full publish (``timer.deviceinfo.interval``).  An
owner that disappears is reported once as deleted, as EVE does: the message carries only the
object's ID (``handlemetrics.go`` ``PublishAppInfoToZedCloud`` and friends).

The reporter's coroutines never block the event loop on the disk or the TPM: building and
writing the outbox messages (with their fsync), reading them, and the signature of each message
run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import os
import platform
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.link.appmetrics import AclDrops, AppMetric, add_app_metrics
from agent.link.deviceops import PowerFacts, add_power_info
from agent.link.ioreport import add_io_bundles
from agent.link.objectinfo import (
    ObjectDetails,
    Owner,
    ReportedError,
    object_info,
    object_key,
    timestamp,
    without_times,
)
from agent.link.offload import seal_as_device_async
from agent.link.outbox import MAX_REJECTED as MAX_REJECTED
from agent.link.outbox import Outbox as Outbox
from agent.link.transport import ControllerClient, TransportError
from agent.model.baseos import PartitionStatus
from agent.model.configitems import ConfigItems
from agent.model.iolockdown import IoState
from agent.util.liveness import Liveness
from agent.util.storagehealth import StorageProblem
from agent.util.timing import jittered, wait_or_stop
from agent.wire.envelope import Signer
from agent.wire.pb.info import common_pb2, info_pb2
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
class PortFacts:
    """One port of a port config (EVE's ``DevicePort`` in ``SystemAdapterInfo``)."""

    ifname: str
    name: str
    management: bool
    cost: int
    #: ``client``, ``static`` or ``none``.
    dhcp: str
    addresses: tuple[str, ...] = ()
    routers: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    mtu: int = 0


@dataclass(frozen=True)
class PortConfigFacts:
    """A port config the node keeps (EVE's ``DevicePortStatus``): the config's first, then the
    last working one when it differs.  Times are wall clock, 0 for never."""

    ports: tuple[PortFacts, ...]
    in_use: bool
    last_failed: float = 0.0
    last_succeeded: float = 0.0
    last_error: str = ""


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
    #: The persist directory, and the writes to it that fail now (full disk, I/O errors).
    persist: str = "/persist"
    storage_problems: tuple[StorageProblem, ...] = ()
    #: The port configs (``systemAdapter``); empty while the agent manages no port.
    port_configs: tuple[PortConfigFacts, ...] = ()
    #: Boot reason, restart counter, reboot/shutdown counters, an operation under way.
    power: PowerFacts | None = None
    #: The I/O lockdown: USB devices and serial consoles (``assignableAdapters``).
    io: IoState | None = None
    #: The base OS partitions (``swList``), the running one first; empty: the agent's version
    #: as the one partition.
    partitions: tuple[PartitionStatus, ...] = ()
    #: ``retry_update.counter`` last handled; an update is being written, rebooted or tested.
    baseos_update_counter: int = 0
    baseos_updating: bool = False


def device_info(facts: DeviceFacts) -> info_pb2.ZInfoMsg:
    """Build ``ZInfoMsg{ztype: ZiDevice}``.  Pure apart from reading host facts."""
    msg = info_pb2.ZInfoMsg(
        ztype=info_pb2.ZiDevice, devId=facts.uuid, atTimeStamp=timestamp(time.time())
    )
    dinfo = msg.dinfo
    dinfo.machineArch = platform.machine()
    dinfo.cpuArch = platform.machine()
    dinfo.platform = "eve-agent"
    dinfo.ncpu = os.cpu_count() or 1
    dinfo.memory = _mem_total_mb()
    dinfo.HostName = socket.gethostname()
    dinfo.bootTime.CopyFrom(timestamp(facts.boot_time))
    partitions = facts.partitions or (
        PartitionStatus("IMGA", "active", facts.version, activated=True),
    )
    for partition in partitions:
        _sw(dinfo.swList.add(), partition)
    dinfo.baseos_update_counter = facts.baseos_update_counter
    dinfo.state = (
        info_pb2.ZDEVICE_STATE_MAINTENANCE_MODE if facts.maintenance
        else info_pb2.ZDEVICE_STATE_BASEOS_UPDATING if facts.baseos_updating
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
    _storage_info(dinfo.storage_info.add(), facts)
    if facts.port_configs:
        _system_adapter(dinfo.systemAdapter, facts.port_configs)
    if facts.power is not None:
        add_power_info(dinfo, facts.power)
    add_io_bundles(dinfo, facts.io)
    return msg


def _sw(sw: info_pb2.ZInfoDevSW, p: PartitionStatus) -> None:
    """One partition as EVE's baseosmgr reports it: the running one RUNNING, a written one
    INSTALLED, one being downloaded or written DOWNLOAD_STARTED; the BaseOsStatus and
    sub-status by name."""
    sw.partitionLabel = p.label
    sw.partitionState = p.state
    sw.shortVersion = p.version
    sw.longVersion = p.version
    sw.activated = p.activated
    sw.status = (
        info_pb2.RUNNING if p.activated
        else info_pb2.ERROR if p.error
        else info_pb2.DOWNLOAD_STARTED if p.user_status in ("DOWNLOADING", "UPDATING")
        else info_pb2.INSTALLED if p.version
        else info_pb2.INITIAL
    )  # fmt: skip
    sw.userStatus = info_pb2.BaseOsStatus.Value(p.user_status)  # type: ignore[assignment]
    sw.subStatus = info_pb2.BaseOsSubStatus.Value(p.sub_status)  # type: ignore[assignment]
    sw.subStatusStr = p.sub_status_text[:256]
    sw.subStatusProgress = max(0, p.progress)
    if p.user_status == "DOWNLOADING":
        sw.downloadProgress = max(0, min(100, p.progress))
    if p.error:
        sw.swErr.description = p.error[:1024]
        sw.swErr.severity = common_pb2.SEVERITY_ERROR
        if p.error_time:
            sw.swErr.timestamp.CopyFrom(timestamp(p.error_time))


#: common.DHCPType by the model's names.
_DHCP_TYPES = {"static": 1, "none": 2, "client": 4}


def _system_adapter(
    adapters: info_pb2.SystemAdapterInfo, configs: Sequence[PortConfigFacts]
) -> None:
    """EVE's DPC list as nim reports it: ``currentIndex`` is the config in use, a failed test
    shows as ``lastFailed`` and ``lastError`` of its config."""
    adapters.currentIndex = next((i for i, c in enumerate(configs) if c.in_use), 0)
    for config in configs:
        status = adapters.status.add(key="zedagent", lastError=config.last_error[:1024])
        if config.last_failed:
            status.lastFailed.CopyFrom(timestamp(config.last_failed))
        if config.last_succeeded:
            status.lastSucceeded.CopyFrom(timestamp(config.last_succeeded))
        for port in config.ports:
            out = status.ports.add(
                ifname=port.ifname, name=port.name, isMgmt=port.management, cost=port.cost,
                free=port.management and port.cost == 0, dhcpType=_DHCP_TYPES.get(port.dhcp, 0),
                mtu=port.mtu,
            )  # fmt: skip
            out.IPAddrs.extend(port.addresses)
            out.defaultRouters.extend(port.routers)
            out.dnsServers.extend(port.dns)


def _storage_info(target: info_pb2.StorageInfo, facts: DeviceFacts) -> None:
    """The persist filesystem as EVE reports it without ZFS (``zedagent/reportinfo.go``: pool
    ``/persist``, ONLINE), DEGRADED (no space) or FAULTED (I/O errors) while writes fail, with
    what is not written in ``pool_status_msg``.  EVE itself enters maintenance mode
    (``LOW_DISK_SPACE``) when the volume manager runs out of room; the agent does not stop the
    apps for its own small files, it keeps them in memory and says so here."""
    target.pool_name = facts.persist
    target.storage_type = info_pb2.STORAGE_TYPE_INFO_EXT4
    problems = facts.storage_problems
    if not problems:
        target.storage_state = info_pb2.STORAGE_STATUS_ONLINE
        return
    full = any(p.no_space for p in problems)
    target.storage_state = (
        info_pb2.STORAGE_STATUS_DEGRADED if full else info_pb2.STORAGE_STATUS_FAULTED
    )
    first = min(p.since for p in problems)
    when = dt.datetime.fromtimestamp(first, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    reason = "no space left on device" if full else "write errors"
    target.pool_status_msg = (
        f"{reason} since {when}: not written: {', '.join(p.what for p in problems)}; "
        "kept in memory, retrying"
    )
    target.collector_errors = "; ".join(f"{p.what}: {p.error}" for p in problems)[:2048]


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
    msg = metrics_pb2.ZMetricMsg(devID=facts.uuid, atTimeStamp=timestamp(time.time()))
    mem = _meminfo()
    total, avail = mem.get("MemTotal", 0) // 1024, mem.get("MemAvailable", 0) // 1024
    dm = msg.dm
    dm.memory.usedMem = max(0, total - avail)
    dm.memory.availMem = avail
    if total:
        dm.memory.usedPercentage = 100.0 * (total - avail) / total
        dm.memory.availPercentage = 100.0 * avail / total
    if facts.last_received_config:
        dm.last_received_config.CopyFrom(timestamp(facts.last_received_config))
    if facts.last_processed_config:
        dm.last_processed_config.CopyFrom(timestamp(facts.last_processed_config))
    return msg


class _Sent(enum.Enum):
    OK = "delivered"
    #: The controller will refuse these bytes again (a 4xx that is not about authentication,
    #: rate or timeouts): moved aside (``retriableHTTPStatus`` in EVE's deferred queue).
    REFUSED = "refused"
    #: An answer worth retrying (401, 403, 407, 408, 429, 5xx): this message waits with its own
    #: backoff; the pass goes on with the others.
    RETRY = "retry"
    #: No answer at all: kept; the pass stops (the rest would fail the same way).
    FAILED = "failed"


_RETRIABLE = frozenset({401, 403, 407, 408, 429})
#: Per-message backoff after a retriable answer (EVE's ``minRetryDelay``, ``maxRetryDelay``).
RETRY_MIN = 60.0
RETRY_MAX = 900.0


@dataclass
class _Known:
    """What was last queued for one object."""

    #: The owner's report it was made from (cheap to compare: skips rebuilding the message).
    source: tuple[object, ...]
    #: The message without its timestamps.
    content: bytes
    #: When each error without a time of its own, and each wait reason, was first seen.
    since: dict[str, float]


class Reporter:
    """Sends device info (on change and every ``timer.deviceinfo.interval``), per-object info
    (the same) and metrics."""

    def __init__(
        self,
        client: ControllerClient,
        *,
        device: Signer,
        outbox: Outbox,
        facts: Callable[[], DeviceFacts | None],
        items: Callable[[], ConfigItems],
        owners: Callable[[], Sequence[Owner]] | None = None,
        app_metrics: Callable[[], Sequence[AppMetric]] | None = None,
        liveness: Liveness | None = None,
        acl_drops: Callable[[], Mapping[str, Sequence[AclDrops]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        #: key -> (answers worth retrying in a row, monotonic time of the next attempt).
        self._retry: dict[str, tuple[int, float]] = {}
        self._client = client
        self._device = device
        self._outbox = outbox
        self._facts = facts
        self._items = items
        self._owners = owners
        self._app_metrics = app_metrics
        self._acl_drops = acl_drops
        self._liveness = liveness
        self._last_info: bytes | None = None
        self._last_info_at = 0.0
        self._known: dict[str, _Known] = {}
        self._last_objects_at = 0.0
        self._next_metrics = 0.0
        self.sent_info = 0
        self.refused_info = 0
        #: The HTTP status of the last refusal (for the log line of a rejected message).
        self.last_refusal = 0
        self.sent_metrics = 0
        self.wake = asyncio.Event()

    async def _post(self, action: str, payload: bytes) -> _Sent:
        body = await seal_as_device_async(payload, self._device)
        try:
            resp = await self._client.request(action, body)
        except TransportError as exc:
            log.debug("%s not delivered: %s", action, exc)
            return _Sent.FAILED
        if resp.status in (200, 201, 202, 204):
            return _Sent.OK
        log.warning("%s answered HTTP %d", action, resp.status)
        self.last_refusal = resp.status
        if 400 <= resp.status < 500 and resp.status not in _RETRIABLE:
            return _Sent.REFUSED
        return _Sent.RETRY

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

    @staticmethod
    def _errors(
        owner: Owner, seen: dict[str, float]
    ) -> tuple[list[ReportedError], dict[str, float]]:
        """The owner's failures (severity ERROR) and wait reasons (NOTICE), each with a time: its
        own, else when it was first seen."""
        now = time.time()
        since: dict[str, float] = {}
        out = []
        for message, at in owner.errors:
            if at <= 0:
                at = since[message] = seen.get(message, now)
            out.append(ReportedError(message, at, common_pb2.SEVERITY_ERROR))
        for reason in owner.pending:
            at = since[reason] = seen.get(reason, now)
            out.append(ReportedError(reason, at, common_pb2.SEVERITY_NOTICE))
        return out, since

    def queue_objects(
        self, device_uuid: str, owners: Sequence[Owner], *, force: bool = False
    ) -> int:
        """Put the info of each app, network instance, volume and content tree in the outbox when
        it changed (timestamps aside) or ``force``; a deleted message for each one no longer
        there, once.  Returns how many were queued.  Raises OSError (what was queued before the
        failure stays queued and known)."""
        current: dict[str, tuple[str, Owner]] = {}
        for owner in owners:
            named = object_key(owner)
            if named is not None and named[0] not in current:
                current[named[0]] = (named[1], owner)
        queued = 0
        for key, (obj_id, owner) in current.items():
            details = ObjectDetails.of(owner)
            source = (owner.name, owner.state, tuple(owner.errors), tuple(owner.pending), details)
            known = self._known.get(key)
            if known is not None and not force and known.source == source:
                continue
            errors, since = self._errors(owner, known.since if known else {})
            msg = object_info(
                device_uuid, owner.kind, obj_id, owner.state, name=owner.name, errors=errors,
                details=details,
            )  # fmt: skip
            content = without_times(msg)
            if known is not None and not force and known.content == content:
                known.source = source  # only error times moved
                continue
            self._outbox.put(key, msg.SerializeToString())
            self._known[key] = _Known(source, content, since)
            queued += 1
        for key in [k for k in self._known if k not in current]:
            kind, _, obj_id = key.partition(":")
            gone = object_info(device_uuid, kind, obj_id, None)
            self._outbox.put(key, gone.SerializeToString())
            del self._known[key]
            queued += 1
        return queued

    async def queue_objects_async(self, device_uuid: str, *, force: bool = False) -> int:
        """:meth:`queue_objects` for the owners now, built and written in a worker thread."""
        if self._owners is None:
            return 0
        try:
            owners = list(self._owners())
        except Exception:  # a bug there must not stop device info and metrics
            log.exception("cannot read the owners' state")
            return 0
        queued = await asyncio.to_thread(self.queue_objects, device_uuid, owners, force=force)
        if force:
            self._last_objects_at = time.monotonic()
        return queued

    async def flush(self, *, budget: float | None = None) -> None:
        """Deliver the outbox, oldest first, as the module says: a message refused for good is
        moved aside, one answered with a retriable status waits with its own backoff, and only
        a request without an answer ends the pass.  With a ``budget`` (seconds), start no new
        delivery past it and wake the next round at once.  Never raises for disk trouble."""
        deadline = None if budget is None else time.monotonic() + budget
        pending = await asyncio.to_thread(self._outbox.pending)
        keys = {key for key, _, _ in pending}
        self._retry = {k: v for k, v in self._retry.items() if k in keys}
        for key, payload, mtime in pending:
            retry = self._retry.get(key)
            if retry is not None and self._clock() < retry[1]:
                continue
            if deadline is not None and time.monotonic() > deadline:
                self.wake.set()
                return
            sent = await self._post("info", payload)
            if sent is _Sent.FAILED:
                return
            if sent is _Sent.RETRY:
                attempts = (retry[0] if retry else 0) + 1
                delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(attempts - 1, 10))
                self._retry[key] = (attempts, self._clock() + delay)
                log.warning(
                    "info %s answered HTTP %d (attempt %d): retrying in %.0f s",
                    key, self.last_refusal, attempts, delay,
                )  # fmt: skip
                continue
            self._retry.pop(key, None)
            if sent is _Sent.OK:
                await asyncio.to_thread(self._outbox.done, key, mtime)
                self.sent_info += 1
            else:
                await asyncio.to_thread(self._outbox.reject, key, mtime, payload)
                self.refused_info += 1
                log.error(
                    "controller refused info %s for good (HTTP %d): moved to %s",
                    key, self.last_refusal, self._outbox.rejected_dir,
                )  # fmt: skip

    def _activity(self, limit: float) -> contextlib.AbstractContextManager[None]:
        if self._liveness is None:
            return contextlib.nullcontext()
        return self._liveness.activity("reporter", limit)

    async def _round(self, items: ConfigItems, send: float) -> None:
        """One publish and upload round: queue what changed, deliver, sample metrics."""
        facts = self._facts()
        if facts is None:
            return
        now = time.monotonic()
        interval = items.int("timer.deviceinfo.interval")
        try:
            await self.queue_info_async(facts, force=now - self._last_info_at >= interval)
        except OSError as exc:
            log.error("cannot queue device info: %s", exc)
        try:
            await self.queue_objects_async(
                facts.uuid, force=now - self._last_objects_at >= interval
            )
        except OSError as exc:
            log.error("cannot queue object info: %s", exc)
        await self.flush(budget=send / 2)
        if now >= self._next_metrics:
            self._next_metrics = now + jittered(items.int("timer.metric.interval"))
            sent = await self._post("metrics", self.metrics(facts).SerializeToString())
            if sent is _Sent.OK:
                self.sent_metrics += 1

    def metrics(self, facts: DeviceFacts) -> metrics_pb2.ZMetricMsg:
        """The metrics message now: the device's, and one ``am`` entry per app when the
        reporter has an ``app_metrics`` provider (a failing provider costs only those)."""
        msg = device_metrics(facts)
        if self._app_metrics is not None:
            try:
                drops = self._acl_drops() if self._acl_drops is not None else None
                add_app_metrics(msg, self._app_metrics(), drops)
            except Exception:  # a bug there must not stop the device's metrics
                log.exception("cannot read the apps' metrics")
                del msg.am[:]
        return msg

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            items = self._items()
            # A round: the outbox writes, deliveries started within half the send timeout
            # (each bounded by it), one metrics request.  Far past that, it is hung.
            send = float(items.int("timer.send.timeout") or 120)
            with self._activity(3 * send + 60):
                await self._round(items, send)
            if await wait_or_stop(stop, jittered(5.0, 0.8, 1.2), wake=self.wake):
                return
