"""A node's workloads with fake runtimes but real stores: for the workload unit tests.

Content comes from a local HTTPS datastore (:mod:`tests.unit.blob_server`) and a small OCI
registry served here; blobs and volumes go to real stores in a directory that stands for the
vault (``vault_open`` toggles it); containers and domains go to the drivers' fakes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.drivers.docker_fake import FakeContainerRuntime
from agent.drivers.hypervisor import HypervisorSettings
from agent.drivers.libvirt_fake import FakeHypervisor
from agent.model.config import NodeConfig, from_proto
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.engine import EngineSettings
from agent.reconcile.node import VAULT_READY, NodeReconciler
from agent.reconcile.workloads import Workloads
from agent.reconcile.workspace import WorkloadDrivers, WorkloadSettings, Workspace
from controller.configs import config_from_document
from tests.unit.blob_server import Blob, BlobServer, blob_server, serve

DEVICE = "6d3b3b4e-8a3c-4c47-9d41-000000000001"
DS_HTTP = "6d3b3b4e-8a3c-4c47-9d41-0000000000d1"
DS_OCI = "6d3b3b4e-8a3c-4c47-9d41-0000000000d2"
TREE_DISK = "6d3b3b4e-8a3c-4c47-9d41-0000000000c1"
TREE_IMAGE = "6d3b3b4e-8a3c-4c47-9d41-0000000000c2"
VOL_DISK = "6d3b3b4e-8a3c-4c47-9d41-0000000000b1"
VOL_ROOT = "6d3b3b4e-8a3c-4c47-9d41-0000000000b2"
VOL_DATA = "6d3b3b4e-8a3c-4c47-9d41-0000000000b3"
APP_VM = "6d3b3b4e-8a3c-4c47-9d41-0000000000a1"
APP_CT = "6d3b3b4e-8a3c-4c47-9d41-0000000000a2"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_image() -> tuple[dict[str, tuple[bytes, str]], str]:
    """A one-layer image: (registry objects by digest, manifest digest)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        body = b"hello from the layer\n"
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    layer_tar = raw.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(layer_tar)}"]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": f"sha256:{sha(config)}",
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": f"sha256:{sha(layer)}",
                }
            ],
        }
    ).encode()
    objects = {
        f"sha256:{sha(manifest)}": (
            manifest,
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
        f"sha256:{sha(config)}": (config, "application/octet-stream"),
        f"sha256:{sha(layer)}": (layer, "application/octet-stream"),
    }
    return objects, sha(manifest)


@dataclass
class Registry:
    port: int = 0
    repository: str = "team/app"
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    async def serve(self, request: web.Request) -> web.Response:
        found = self.objects.get(request.match_info["digest"])
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[0], headers={"Content-Type": found[1]})


