"""Apps from the controller, end to end: our controller, the agent process, dockerd, libvirtd +
QEMU, the local registry and an HTTP datastore on loopback.

The node runs the test VM and the test container of images/ side by side (the sample of
tests/e2e/sample_apps.py, which the demo shows too); the operator sees them in the node's
status and the controller's object list.  The agent is killed (SIGKILL) while the VM's disk
downloads and again while its domain boots, and converges each time without making anything
twice; dockerd and libvirtd restart under running apps and the agent converges.

Nodes live under /var/tmp with directories QEMU's user can pass (the VM disk is in the node's
vault); teardown removes the node's containers and domains, also when a test fails.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Controller, Node, require, sample_images, wait_for
from tests.e2e.sample_apps import (
    APP_CT,
    APP_VM,
    CT_GREETING,
    CT_NAME,
    VM_MARKER,
    VM_NAME,
    FileServer,
    SampleImages,
    apps_config,
    host_name,
    open_path_for_qemu,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = [{"key": "timer.config.interval", "value": "5"}]


@dataclass
class Site:
    controller: Controller
    node: Node
    images: SampleImages
    base: Path

    def docker(self, *args: str) -> str:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60,
                              check=False).stdout  # fmt: skip

    def containers(self) -> list[str]:
        from agent.drivers.containers import container_prefix

        prefix = container_prefix(host_name(self.node.root))
        return [n for n in self.docker("ps", "-a", "--format", "{{.Names}}").split()
                if n.startswith(prefix)]  # fmt: skip

    def domains(self) -> list[str]:
        from agent.drivers.hypervisor import domain_prefix

        prefix = domain_prefix(host_name(self.node.root))
        out = subprocess.run(
            ["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
        return [n for n in out.split() if n.startswith(prefix)]  # fmt: skip

    def phases(self) -> dict[str, str]:
        status = self.node.status()
        if not status or self.node.agent is None or status.get("pid") != self.node.agent.proc.pid:
            return {}
        return {
            o.get("name", ""): o.get("phase", "")
            for o in status.get("owners", [])
            if o.get("kind") == "app"
        }

    def wait_phases(self, want: dict[str, str], seconds: float) -> None:
        wait_for(lambda: all(self.phases().get(k) == v for k, v in want.items()), seconds,
                 f"apps {want}")  # fmt: skip


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    images = sample_images("apps end to end")
    base = Path(tempfile.mkdtemp(prefix="eve-e2e-apps-", dir="/var/tmp"))
    open_path_for_qemu(base)
    ctl = Controller(base / "controller")
    ctl.init()
    ctl.set_default_config({"configItems": FAST})
    ctl.start()
    node = Node(base / "node", ctl, serial=f"e2e-apps-{base.name[-6:]}")
    try:
        yield Site(ctl, node, images, base)
    finally:
        node.shutdown()  # removes the node's containers and domains too
        ctl.stop()
        shutil.rmtree(base, ignore_errors=True)


def config(site: Site, disk_port: int, **app_changes: dict[str, Any]) -> dict[str, Any]:
    doc = {"configItems": FAST, **apps_config(site.images, disk_port)}
    for app in doc["apps"]:
        app.update(app_changes.get(app["displayname"], {}))
    return doc


def test_apps_from_the_controller(site: Site) -> None:
    disks = FileServer(site.images.disk.parent)
    try:
        site.node.start()
        uuid = site.node.wait_onboarded()
        site.controller.set_config(uuid, config(site, disks.port))
        site.wait_phases({VM_NAME: "RUNNING", CT_NAME: "RUNNING"}, 240)

        # The controller sees them running.
        def reported() -> bool:
            out = site.controller.cli("device", "objects", uuid).stdout
            return all(
                any(n in line and "RUNNING" in line for line in out.splitlines())
                for n in (VM_NAME, CT_NAME)
            )

        wait_for(reported, 60, "the controller to see both apps running")

        # The VM got its user data (on its console), the container its environment.
        consoles = list((site.node.root / "run" / "domains").glob("*/console.log"))
        wait_for(lambda: any(VM_MARKER in p.read_text(errors="replace") for p in consoles),
                 90, "the VM to print its user data")  # fmt: skip
        [container] = site.containers()
        wait_for(lambda: f"GREETING={CT_GREETING}" in site.docker("logs", container), 30,
                 "the container to print its environment")  # fmt: skip

        # Both outputs reach the controller as the apps' logs.
        def app_log(app: str, text: str) -> bool:
            out = site.controller.cli("logs", uuid, "--app", app, check=False).stdout
            return text in out

        wait_for(lambda: app_log(APP_CT, f"GREETING={CT_GREETING}"), 90,
                 "the container's output in the controller's app logs")  # fmt: skip
        wait_for(lambda: app_log(APP_VM, VM_MARKER), 90,
                 "the VM's console in the controller's app logs")  # fmt: skip

        # Deactivate: both halt, volumes stay; activate: both run again.
        off = {VM_NAME: {"activate": False}, CT_NAME: {"activate": False}}
        site.controller.set_config(uuid, config(site, disks.port, **off))
        site.wait_phases({VM_NAME: "HALTED", CT_NAME: "HALTED"}, 120)
        assert not site.containers() and not site.domains()
        site.controller.set_config(uuid, config(site, disks.port))
        site.wait_phases({VM_NAME: "RUNNING", CT_NAME: "RUNNING"}, 120)

        # Delete: nothing of the apps is left on the host or in the vault.
        site.controller.set_config(uuid, {"configItems": FAST})
        wait_for(lambda: not site.phases() and not site.containers() and not site.domains(),
                 120, "the apps to be deleted")  # fmt: skip
        vault = site.node.root / "persist" / "vault"
        wait_for(lambda: not list((vault / "volumes").iterdir()), 30, "the volumes to go")
        assert not list((vault / "records").rglob("*.json"))
    finally:
        disks.close()


def test_killed_while_downloading_and_booting(site: Site) -> None:
    # About 10 MB at 64 KiB per 50 ms: the disk takes several seconds to arrive.
    disks = FileServer(site.images.disk.parent, delay=0.05)
    try:
        site.node.start()
        uuid = site.node.wait_onboarded()
        site.controller.set_config(uuid, config(site, disks.port))
        partial = site.node.root / "persist" / "vault" / "downloads" / "partial"
        wait_for(lambda: partial.exists() and any(p.stat().st_size > 0 for p in partial.iterdir()),
                 120, "the VM disk download to be under way")  # fmt: skip
        assert site.node.agent is not None
        site.node.agent.kill()
        site.node.start()
        site.wait_phases({VM_NAME: "RUNNING", CT_NAME: "RUNNING"}, 240)
        assert len(site.domains()) == 1 and len(site.containers()) == 1

        # Purge the VM and kill the agent as soon as its new domain exists.
        before = set(site.domains())
        site.controller.set_config(
            uuid, config(site, disks.port, **{VM_NAME: {"purge": {"counter": 1}}})
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = set(site.domains())
            if now and site.phases().get(VM_NAME) in ("BOOTING", "HALTING", "CREATING_VOLUME"):
                break
            time.sleep(0.05)
        assert site.node.agent is not None
        site.node.agent.kill()
        site.node.start()
        site.wait_phases({VM_NAME: "RUNNING", CT_NAME: "RUNNING"}, 240)
        assert len(site.domains()) == 1 and len(site.containers()) == 1
        assert before  # the first domain existed
        volumes = site.node.root / "persist" / "vault" / "volumes"
        names = sorted(p.name for p in volumes.iterdir())
        assert len(names) == 1 and names[0].endswith(".qcow2"), names  # no stray volume
        assert not list(partial.iterdir())  # no stray download
    finally:
        disks.close()


def test_runtimes_restart_under_running_apps(site: Site) -> None:
    services = ["bash", str(ROOT / "tools/services.sh")]
    probe = subprocess.run([*services, "status"], capture_output=True, text=True, check=False)
    if "started by services.sh" not in probe.stdout:
        require("runtime restarts", "dockerd and libvirtd were not started by services.sh")
    disks = FileServer(site.images.disk.parent)
    try:
        site.node.start()
        uuid = site.node.wait_onboarded()
        site.controller.set_config(uuid, config(site, disks.port))
        site.wait_phases({VM_NAME: "RUNNING", CT_NAME: "RUNNING"}, 240)

        subprocess.run([*services, "restart", "dockerd"], check=True, capture_output=True,
                       timeout=180)  # fmt: skip
        # dockerd stopped the container; the agent starts it again.
        wait_for(lambda: site.docker("inspect", "-f", "{{.State.Running}}",
                                     *site.containers()).strip() == "true",
                 120, "the container to run again")  # fmt: skip
        site.wait_phases({CT_NAME: "RUNNING"}, 60)

        subprocess.run([*services, "restart", "libvirtd"], check=True, capture_output=True,
                       timeout=180)  # fmt: skip
        # The agent reconnects: a restart of the VM goes through the new connection.
        [domain] = site.domains()
        [container] = site.containers()
        before = site.docker("inspect", "-f", "{{.Id}}", container).strip()
        site.controller.set_config(
            uuid, config(site, disks.port, **{VM_NAME: {"restart": {"counter": 1}},
                                              CT_NAME: {"restart": {"counter": 1}}})
        )  # fmt: skip
        wait_for(lambda: site.docker("inspect", "-f", "{{.Id}}", container).strip()
                 not in ("", before), 120, "the container to be restarted")  # fmt: skip
        site.wait_phases({VM_NAME: "RUNNING", CT_NAME: "RUNNING"}, 180)
        assert site.domains() == [domain] and len(site.containers()) == 1
    finally:
        disks.close()
