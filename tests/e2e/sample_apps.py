"""The sample workloads of the demo and the end-to-end tests: the test VM and the test container
of images/, a config that runs them side by side, and a datastore that serves the VM's disk.

The container image comes from the local registry (127.0.0.1:5000, pushed by
images/container/build.sh); the VM disk is served over HTTP on loopback by :class:`FileServer`
(a datastore of type DsHttp), optionally slowed down so a test can stop the agent mid-download.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.settings import AgentSettings, NodePaths

ROOT = Path(__file__).resolve().parents[2]

DS_HTTP = "7a1e5f0c-3b2d-4c8e-9f10-00000000d001"
DS_REGISTRY = "7a1e5f0c-3b2d-4c8e-9f10-00000000d002"
TREE_DISK = "7a1e5f0c-3b2d-4c8e-9f10-00000000c001"
TREE_IMAGE = "7a1e5f0c-3b2d-4c8e-9f10-00000000c002"
VOL_DISK = "7a1e5f0c-3b2d-4c8e-9f10-00000000b001"
VOL_ROOT = "7a1e5f0c-3b2d-4c8e-9f10-00000000b002"
APP_VM = "7a1e5f0c-3b2d-4c8e-9f10-00000000a001"
APP_CT = "7a1e5f0c-3b2d-4c8e-9f10-00000000a002"
VM_NAME, CT_NAME = "vm-demo", "hello"
#: What the apps' user data carries, to look for on the VM's console and in the container's
#: environment.
VM_MARKER = "eve-agent-demo-vm-userdata"
CT_GREETING = "hello from the controller"


@dataclass(frozen=True)
class SampleImages:
    """The test images: the VM disk (path, SHA-256) and the container (repo, digest)."""

    disk: Path
    disk_sha256: str
    image_repo: str
    image_digest: str


def build_images() -> SampleImages:
    """Build (or find in the cache) the test images; RuntimeError saying why not."""
    done = subprocess.run(
        ["bash", str(ROOT / "images/build.sh"), "container", "vm"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"images/build.sh failed: {done.stderr[-1500:]}")
    lines = done.stdout.splitlines()
    image = next(line for line in lines if "@sha256:" in line).strip()
    disk_line = next(line for line in lines if line.endswith("/disk.qcow2"))
    sha, path = disk_line.split()
    repo, _, digest = image.partition("@")
    return SampleImages(Path(path), sha, repo, digest.removeprefix("sha256:"))


class _Handler(http.server.SimpleHTTPRequestHandler):
    # Set per server (see FileServer): seconds to sleep per 64 KiB sent.
    delay = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        return

    def copyfile(self, source: Any, outputfile: Any) -> None:
        while chunk := source.read(64 * 1024):
            outputfile.write(chunk)
            if self.delay:
                time.sleep(self.delay)


class FileServer:
    """Serves one directory over HTTP on 127.0.0.1 (a datastore of type DsHttp), in a thread.
    ``delay`` slows every 64 KiB down (a slow datastore)."""

    def __init__(self, directory: Path, *, delay: float = 0.0) -> None:
        handler: type[_Handler] = type("Handler", (_Handler,), {"delay": delay})

        def make(*args: Any, **kwargs: Any) -> http.server.BaseHTTPRequestHandler:
            return handler(*args, directory=str(directory), **kwargs)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def apps_config(images: SampleImages, disk_port: int) -> dict[str, Any]:
    """Datastores, content trees, volumes and the two apps (a protobuf-JSON fragment)."""
    return {
        "datastores": [
            {"id": DS_HTTP, "dType": "DsHttp", "fqdn": f"http://127.0.0.1:{disk_port}"},
            {"id": DS_REGISTRY, "dType": "DsContainerRegistry",
             "fqdn": f"docker://{images.image_repo.split('/', 1)[0]}"},
        ],
        "contentInfo": [
            {"uuid": TREE_DISK, "URL": images.disk.name, "iformat": "QCOW2",
             "displayName": "test-vm-disk", "sha256": images.disk_sha256,
             "dsIdsList": [DS_HTTP]},
            {"uuid": TREE_IMAGE, "URL": images.image_repo.split("/", 1)[1],
             "iformat": "CONTAINER", "displayName": "test-busybox",
             "sha256": images.image_digest, "dsIdsList": [DS_REGISTRY]},
        ],
        "volumes": [
            {"uuid": VOL_DISK, "displayName": "vm-disk",
             "origin": {"type": "VCOT_DOWNLOAD", "downloadContentTreeID": TREE_DISK}},
            {"uuid": VOL_ROOT, "displayName": "hello-root",
             "origin": {"type": "VCOT_DOWNLOAD", "downloadContentTreeID": TREE_IMAGE}},
        ],
        "apps": [
            {"uuidandversion": {"uuid": APP_VM, "version": "1"}, "displayname": VM_NAME,
             "activate": True, "userData": _b64(f"#cloud-config\n# {VM_MARKER}\n"),
             "fixedresources": {"memory": 131072, "vcpus": 1, "virtualizationMode": "HVM"},
             "volumeRefList": [{"uuid": VOL_DISK}]},
            {"uuidandversion": {"uuid": APP_CT, "version": "1"}, "displayname": CT_NAME,
             "activate": True, "userData": _b64(f"GREETING={CT_GREETING}\n"),
             "fixedresources": {"memory": 65536, "vcpus": 1, "virtualizationMode": "NOHYPER"},
             "volumeRefList": [{"uuid": VOL_ROOT}]},
        ],
    }  # fmt: skip


def host_name(node_root: Path) -> str:
    """The name the agent of ``node_root`` gives its containers and domains on the host."""
    return AgentSettings(paths=NodePaths.from_root(node_root)).host_name


def purge_host_objects(node_root: Path) -> None:
    """Remove the containers and domains of the node at ``node_root`` (apps outlive their
    agent by design: a test or the demo ends them here).  Best effort; never raises."""
    name = host_name(node_root)
    from agent.drivers.containers import container_prefix
    from agent.drivers.hypervisor import domain_prefix

    prefix = container_prefix(name)
    try:
        out = subprocess.run(
            ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
            timeout=60, check=False,
        ).stdout.split()  # fmt: skip
        for cname in out:
            if cname.startswith(prefix):
                subprocess.run(["docker", "rm", "-f", cname], capture_output=True, timeout=60,
                               check=False)  # fmt: skip
        dprefix = domain_prefix(name)
        virsh = ["virsh", "-c", "qemu:///system"]
        names = subprocess.run(
            [*virsh, "list", "--all", "--name"], capture_output=True, text=True, timeout=60,
            check=False,
        ).stdout.split()  # fmt: skip
        for dname in names:
            if dname.startswith(dprefix):
                subprocess.run([*virsh, "destroy", dname], capture_output=True, timeout=60,
                               check=False)  # fmt: skip
                subprocess.run([*virsh, "undefine", "--nvram", dname], capture_output=True,
                               timeout=60, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        pass


def stop_dnsmasqs(node_root: Path) -> None:
    """Stop the dnsmasq processes of the node at ``node_root`` (they outlive their agent by
    design, as apps do).  Best effort; never raises."""
    marker = f"--conf-file={(node_root / 'run' / 'dnsmasq').absolute()}/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.decode(errors="replace").startswith(marker) for arg in argv):
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGTERM)


def open_path_for_qemu(path: Path) -> None:
    """QEMU runs as libvirt-qemu: let it pass every directory down to ``path`` (search only)."""
    for directory in [path, *path.parents]:
        if directory == Path("/"):
            break
        mode = directory.stat().st_mode & 0o777
        if mode & 0o011 != 0o011:
            os.chmod(directory, mode | 0o011)