@dataclass
class Env:
    root: Path
    server: BlobServer
    registry: Registry
    manifest: str
    disk: bytes
    runtime: RuntimeItems
    containers: Any
    hypervisor: Any
    vault_open: bool = True
    workloads: Workloads | None = None
    reconciler: NodeReconciler | None = None
    #: Every workspace made (a restart makes a new one); closed at the end.
    made: list[Workloads] = field(default_factory=list)

    @property
    def vault(self) -> Path:
        return self.root / "vault"

    def new_reconciler(self) -> NodeReconciler:
        """A reconciler as after an agent restart: new engine and configurators, same system."""
        ws = Workspace(
            root=lambda: self.vault if self.vault_open else None,
            items=lambda: self.runtime.current,
            settings=WorkloadSettings(vm_halt_grace=0.5, container_halt_grace=0.5,
                                      watch_interval=0.2, reserve=0),
        )  # fmt: skip
        self.workloads = Workloads(WorkloadDrivers(self.containers, self.hypervisor), ws)
        self.made.append(self.workloads)
        self.reconciler = NodeReconciler(
            self.runtime,
            workloads=self.workloads,
            settings=EngineSettings(resync_interval=3600),
        )
        self.reconciler.set_condition(VAULT_READY, None if self.vault_open else "vault locked")
        return self.reconciler

    disk_format: str = "RAW"
    vm_memory_kib: int = 65536
    vm_user_data: bytes = b"#cloud-config\nhostname: vm\n"

    def document(self, **overrides: Any) -> dict[str, Any]:
        """Config with a VM app (HTTP disk) and a container app (OCI image + blank volume)."""
        ct_user = "FOO=bar\nGREETING=hello world\n"
        doc: dict[str, Any] = {
            "id": {"uuid": DEVICE, "version": "1"},
            "configItems": [{"key": "blob.download.max.retries", "value": "1"}],
            "datastores": [
                {"id": DS_HTTP, "dType": "DsHttps", "fqdn": f"https://127.0.0.1:{self.server.port}",
                 "dpath": "blob", "dsCertPEM": [_b64(self.server.ca_pem)]},
                {"id": DS_OCI, "dType": "DsContainerRegistry",
                 "fqdn": f"docker://127.0.0.1:{self.registry.port}"},
            ],
            "contentInfo": [
                {"uuid": TREE_DISK, "URL": "disk.raw", "iformat": self.disk_format,
                 "displayName": "disk",
                 "sha256": sha(self.disk), "dsIdsList": [DS_HTTP]},
                {"uuid": TREE_IMAGE, "URL": self.registry.repository, "iformat": "CONTAINER",
                 "displayName": "image", "sha256": self.manifest, "dsIdsList": [DS_OCI]},
            ],
            "volumes": [
                {"uuid": VOL_DISK, "displayName": "vm-disk", "maxsizebytes": 4 * 1024 * 1024,
                 "origin": {"type": "VCOT_DOWNLOAD", "downloadContentTreeID": TREE_DISK}},
                {"uuid": VOL_ROOT, "displayName": "ct-root",
                 "origin": {"type": "VCOT_DOWNLOAD", "downloadContentTreeID": TREE_IMAGE}},
                {"uuid": VOL_DATA, "displayName": "ct-data", "maxsizebytes": 1024 * 1024,
                 "origin": {"type": "VCOT_BLANK"}},
            ],
            "apps": [
                {"uuidandversion": {"uuid": APP_VM, "version": "1"}, "displayname": "vm-app",
                 "activate": True, "userData": _b64(self.vm_user_data),
                 "fixedresources": {"memory": self.vm_memory_kib, "vcpus": 1,
                                    "virtualizationMode": "HVM"},
                 "volumeRefList": [{"uuid": VOL_DISK}]},
                {"uuidandversion": {"uuid": APP_CT, "version": "1"}, "displayname": "ct-app",
                 "activate": True, "userData": _b64(ct_user.encode()),
                 "fixedresources": {"memory": 65536, "vcpus": 1,
                                    "virtualizationMode": "NOHYPER"},
                 "volumeRefList": [{"uuid": VOL_ROOT}, {"uuid": VOL_DATA, "mountDir": "/data"}]},
            ],
        }  # fmt: skip
        doc.update(overrides)
        return doc

    def config(self, doc: dict[str, Any] | None = None) -> NodeConfig:
        return from_proto(config_from_document(doc if doc is not None else self.document()))

    async def apply(self, doc: dict[str, Any] | None = None, within: float = 20.0) -> bool:
        rec = self.reconciler or self.new_reconciler()
        return await rec.apply(self.config(doc), within)

    def phases(self) -> dict[tuple[str, str], str]:
        assert self.reconciler is not None
        return {(o.kind, o.id): o.phase for o in self.reconciler.owners() if o.phase}

    def app(self, doc: dict[str, Any], app_id: str) -> dict[str, Any]:
        return next(a for a in doc["apps"] if a["uuidandversion"]["uuid"] == app_id)


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with blob_server(tmp_path / "tls") as server:
        disk = b"\x00" * 65536 + b"a raw disk" + b"\x00" * 65526
        server.blobs["disk.raw"] = Blob(disk)
        reg = Registry()
        reg.objects, manifest = make_image()
        app = web.Application()
        app.router.add_get("/v2/team/app/{kind}/{digest}", reg.serve)
        hv = FakeHypervisor(HypervisorSettings("wl-node", tmp_path / "domains"))
        async with serve(app) as reg.port:
            e = Env(tmp_path, server, reg, manifest, disk, RuntimeItems(),
                    FakeContainerRuntime("wl-node"), hv)  # fmt: skip
            try:
                yield e
            finally:
                for made in e.made:
                    await made.close()
