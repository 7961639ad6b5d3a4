"""What the node tells the controller about itself in its device info (:class:`DeviceFacts`),
read from the running :class:`~agent.daemon.Node`.  Pure reads of state only the event loop
changes: call them on the loop.  None of them raises."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent import nodepower
from agent.link.reporting import DeviceFacts, PortConfigFacts, PortFacts

if TYPE_CHECKING:
    from agent.daemon import Node


def device_facts(node: Node) -> DeviceFacts | None:
    """The device info's facts; None until the node has its UUID, attestor and config sync."""
    if node.device_uuid is None or node.attestor is None or node.sync is None:
        return None
    item_errors = {
        o.id: o.message for o in node.reconciler.report.object_errors if o.kind == "configitem"
    }
    return DeviceFacts(
        uuid=node.device_uuid,
        version=node.settings.version,
        boot_time=node.boot_time,
        attestation_state=node.attestor.status.state.value,
        attestation_error=node.attestor.status.error,
        items=node.items(),
        item_errors=item_errors,
        maintenance=maintenance_reasons(node),
        last_received_config=node.sync.status.received_at,
        last_processed_config=node.sync.status.received_at if node.sync.status.applied_ok else 0.0,
        tpm=not node.settings.no_tpm,
        vault_state=node.vault.status.state.value if node.vault else "disabled",
        vault_reason=node.vault.status.reason if node.vault else "",
        persist=str(node.paths.persist),
        storage_problems=tuple(node.storage.problems()),
        port_configs=port_configs(node),
        power=nodepower.power_facts(node),
        partitions=node.baseos.partitions(),
        baseos_update_counter=node.baseos.update_counter,
        baseos_updating=node.baseos.updating(),
        io=node.iolock.state,
    )


def port_configs(node: Node) -> tuple[PortConfigFacts, ...]:
    """The port configs the node keeps, for the device info (EVE's systemAdapter)."""
    if node.ports is None:
        return ()
    return tuple(
        PortConfigFacts(
            tuple(PortFacts(r.port.ifname, r.port.name, r.port.management, r.port.cost,
                            r.port.dhcp, r.addresses, r.routers, r.dns, r.port.mtu)
                  for r in config.ports),
            config.in_use, config.last_failed, config.last_succeeded, config.last_error,
        )
        for config in node.ports.report()
    )  # fmt: skip


def maintenance_reasons(node: Node) -> tuple[str, ...]:
    """Why the node is in maintenance mode (empty: it is not), with EVE's reasons.

    As EVE's nodeagent: asked by the operator (config or ``maintenance.mode``), or a vault
    still locked ``timer.vault.ready.cutoff`` seconds after start.  Apps stay stopped then.
    """
    reasons = []
    cfg = node.reconciler.current
    if (cfg is not None and cfg.maintenance_mode) or node.items().bool("maintenance.mode"):
        reasons.append("user-requested")
    if node.vault is not None and node.vault.status.state.value in ("locked", "error"):
        cutoff = node.items().int("timer.vault.ready.cutoff")
        if time.time() - node.boot_time >= cutoff:
            reasons.append("vault-locked-up")
    return tuple(reasons)
