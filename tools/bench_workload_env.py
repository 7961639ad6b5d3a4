"""What the workload bench (``tools/bench_workloads.py``, ``tools/bench_appload.py``) stands on.

- :func:`ensure_services`: as root, ``tools/services.sh start`` (idempotent), then dockerd,
  libvirtd and the registry must answer; otherwise :class:`ServiceMissing`, which ``make bench``
  shows as an error row and a failed exit (never a silent skip).
- :func:`push_bench_image`: the bench's own image in the local registry
  (``eve-agent/bench-busybox``): the test image of ``images/container`` repacked as one new
  layer with a marker file.  It never shares a layer or an ID with the test image, so a "cold"
  start really downloads and loads everything, and the bench may remove it from dockerd without
  touching the shared test image.  It is built byte for byte the same on every run (same
  digests), so the registry keeps one copy, reused; nothing else is pushed.
- :class:`Documents`: config documents (datastores, content trees, one volume per app, the
  apps) in the controller's document form, turned into the agent's model.
- :class:`Scene`: the bench's node name (``bench<random>``) and its own directory in /var/tmp
  (mode 0711: QEMU must reach the disks), and :meth:`Scene.purge`, which removes every
  container, domain and QEMU log carrying that node name, the bench image and the directory.
  Synchronous on purpose: it also runs after Ctrl-C or a crash, outside any event loop.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.drivers.containers import NODE_LABEL, DockerSettings, container_prefix
from agent.drivers.domainxml import NAMESPACE, DomainXmlError, parse_mark_element
from agent.drivers.hypervisor import domain_prefix
from agent.model.config import NodeConfig, from_proto
from controller.configs import config_from_document

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
BENCH_REPO = "eve-agent/bench-busybox"
LIBVIRT_URI = "qemu:///system"
QEMU_LOGS = Path("/var/log/libvirt/qemu")
_MARKER = b"eve-agent workload bench image\n"
_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
_CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

Row = tuple[str, str, str, str]


class ServiceMissing(RuntimeError):
    """A service the workload bench needs is not there (or the bench cannot run as this user)."""


def ensure_services() -> None:
    """Start the services (root only; idempotent) and check that each answers.

    Raises ServiceMissing naming the service and why.
    """
    if os.geteuid() != 0:
        raise ServiceMissing("not root: the workload bench needs dockerd, libvirtd and a registry")
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "tools/services.sh"), "start"],
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ServiceMissing("tools/services.sh start did not finish in 240 s") from None
    if done.returncode != 0:
        raise ServiceMissing(f"tools/services.sh start failed: {done.stderr.strip()[-600:]}")
    try:
        docker_api().ping()
    except Exception as exc:  # the SDK raises anything when dockerd is away
        raise ServiceMissing(f"dockerd does not answer: {exc}") from exc
    try:
        import libvirt

        libvirt.open(LIBVIRT_URI).close()
    except Exception as exc:  # libvirtError or an import error
        raise ServiceMissing(f"libvirtd at {LIBVIRT_URI}: {exc}") from exc
    status, _, _ = _http("GET", f"http://{REGISTRY}/v2/")
    if status != 200:
        raise ServiceMissing(f"registry at {REGISTRY} answers {status}")


def docker_api() -> Any:
    """A low-level Docker SDK client (``docker.APIClient``) on dockerd's socket."""
    import docker

    return docker.APIClient(base_url=DockerSettings().base_url, version="auto", timeout=120)


# --- the bench image ---------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request to the loopback registry: (status, headers, body); never raises
    for an HTTP status, only for a connection failure (ServiceMissing)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError as exc:
        raise ServiceMissing(f"registry at {REGISTRY}: {exc}") from exc


@dataclass(frozen=True)
class BenchImage:
    """The bench image in the local registry: manifest digest (hex) and image ID."""

    repo: str
    manifest: str
    #: ``sha256:<hex>`` of the config blob: dockerd's image ID, pulled or loaded.
    image_id: str
    size: int

    @property
    def ref(self) -> str:
        return f"{REGISTRY}/{self.repo}@sha256:{self.manifest}"


def _push_blob(repo: str, data: bytes) -> str:
    digest = f"sha256:{_sha(data)}"
    base = f"http://{REGISTRY}/v2/{repo}/blobs"
    if _http("HEAD", f"{base}/{digest}")[0] == 200:
        return digest
    status, headers, text = _http("POST", f"{base}/uploads/")
    location = headers.get("Location") or headers.get("location") or ""
    if status != 202 or not location:
        raise RuntimeError(f"registry refused an upload to {repo}: {status} {text[:200]!r}")
    url = urllib.parse.urljoin(f"http://{REGISTRY}/", location)
    url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
    status, _, text = _http("PUT", url, data, {"Content-Type": "application/octet-stream"})
    if status != 201:
        raise RuntimeError(f"registry refused blob {digest}: {status} {text[:200]!r}")
    return digest


