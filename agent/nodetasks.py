"""The node's long-running side tasks, beside the link's config, reporting and log tasks.

Each runs under the daemon's supervision (:mod:`agent.daemon`) until ``stop`` and reads the
node's parts through the :class:`~agent.daemon.Node` it is given: they hold no state of their
own that outlives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from agent.drivers.conntrack import NfConntrack
from agent.drivers.errors import DriverError
from agent.drivers.kubeapi import KubeApi
from agent.drivers.nflog import NflogListener
from agent.drivers.systemd import sd_notify, watchdog_interval
from agent.link.flowlog import FlowLogQueue, FlowLogUploader
from agent.link.kubeinfo import queue_kube_cluster
from agent.link.transport import ControllerClient
from agent.reconcile.acerules import NFLOG_GROUP
from agent.reconcile.dnslog import SNAPLEN as DNS_SNAPLEN
from agent.reconcile.firewall import DNS_GROUP
from agent.reconcile.flows import FlowCollector, FlowSettings
from agent.reconcile.kubestatus import KubeClusterStatus
from agent.reconcile.kubewatch import ClusterWatch
from agent.util.timing import wait_or_stop
from agent.wire.envelope import Signer

if TYPE_CHECKING:
    from agent.daemon import Node

log = logging.getLogger("agent.daemon")


async def feed_watchdog(node: Node, stop: asyncio.Event) -> None:
    """READY=1 once the link runs; WATCHDOG=1 every half watchdog period while nothing is
    hung; STATUS= the node's phase when it changes.  A blocked event loop sends nothing
    either, so systemd restarts a stuck agent.  Never raises (sd_notify does not)."""
    interval = watchdog_interval() or node.settings.status_interval
    notified = False
    reported: list[str] = []
    told = ""
    while not stop.is_set():
        if node.ready.is_set() and not notified:
            sd_notify("READY=1")
            notified = True
        problems = node.liveness.problems()
        if not problems:
            sd_notify("WATCHDOG=1")
            if reported:
                log.warning("progress again: feeding the systemd watchdog")
        elif problems != reported:
            log.error("hung, not feeding the systemd watchdog: %s", "; ".join(problems))
        reported = problems
        if node.phase != told:
            sd_notify(f"STATUS={node.phase}")
            told = node.phase
        # Until READY is told, the ready flag wakes the loop too: systemd hears it at once,
        # not up to half a watchdog period later.
        waits = [asyncio.ensure_future(stop.wait())]
        if not notified:
            waits.append(asyncio.ensure_future(node.ready.wait()))
        _done, pending = await asyncio.wait(
            waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()


async def report_cluster(node: Node, stop: asyncio.Event) -> None:
    """While this node is a cluster member: the cluster as its K3s VM's API tells it, to
    the controller (ZInfoKubeCluster) when it changed, at the metrics interval and at once
    when the VM posts a new kubeconfig."""
    api = KubeApi(node.settings.netns)
    watch = ClusterWatch(api, node.app_meta, lambda: node.reconciler.current,
                         lambda: node.reconciler.layout)  # fmt: skip
    last: KubeClusterStatus | None = None
    try:
        while not stop.is_set():
            status = await watch.sample()
            if status is not None and status != last and node.outbox is not None:
                assert node.device_uuid is not None
                await asyncio.to_thread(queue_kube_cluster, node.outbox, node.device_uuid, status)
                last = status
            interval = float(node.items().int("timer.metric.interval"))
            # A new kubeconfig is read at once (the interval read at start may be the
            # default's 60 s, before the config's).
            await wait_or_stop(stop, interval, wake=node.kubeconfig_posted)
    finally:
        await api.close()


async def read_acl_counters(node: Node, stop: asyncio.Event) -> None:
    """Read the firewall's counters at the metrics interval (a full read of the tables) into
    ``node.acl_drops``, for the metrics report.  A failed read keeps the last one."""
    assert node.networks is not None
    while not stop.is_set():
        try:
            node.acl_drops = await node.networks.acl_drops(node.reconciler.layout)
        except DriverError as exc:
            log.debug("ACL counters not read: %s", exc)
        interval = float(node.items().int("timer.metric.interval"))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def flow_log_tasks(
    node: Node, stop: asyncio.Event, client: ControllerClient, device: Signer
) -> dict[str, Coroutine[Any, Any, None]]:
    """Flow logs: sampled in the node's namespace, queued on disk, posted to the
    controller (:mod:`agent.reconcile.flows`, :mod:`agent.link.flowlog`)."""
    assert node.device_uuid is not None
    netns, interval = node.settings.netns, node.settings.flowlog_interval
    uploader = FlowLogUploader(
        client, device=device, device_uuid=node.device_uuid,
        queue=FlowLogQueue(node.paths.persist / "flowlog"), liveness=node.liveness,
        health=node.storage,
    )  # fmt: skip
    collector = FlowCollector(
        NfConntrack(netns), NflogListener(NFLOG_GROUP, netns),
        lambda: (node.reconciler.layout, node.reconciler.current), uploader.add,
        FlowSettings(interval=interval, sample=min(10.0, interval)),
        dns_log=NflogListener(DNS_GROUP, netns, copy_range=DNS_SNAPLEN),
    )  # fmt: skip
    nets = node.networks
    if nets is not None:

        def learnt(app_id: str, index: int) -> str:
            # A container's lease (the agent asked for it), else what a VM was seen given.
            leased = nets.leases.address(app_id, index)[0] if nets.leases is not None else ""
            seen = nets.switch_addresses
            return leased or (seen.address(app_id, index) if seen is not None else "")

        collector.learnt = learnt
    return {"flow logs": collector.run(stop), "flow log upload": uploader.run(stop)}
