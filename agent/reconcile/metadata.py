"""What the metadata server (169.254.169.254) answers, and the item that runs it.

An app is known by the address it calls from: the network plan gives every app interface on a
local instance its address, so a caller whose address is no app's gets nothing (404).  An app
gets only its own data:

- ``/eve/v1/network.json`` (EVE's schema, docs/ECO-METADATA.md): caller-ip, external-ipv4 (the
  first address of the instance's port), hostname and app-instance-uuid (the app's UUID, as
  EVE), device-uuid; ``/eve/v1/external_ipv4`` as text;
- cloud-init's ``/user-data`` and ``/meta-data`` (also under ``/latest/``): the app's decoded
  user data, and its instance-id and local-hostname.

An app may post, as EVE's msrv takes it (``eve:pkg/pillar/cmd/msrv``, ``handleAppInstMeta``),
its kubeconfig (``/eve/v1/kubeconfig``) or a custom status (``/eve/v1/app/appCustomStatus``):
``Content-Type: application/json`` or 415, at most 32 KiB (the server refuses more), a caller
that is no app gets 204 and nothing is kept; otherwise the sink takes (app, type, data) -
EVE's AppInstMetaData, which the agent keeps in the vault and reports (ZInfoAppInstMetaData).

The ``metadata`` item of the node starts the server when any local instance exists; the
instances' bridges carry the metadata address (see :mod:`agent.reconcile.networks`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.drivers.errors import DriverError
from agent.drivers.metadata import Answer, MetadataServer
from agent.drivers.netlink_api import Netlink
from agent.model.config import AppInstance, NodeConfig
from agent.reconcile import userdata
from agent.reconcile.items import BaseConfigurator, NodeItem
from agent.reconcile.netplan import NetPlan, VifPlan

log = logging.getLogger(__name__)

KIND = "metadata"


@dataclass(frozen=True)
class MetadataItem(NodeItem):
    """The node's metadata server (one for all local instances)."""

    KIND = KIND


#: EVE's AppInstMetaDataType (info.proto) by the path an app posts it to.
KUBECONFIG, CUSTOM_STATUS = 1, 2
_POSTS = {"/eve/v1/kubeconfig": KUBECONFIG, "/eve/v1/app/appCustomStatus": CUSTOM_STATUS}
#: Takes what an app posted: (app id, AppInstMetaDataType, data).
AppMetaSink = Callable[[str, int, bytes], Awaitable[None]]


class MetadataAnswers:
    """The handlers the server calls: answers from the current config and network plan, and
    what apps post handed to ``sink``."""

    def __init__(
        self,
        config: Callable[[], NodeConfig | None],
        layout: Callable[[], NetPlan | None],
        netlink: Netlink,
        sink: AppMetaSink | None = None,
    ) -> None:
        self._config = config
        self._layout = layout
        self._netlink = netlink
        self._sink = sink

    def _caller(self, caller_ip: str) -> tuple[NodeConfig, NetPlan, VifPlan, AppInstance] | None:
        config, layout = self._config(), self._layout()
        if config is None or layout is None:
            return None
        vif = next((v for v in layout.vifs.values() if v.ip and v.ip == caller_ip), None)
        app = config.apps.get(vif.app_id) if vif is not None else None
        if vif is None or app is None:
            return None  # not an app: nothing for anyone else
        return config, layout, vif, app

    async def post(
        self, path: str, caller_ip: str, content_type: str, body: bytes
    ) -> Answer | None:
        """What an app posts (see the module docstring); None (404) for other paths."""
        kind = _POSTS.get(path.rstrip("/"))
        if kind is None or self._sink is None:
            return None
        if content_type != "application/json":
            return Answer(b"Content-Type header is not application/json\n", "text/plain", 415)
        found = self._caller(caller_ip)
        if found is None:
            log.warning("metadata POST %s from %s: no app has that address", path, caller_ip)
            return Answer(b"", "text/plain", 204)
        await self._sink(found[3].id, kind, body)
        return Answer(b"", "text/plain", 200)

    async def __call__(self, path: str, caller_ip: str, caller_port: int) -> Answer | None:
        found = self._caller(caller_ip)
        if found is None:
            return None
        config, layout, vif, app = found
        path = path.rstrip("/").removeprefix("/latest")
        if path == "/eve/v1/network.json":
            doc = {
                "caller-ip": f"{caller_ip}:{caller_port}",
                "external-ipv4": await self._external(layout, vif.ni_id),
                "hostname": app.id,
                "app-instance-uuid": app.id,
                "device-uuid": config.device_uuid,
            }
            return Answer(json.dumps(doc).encode())
        if path == "/eve/v1/external_ipv4":
            return Answer(f"{await self._external(layout, vif.ni_id)}\n".encode(), "text/plain")
        if path == "/user-data":
            return Answer(userdata.decode(app.user_data.reveal()), "text/plain")
        if path == "/meta-data":
            meta = f"instance-id: {app.id}\nlocal-hostname: {vif.hostname}\n"
            return Answer(meta.encode(), "text/plain")
        return None

    async def _external(self, layout: NetPlan, ni_id: str) -> str:
        ni = layout.instances.get(ni_id)
        if ni is None or not ni.ports:
            return ""
        port = ni.ports[0]
        if port.address:
            return port.address.split("/", 1)[0]
        try:
            addresses = await self._netlink.addresses(port.ifname)
        except DriverError:  # a port gone or unreadable: no external address to tell
            return ""
        v4 = [str(a.ip) for a in addresses if a.version == 4]
        return v4[0] if v4 else ""


class MetadataConfigurator(BaseConfigurator):
    def __init__(self, server: MetadataServer) -> None:
        self.server = server

    async def create(self, item: MetadataItem) -> None:
        await self.server.start()

    async def modify(self, old: MetadataItem, new: MetadataItem) -> None:
        await self.server.start()

    async def delete(self, item: MetadataItem) -> None:
        await self.server.stop()
