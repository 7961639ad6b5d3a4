"""The apps' entries of the metrics report: EVE's ``appMetric`` (``ZMetricMsg.am``).

The link layer does not import the reconcilers: :class:`AppMetric` and :class:`AppDisk` name
only what the reporter reads, and the collector (``agent.reconcile.apptelemetry``) produces
values that fit them.

What EVE fills (``eve:pkg/pillar/cmd/zedagent/handlemetrics.go``, ``ReportMetrics``; the
figures come from domainmgr's ``DomainMetric``, ``eve:pkg/pillar/cmd/domainmgr/metric.go``):

- ``AppID``, ``AppName``: the app instance's UUID and display name; one entry per app instance,
  also before it runs (the CPU and memory messages are then present but zero);
- ``cpu.total_ns``: the domain's cumulative CPU time *divided by its number of vCPUs*
  (domainmgr scales it so), ``cpu.total`` the same in whole seconds (deprecated field),
  ``cpu.upTime``: the time since the app booted, as a Timestamp that far from the epoch;
- ``appMemory``: ``allocatedMB`` the memory the domain may use, ``usedMB`` what it uses;
  the deprecated ``memory`` message the same as ``usedMem``/``availMem`` (MB) and percentages;
- ``disk``: per volume, its path, ``provisioned`` and ``used`` in MB (rounded to nearest, as
  EVE's ``RoundToMbytes``), and its ``diskType`` (``qcow2``, ``raw``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from agent.link.objectinfo import timestamp
from agent.wire.pb.metrics import metrics_pb2

_MB = 1 << 20


class AppDisk(Protocol):
    """One disk of an app."""

    @property
    def path(self) -> Path: ...

    @property
    def format(self) -> str:
        """``qcow2``, ``raw``..."""
        ...

    @property
    def capacity_bytes(self) -> int:
        """Its virtual size (EVE's ``provisioned``)."""
        ...

    @property
    def allocation_bytes(self) -> int:
        """What it takes on the host (EVE's ``used``)."""
        ...


class AppMetric(Protocol):
    """One app's latest sample, as the collector keeps it."""

    @property
    def app_uuid(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def cpu_ns(self) -> int:
        """Cumulative CPU time since the app's domain or container started (all its CPUs)."""
        ...

    @property
    def cpus(self) -> int:
        """The CPUs it was given (vCPUs of a VM): EVE reports CPU time per CPU."""
        ...

    @property
    def uptime(self) -> float | None:
        """Seconds since the app started; None when unknown or not running."""
        ...

    @property
    def memory_bytes(self) -> int: ...

    @property
    def memory_max_bytes(self) -> int | None:
        """Its memory limit; None when it has none (the host's memory applies)."""
        ...

    @property
    def disks(self) -> Sequence[AppDisk]: ...


class AclDrops(Protocol):
    """What the firewall dropped of one app interface (packets), for its ``network`` entry:
    ``tx`` what the app sent, ``rx`` what came for it, ``tx_limited`` what a LIMIT ACE cut."""

    @property
    def ifname(self) -> str: ...

    @property
    def tx(self) -> int: ...

    @property
    def rx(self) -> int: ...

    @property
    def tx_limited(self) -> int: ...


def _mb(value: int) -> int:
    return (max(0, value) + _MB // 2) // _MB


def app_metric(sample: AppMetric) -> metrics_pb2.appMetric:
    """The ``appMetric`` entry of one sample, filled as EVE fills it (see the module docstring)."""
    msg = metrics_pb2.appMetric(AppID=sample.app_uuid, AppName=sample.name)
    total_ns = max(0, sample.cpu_ns) // max(1, sample.cpus)
    msg.cpu.total_ns = total_ns
    msg.cpu.total = total_ns // 1_000_000_000
    if sample.uptime is not None:
        msg.cpu.upTime.CopyFrom(timestamp(max(0.0, sample.uptime)))
    used = _mb(sample.memory_bytes)
    allocated = _mb(sample.memory_max_bytes) if sample.memory_max_bytes else 0
    msg.appMemory.usedMB = used
    msg.appMemory.allocatedMB = allocated
    msg.memory.usedMem = used
    msg.memory.availMem = max(0, allocated - used)
    if allocated:
        msg.memory.usedPercentage = min(100.0, 100.0 * used / allocated)
        msg.memory.availPercentage = 100.0 - msg.memory.usedPercentage
    for disk in sample.disks:
        msg.disk.add(
            disk=str(disk.path),
            provisioned=_mb(disk.capacity_bytes),
            used=_mb(disk.allocation_bytes),
            diskType=disk.format,
        )
    return msg


def add_app_metrics(
    msg: metrics_pb2.ZMetricMsg,
    samples: Sequence[AppMetric],
    acl_drops: Mapping[str, Sequence[AclDrops]] | None = None,
) -> None:
    """Append one ``am`` entry per sample (one per app: a repeated UUID keeps the first), with
    the app interfaces' ACL drop counters (``network``: ``txAclDrops``, ``rxAclDrops``,
    ``txAclRateLimitDrops``) when ``acl_drops`` has them."""
    seen: set[str] = set()
    for sample in samples:
        if sample.app_uuid in seen:
            continue
        seen.add(sample.app_uuid)
        entry = app_metric(sample)
        for drops in (acl_drops or {}).get(sample.app_uuid, ()):
            entry.network.add(
                iName=drops.ifname, txAclDrops=max(0, drops.tx), rxAclDrops=max(0, drops.rx),
                txAclRateLimitDrops=max(0, drops.tx_limited),
            )  # fmt: skip
        msg.am.append(entry)