def push_bench_image(test_ref: str) -> BenchImage:
    """Make (or find) the bench image from the test image ``test_ref`` (``host/repo@sha256:``).

    Idempotent: the same test image gives the same bench image, pushed once.  Raises
    RuntimeError when the test image is not one gzip layer or the registry refuses a push.
    """
    repo = test_ref.split("/", 1)[1].split("@", 1)[0]
    digest = test_ref.rsplit("@", 1)[1]
    v2 = f"http://{REGISTRY}/v2/{repo}"
    status, _, raw = _http("GET", f"{v2}/manifests/{digest}", headers={"Accept": _MANIFEST_V2})
    if status != 200:
        raise RuntimeError(f"the registry has no test image {test_ref} ({status})")
    manifest = json.loads(raw)
    if len(manifest.get("layers", ())) != 1:
        raise RuntimeError(f"{test_ref} has {len(manifest.get('layers', ()))} layers, not one")
    config = json.loads(_http("GET", f"{v2}/blobs/{manifest['config']['digest']}")[2])
    layer_gz = _http("GET", f"{v2}/blobs/{manifest['layers'][0]['digest']}")[2]
    buffer = io.BytesIO(gzip.decompress(layer_gz))
    with tarfile.open(fileobj=buffer, mode="a") as tar:
        info = tarfile.TarInfo(".eve-agent-bench")
        info.size, info.mtime, info.mode = len(_MARKER), 0, 0o644
        tar.addfile(info, io.BytesIO(_MARKER))
    new_tar = buffer.getvalue()
    layer = gzip.compress(new_tar, mtime=0)
    config["rootfs"] = {"type": "layers", "diff_ids": [f"sha256:{_sha(new_tar)}"]}
    config.pop("history", None)
    config_raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    new_manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": _MANIFEST_V2,
            "config": {"mediaType": _CONFIG_V1, "size": len(config_raw),
                       "digest": _push_blob(BENCH_REPO, config_raw)},
            "layers": [{"mediaType": _LAYER_GZIP, "size": len(layer),
                        "digest": _push_blob(BENCH_REPO, layer)}],
        },
        indent=3,
    ).encode()  # fmt: skip
    manifest_hex = _sha(new_manifest)
    url = f"http://{REGISTRY}/v2/{BENCH_REPO}/manifests/sha256:{manifest_hex}"
    if _http("HEAD", url, headers={"Accept": _MANIFEST_V2})[0] != 200:
        status, _, text = _http("PUT", url, new_manifest, {"Content-Type": _MANIFEST_V2})
        if status != 201:
            raise RuntimeError(f"registry refused the bench manifest: {status} {text[:200]!r}")
    return BenchImage(BENCH_REPO, manifest_hex, f"sha256:{_sha(config_raw)}", len(layer))


# --- config documents ----------------------------------------------------------------------


def oid(kind: str, n: int) -> str:
    """A stable UUID for the bench's object ``kind`` number ``n``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"eve-agent-bench/{kind}/{n}"))


DEVICE = oid("device", 0)


@dataclass(frozen=True)
class DiskSource:
    """The VM disk on the bench's HTTPS datastore."""

    port: int
    ca_pem: bytes
    sha256: str
    name: str = "disk.qcow2"


@dataclass
class Documents:
    """Config documents for the bench's node.  Content trees are in a config only while an app
    uses them, so a config without apps downloads nothing."""

    image: BenchImage | None = None
    disk: DiskSource | None = None
    items: dict[str, str] = field(default_factory=dict)
    version: int = 0

    def config(
        self, *, containers: Iterable[int] = (), vms: Iterable[int] = (), halted: Iterable[int] = ()
    ) -> NodeConfig:
        """The model of a config with container apps and VM apps by number (VM apps in
        ``halted`` have ``activate: false``).  Each call is a new config version."""
        self.version += 1
        cts, vm_list, off = list(containers), list(vms), set(halted)
        doc: dict[str, Any] = {
            "id": {"uuid": DEVICE, "version": str(self.version)},
            "configItems": [{"key": k, "value": v} for k, v in sorted(self.items.items())],
            "datastores": [], "contentInfo": [], "volumes": [], "apps": [],
        }  # fmt: skip
        if self.image is not None:
            doc["datastores"].append(
                {"id": oid("ds", 1), "dType": "DsContainerRegistry", "fqdn": f"docker://{REGISTRY}"}
            )
        if self.disk is not None:
            doc["datastores"].append(
                {"id": oid("ds", 2), "dType": "DsHttps", "fqdn": f"https://127.0.0.1:{self.disk.port}",
                 "dpath": "blob", "dsCertPEM": [base64.b64encode(self.disk.ca_pem).decode()]}
            )  # fmt: skip
        if cts:
            assert self.image is not None
            doc["contentInfo"].append(
                {"uuid": oid("tree", 1), "URL": self.image.repo, "iformat": "CONTAINER",
                 "displayName": "bench-image", "sha256": self.image.manifest,
                 "dsIdsList": [oid("ds", 1)]}
            )  # fmt: skip
        if vm_list:
            assert self.disk is not None
            doc["contentInfo"].append(
                {"uuid": oid("tree", 2), "URL": self.disk.name, "iformat": "QCOW2",
                 "displayName": "bench-disk", "sha256": self.disk.sha256,
                 "dsIdsList": [oid("ds", 2)]}
            )  # fmt: skip
        for n in cts:
            doc["volumes"].append(
                {"uuid": oid("ctvol", n), "displayName": f"ct-{n}",
                 "origin": {"type": "VCOT_DOWNLOAD", "downloadContentTreeID": oid("tree", 1)}}
            )  # fmt: skip
            doc["apps"].append(
                {"uuidandversion": {"uuid": oid("ct", n), "version": "1"},
                 "displayname": f"bench-ct-{n}", "activate": True,
                 "fixedresources": {"memory": 65536, "vcpus": 1,
                                    "virtualizationMode": "NOHYPER"},
                 "volumeRefList": [{"uuid": oid("ctvol", n)}]}
            )  # fmt: skip
        for n in vm_list:
            doc["volumes"].append(
                {"uuid": oid("vmvol", n), "displayName": f"vm-{n}",
                 "origin": {"type": "VCOT_DOWNLOAD", "downloadContentTreeID": oid("tree", 2)}}
            )  # fmt: skip
            user_data = base64.b64encode(b"#cloud-config\nhostname: bench\n").decode()
            doc["apps"].append(
                {"uuidandversion": {"uuid": oid("vm", n), "version": "1"},
                 "displayname": f"bench-vm-{n}", "activate": n not in off,
                 "userData": user_data,
                 "fixedresources": {"memory": 128 * 1024, "vcpus": 1,
                                    "virtualizationMode": "HVM"},
                 "volumeRefList": [{"uuid": oid("vmvol", n)}]}
            )  # fmt: skip
        return from_proto(config_from_document(doc))


