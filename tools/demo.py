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
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.harness import Controller, Node

SAMPLE = {
    "configItems": [
        {"key": "timer.config.interval", "value": "10"},
        {"key": "timer.metric.interval", "value": "30"},
    ],
    "datastores": [{"id": "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0001", "dType": "DsContainerRegistry",
                    "fqdn": "docker://127.0.0.1:5000"}],
    "contentInfo": [{"uuid": "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0002", "URL": "demo/busybox:latest",
                     "iformat": "CONTAINER", "displayName": "busybox",
                     "dsIdsList": ["9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0001"]}],
    "volumes": [{"uuid": "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0003", "displayName": "busybox-root",
                 "origin": {"type": "VCOT_DOWNLOAD",
                            "downloadContentTreeID": "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0002"}}],
    "networkInstances": [{"uuidandversion": {"uuid": "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0004",
                                             "version": "1"},
                          "displayname": "demo-local", "instType": "ZnetInstLocal",
                          "activate": True, "ipType": "IPV4",
                          "ip": {"subnet": "10.88.0.0/24", "gateway": "10.88.0.1",
                                 "dhcpRange": {"start": "10.88.0.10", "end": "10.88.0.100"}}}],
    "apps": [{"uuidandversion": {"uuid": "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0005", "version": "1"},
              "displayname": "hello", "activate": True,
              "fixedresources": {"memory": 65536, "vcpus": 1,
                                 "virtualizationMode": "NOHYPER"},
              "volumeRefList": [{"uuid": "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0003"}],
              "interfaces": [{"name": "eth0", "networkId": "9b3a6a35-1bd6-4d8e-9f00-2f9c6f4a0004",
                              "acls": [{"id": 1, "matches": [{"type": "ip",
                                                             "value": "0.0.0.0/0"}]}]}]}],
}  # fmt: skip


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
    base = args.state or Path(tempfile.mkdtemp(prefix="eve-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    ctl = Controller(base / "controller")
    node: Node | None = None
    try:
        print(f"state in {base}")
        ctl.init()
        # New devices start polling every 10 s (the project default), so the demo moves quickly.
        ctl.set_default_config({"configItems": SAMPLE["configItems"]})
        swtpm = not args.no_tpm and os.geteuid() == 0 and shutil.which("swtpm") is not None
        node = Node(base / "node", ctl, serial="demo-node-1", swtpm=swtpm)
        print("node: emulated, with its own swtpm" if swtpm else "node: software keys (no TPM)")
        ctl.start()
        print(f"controller listening on https://{ctl.address}, log in {ctl.state.parent}")
        node.start()
        uuid = node.wait_onboarded(60)
        print(f"node onboarded as {uuid}")
        ctl.set_config(uuid, SAMPLE)
        print("sample config pushed; waiting for the node to apply it ...")
        node.wait_status(lambda s: "hello" in s.get("apps", []), 60, "the sample config")
        time.sleep(1)
        print()
        import subprocess

        subprocess.run(
            [str(Path(sys.executable).parent / "eve-agent"), "--root", str(node.root), "status"],
            check=False,
        )
        print()
        print("controller view:")
        print(ctl.cli("device", "show", uuid).stdout)
        print("running; Ctrl-C stops the node and the controller")
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while not stopping and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.5)
    finally:
        # Stop first, print after: output may be gone (a closed pipe) and must not stop cleanup.
        if node is not None:
            node.shutdown()
        ctl.stop()
        with contextlib.suppress(OSError):
            print("stopped node and controller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
