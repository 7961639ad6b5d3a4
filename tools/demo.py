"""``make demo``: a controller and one node on loopback; onboard, push a sample config, show status.

Stops everything cleanly on Ctrl-C (or after ``--seconds``).  State goes to a temporary directory
unless ``--state DIR`` is given, so two demos never collide.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.harness import Controller, Node
from tests.e2e.sample_apps import (
    CT_NAME,
    VM_NAME,
    FileServer,
    SampleImages,
    apps_config,
    build_images,
    open_path_for_qemu,
)

NI_UUID = "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0004"
NETWORK: dict[str, Any] = {
    "networkInstances": [{"uuidandversion": {"uuid": "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0004",
                                             "version": "1"},
                          "displayname": "demo-local", "instType": "ZnetInstLocal",
                          "activate": True, "ipType": "IPV4",
                          "ip": {"subnet": "10.88.0.0/24", "gateway": "10.88.0.1",
                                 "dhcpRange": {"start": "10.88.0.10", "end": "10.88.0.100"}}}],
}  # fmt: skip
CONFIG_ITEMS = [
    {"key": "timer.config.interval", "value": "10"},
    {"key": "timer.metric.interval", "value": "30"},
]


def sample(images: SampleImages, disk_port: int) -> dict[str, Any]:
    """The demo's config: the test VM and the test container side by side, the container on
    the local network instance (a VM's NIC needs a bridge in the host's own namespace, where
    libvirt makes its taps; the demo node's networks live in a namespace of its own)."""
    doc = {"configItems": CONFIG_ITEMS, **NETWORK, **apps_config(images, disk_port)}
    for app in doc["apps"]:
        if app["displayname"] == CT_NAME:
            app["interfaces"] = [{"name": "eth0", "networkId": NI_UUID}]
    return doc


def show_reachable(node: Node, netns: str) -> None:
    """Ping each app address the node reports, from the node's own namespace."""
    for owner in node.status().get("owners", []):
        for iface in owner.get("interfaces", []):
            address = iface.split()[1]
            if address.count(".") != 3:
                continue
            done = subprocess.run(
                ["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "2", address],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            result = "answers" if done.returncode == 0 else "does not answer"
            print(f"{owner.get('name')} {iface}: {result} a ping from the node's namespace")


def wait_running(node: Node, seconds: float) -> dict[str, str]:
    """Wait until both sample apps run; returns each app's state.  TimeoutError otherwise."""
    deadline = time.monotonic() + seconds
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = node.status()
        states = {
            o.get("name", ""): o.get("phase", "")
            for o in status.get("owners", [])
            if o.get("kind") == "app"
        }
        if states.get(VM_NAME) == "RUNNING" and states.get(CT_NAME) == "RUNNING":
            return states
        time.sleep(1)
    raise TimeoutError(f"apps not running after {seconds:.0f} s: {states}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, help="where controller and node keep their state")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    parser.add_argument(
        "--no-tpm",
        action="store_true",
        help="software node instead of an emulated node with its own swtpm (needs root)",
    )
    args = parser.parse_args()
    # In /var/tmp, passable by QEMU's user: the VM's disk lives in the node's vault below it.
    base = args.state or Path(tempfile.mkdtemp(prefix="eve-demo-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    open_path_for_qemu(base)
    print("building (or finding) the test images ...")
    images = build_images()
    disks = FileServer(images.disk.parent)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    ctl = Controller(base / "controller")
    node: Node | None = None
    made_netns = ""
    try:
        print(f"state in {base}")
        ctl.init()
        # New devices start polling every 10 s (the project default), so the demo moves quickly.
        ctl.set_default_config({"configItems": CONFIG_ITEMS})
        swtpm = not args.no_tpm and os.geteuid() == 0 and shutil.which("swtpm") is not None
        # The node's network instances live in a namespace of its own, never the host's.
        netns = f"evedemo{os.getpid()}"
        subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
        made_netns = netns
        node = Node(base / "node", ctl, serial="demo-node-1", swtpm=swtpm, netns=netns)
        print("node: emulated, with its own swtpm" if swtpm else "node: software keys (no TPM)")
        ctl.start()
        print(f"controller listening on https://{ctl.address}, log in {ctl.state.parent}")
        node.start()
        uuid = node.wait_onboarded(60)
        print(f"node onboarded as {uuid}")
        ctl.set_config(uuid, sample(images, disks.port))
        print("sample config pushed: a VM and a container; waiting for both to run ...")
        started = time.monotonic()
        wait_running(node, 240)
        print(f"both apps running {time.monotonic() - started:.1f} s after the config was pushed")
        time.sleep(3)  # the next info report carries the running state to the controller
        print()
        subprocess.run(
            [str(Path(sys.executable).parent / "eve-agent"), "--root", str(node.root), "status"],
            check=False,
        )
        print()
        print("controller view:")
        print(ctl.cli("device", "show", uuid).stdout)
        print(ctl.cli("device", "objects", uuid).stdout)
        show_reachable(node, netns)
        print("running; Ctrl-C stops the node and the controller")
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while not stopping and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.5)
    finally:
        # Stop first, print after: output may be gone (a closed pipe) and must not stop cleanup.
        if node is not None:
            node.shutdown()  # and removes the node's apps
        ctl.stop()
        disks.close()
        if made_netns:
            subprocess.run(["ip", "netns", "del", made_netns], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            print("stopped node and controller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
