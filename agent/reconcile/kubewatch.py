"""Watching the node's K3s VM: with the kubeconfig the VM posted to the metadata server, read
its API (nodes, pods) from the node's namespace and make the cluster report
(:mod:`agent.reconcile.kubestatus`).  Only while the config makes this node a cluster member.

The VM is reached at its own address on its network instance (the plan's; the kubeconfig's
``127.0.0.1`` is the VM's loopback).  A kubeconfig that cannot be used is logged once per
content; an API that does not answer is a debug line (the VM may be booting).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

from agent.drivers.errors import DriverError
from agent.drivers.kubeapi import KubeApi, KubeConfig, KubeConfigError
from agent.model.config import NodeConfig
from agent.reconcile.appmeta import AppMetaStore
from agent.reconcile.kubestatus import KubeClusterStatus, parse
from agent.reconcile.metadata import KUBECONFIG
from agent.reconcile.netplan import NetPlan

log = logging.getLogger(__name__)


class ClusterWatch:
    """Samples the cluster through the node's K3s VM; see the module docstring."""

    def __init__(
        self,
        api: KubeApi,
        store: AppMetaStore,
        config: Callable[[], NodeConfig | None],
        layout: Callable[[], NetPlan | None],
    ) -> None:
        self._api = api
        self._store = store
        self._config = config
        self._layout = layout
        self._refused: set[str] = set()

    async def sample(self) -> KubeClusterStatus | None:
        """The cluster as the first answering member VM of this node sees it; None when this
        node is no cluster member, no VM posted a usable kubeconfig, or none answers."""
        config, layout = self._config(), self._layout()
        if config is None or config.cluster is None or layout is None:
            return None
        posted = await asyncio.to_thread(self._store.load)
        for (app_id, kind), data in sorted(posted.items()):
            if kind != KUBECONFIG or app_id not in config.apps:
                continue
            host = next(
                (v.ip for v in sorted(layout.vifs.values(), key=lambda v: v.index)
                 if v.app_id == app_id and v.ip), None,
            )  # fmt: skip
            if host is None:
                continue
            try:
                kube = KubeConfig.parse(data)
            except KubeConfigError as exc:
                digest = hashlib.sha256(data).hexdigest()
                if digest not in self._refused:
                    self._refused.add(digest)
                    log.warning("app %s posted a kubeconfig the agent cannot use: %s", app_id, exc)
                continue
            try:
                nodes = await self._api.get(kube, host, "/api/v1/nodes")
                pods = await self._api.get(kube, host, "/api/v1/pods")
            except DriverError as exc:
                log.debug("cluster API of app %s at %s: %s", app_id, host, exc)
                continue
            return parse(config.cluster.id, nodes, pods)
        return None
