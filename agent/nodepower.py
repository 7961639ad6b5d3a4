"""The node's boots and power: this boot's reason, the controller's reboot and shutdown
commands (:mod:`agent.link.deviceops`), and the base OS update manager's reboots and content
(:mod:`agent.reconcile.baseos`), read from and kept on the running :class:`~agent.daemon.Node`.
A disk that refuses these files is reported through the node's storage health, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from agent import nodeparts
from agent.link.deviceops import DeviceOps, PowerFacts
from agent.model.config import NodeConfig
from agent.reconcile.baseos import Content as BaseOsContent
from agent.util import bootreason
from agent.util.bootreason import BootReason

if TYPE_CHECKING:
    from agent.daemon import Node

log = logging.getLogger("agent.daemon")


async def retry_boot_reason(node: Node) -> None:
    """Record this boot once the disk takes it, when it refused it at start (full): until
    then the boot has no reason and the disk stays reported as a problem."""
    ops = node.deviceops
    if ops is None or ops.boot is not None or node.boot_id is None:
        return
    try:
        ops.boot = await asyncio.to_thread(bootreason.establish, node.paths.persist, node.boot_id)
    except OSError as exc:
        node.storage.failed("boot reason", exc)
        return
    node.storage.ok("boot reason")
    log.info("boot %d: %s (%s), recorded once the disk took it", ops.boot.restart_counter,
             ops.boot.reason.name, ops.boot.text)  # fmt: skip


def baseos_content(node: Node, tree_id: str) -> BaseOsContent:
    """The base OS content tree as the content kind has it (downloaded like any other)."""
    if node.workloads is None:
        return BaseOsContent(None, 0, "no content store on this node (--no-workloads)")
    for error in node.reconciler.report.object_errors:
        if error.kind == "contenttree" and error.id == tree_id:
            return BaseOsContent(None, 0, error.message)
    result = node.workloads.contents.results.get(tree_id)
    if result is None or not result.blob:
        return BaseOsContent(None, node.workloads.contents.percent(tree_id) or 0)
    return BaseOsContent(node.workloads.ws.verified_blob(result.blob))


def power_facts(node: Node) -> PowerFacts | None:
    """The boot and operation facts; a boot that ended a base OS trial by falling back
    is EVE's fallback boot, whatever reason was recorded when the trial was started."""
    if node.deviceops is None:
        return None
    facts = node.deviceops.facts()
    boot = facts.boot
    if node.baseos.fell_back and boot is not None and boot.reason == BootReason.UPDATE:
        text = f"base OS update fell back: {node.baseos.fell_back}"
        facts = replace(facts, boot=replace(boot, reason=BootReason.FALLBACK, text=text))
    return facts


async def baseos_reboot(node: Node, reason: str) -> None:
    """Reboot for the update manager: recorded as EVE's update or fallback boot reason."""
    if node.deviceops is None:
        log.error("base OS %s: no power control yet, not rebooting", reason)
        return
    why = BootReason.UPDATE if reason == "update" else BootReason.FALLBACK
    text = f"NORMAL: base OS {reason}" if reason == "update" else "base OS trial fell back"
    await node.deviceops.reboot_for(why, text)


async def start_deviceops(node: Node) -> None:
    """This boot's reason and restart counter (agent.util.bootreason), and the recorded
    device-operation counters.  A disk that refuses the files is reported, not fatal."""
    persist = node.paths.persist
    real = nodeparts.is_real(node.paths)
    ops = DeviceOps(persist, nodeparts.power_driver(node.paths),
                    announce=lambda: announce_ops(node), halt_apps=node.reconciler.halt_apps,
                    stopped=node.stop_event.set, deferred=node.baseos.testing)  # fmt: skip
    try:
        node.boot_id = await asyncio.to_thread(bootreason.boot_id, None if real else node.paths.run)
        ops.boot = await asyncio.to_thread(bootreason.establish, persist, node.boot_id)
        node.storage.ok("boot reason")
    except OSError as exc:
        node.storage.failed("boot reason", exc)
    if ops.boot is not None:
        log.info("boot %d: %s (%s)", ops.boot.restart_counter, ops.boot.reason.name,
                 ops.boot.text)  # fmt: skip
    await asyncio.to_thread(ops.load)
    node.deviceops = ops


async def offer_ops(node: Node, config: NodeConfig) -> None:
    """A raised reboot or shutdown counter in ``config`` starts that operation (a disk that
    refuses the counters is reported)."""
    if node.deviceops is None:
        return
    try:
        started = await node.deviceops.offer(config, saved=node.running_saved)
    except OSError as exc:
        node.storage.failed("device operation counters", exc)
        return
    node.storage.ok("device operation counters")
    if started is not None:
        node.phase = f"{started.value} asked by the controller"


async def announce_ops(node: Node) -> None:
    """The device info with the new counter and state, now (before going down)."""
    facts = node.facts()
    if node.reporter is None or facts is None:
        return
    await node.reporter.queue_info_async(facts, force=True)
    await node.reporter.flush(budget=20.0)


def mark_clean_stop(node: Node) -> None:
    """This boot ended in a clean stop of the agent (a failure to record it is logged)."""
    if node.boot_id is None:
        return
    try:
        bootreason.mark_clean_stop(node.paths.persist, node.boot_id)
    except OSError as exc:
        log.warning("clean stop not recorded: %s", exc)