# --- the bench's node and its cleanup ----------------------------------------------------------


@dataclass
class Scene:
    """The bench's node name and directory; everything made carries the one or lives in the
    other.  ``image_id``: the bench image, removed from dockerd by :meth:`purge`."""

    node: str
    base: Path
    image_id: str | None = None

    @classmethod
    def make(cls) -> Scene:
        node = f"bench{uuid.uuid4().hex[:8]}"
        base = Path(tempfile.mkdtemp(prefix=f"eve-{node}-", dir="/var/tmp"))
        os.chmod(base, 0o711)
        return cls(node, base)

    def subdir(self, name: str) -> Path:
        path = self.base / name
        path.mkdir(mode=0o711, exist_ok=True)
        os.chmod(path, 0o711)
        return path

    def remove_containers(self) -> None:
        """Force-remove every container with this node's label."""
        api = docker_api()
        try:
            found = api.containers(all=True, filters={"label": f"{NODE_LABEL}={self.node}"})
            for container in found:
                api.remove_container(container["Id"], force=True, v=True)
        finally:
            api.close()

    def remove_image(self) -> None:
        """Remove the bench image from dockerd (only ever the bench's own image)."""
        if self.image_id is None:
            return
        import docker.errors

        api = docker_api()
        try:
            api.remove_image(self.image_id, force=True)
        except docker.errors.NotFound:
            pass
        finally:
            api.close()

    def remove_domains(self, *, keep_files: bool = False) -> None:
        """Destroy and undefine this node's domains (by name prefix and our metadata mark),
        and their QEMU logs unless ``keep_files``."""
        import libvirt

        prefix = domain_prefix(self.node)
        conn = libvirt.open(LIBVIRT_URI)
        try:
            for dom in conn.listAllDomains(0):
                if not dom.name().startswith(prefix) or not self._ours(libvirt, dom):
                    continue
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(getattr(libvirt, "VIR_DOMAIN_UNDEFINE_NVRAM", 0))
        finally:
            conn.close()
        if not keep_files:
            for log_file in QEMU_LOGS.glob(f"{prefix}*.log"):
                log_file.unlink(missing_ok=True)

    def _ours(self, libvirt: Any, dom: Any) -> bool:
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
            return parse_mark_element(xml).node == self.node
        except (libvirt.libvirtError, DomainXmlError):
            return False

    def purge(self, attempts: int = 4, pause: float = 5.0) -> list[str]:
        """Remove everything the bench made; returns what could not be removed (and why).

        A step that fails is tried again ``attempts`` times, ``pause`` seconds apart: dockerd
        or libvirtd may be restarting (other tests on this host restart them).
        """
        problems = []
        steps = (
            ("containers", self.remove_containers),
            ("domains", self.remove_domains),
            ("bench image", self.remove_image),
            ("directory", lambda: shutil.rmtree(self.base)),
        )
        for what, step in steps:
            for attempt in range(1, attempts + 1):
                try:
                    step()
                    break
                except FileNotFoundError:
                    break
                except Exception as exc:  # noqa: BLE001 - reported to the caller, never swallowed
                    if attempt == attempts:
                        problems.append(f"{what}: {exc}")
                    else:
                        time.sleep(pause)
        return problems

    @property
    def container_prefix(self) -> str:
        return container_prefix(self.node)
