"""Base OS A/B updates of the node image, booted as a machine (UEFI, swtpm) against the test
controller: an update whose agent does not start falls back by itself, an update to a good
image is committed.

The update images are made from the node image's own root slot (IMGA), read out of the cached
disk, with ``debugfs -w`` (no mounts): a new ``/etc/eve-release`` (the version the controller
names), and for the bad one a drop-in that makes ``eve-agent.service`` run ``/bin/false``.  Each
is gzip-compressed and served over HTTP from the host's loopback; the guest reaches it through
one more forward of QEMU's user networking (``Node(extra_ports=...)``).

1. The node onboards and attests; it reports IMGA active with the image's version, IMGB unused.
2. ``baseos set`` to the bad image: the agent downloads and verifies it (the content kind),
   writes IMGB, its kernel and boot entry to the ESP, sets the one-shot boot entry and reboots.
   IMGB boots, its agent never starts; the trial guard reboots after its deadline; the one-shot
   entry is spent, so IMGA starts, and its agent reports IMGB's FALLBACK with the guard's
   reason.  The same version is not tried again.
3. ``baseos set`` to the good image: written, rebooted into, tested for
   ``timer.test.baseimage.update`` (30 s here) with the controller reached, committed:
   IMGB active and running the new version, UPDATED, ``loader.conf`` defaulting to it.
4. The good image's kernel is changed (bytes appended) and its command line names IMGB: PCRs 4
   and 12 differ, the controller refuses the quote naming them; the operator accepts the new
   values, the node attests and its vault opens through escrow.

About 10 minutes on 2 cores under TCG (four boots, two 280 MB downloads into the guest, the
guard's 90 s).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Controller, free_port, wait_for
from tests.e2e.test_node_image import (  # noqa: F401 - image is a fixture
    device_shown,
    diagnosis,
    image,
    in_guest,
    wait_attested,
)
from tools.node_vm import CONTROLLER_ADDRESS, Node, NodeImage, NodeVmError, Provisioning

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

#: Short test windows: a trial is committed after 30 s, refused after 60 s without the
#: controller, and the trial guard reboots an uncommitted trial at max(30, 60) + 30 s.
ITEMS = {
    "configItems": [
        {"key": "timer.config.interval", "value": "5"},
        {"key": "timer.test.baseimage.update", "value": "30"},
        {"key": "timer.update.fallback.no.network", "value": "60"},
        # The serial console stays on (EVE locks it by default): console.log is the diagnosis.
        {"key": "debug.enable.console", "value": "true"},
    ]
}
#: Download (300-400 MB at TCG speed), write, reboot, the guard's deadline, the boot back.
UPDATE_TIMEOUT = 1200.0


def make_update(
    node_image: NodeImage, work: Path, version: str, *, broken: bool = False, kernel: str = ""
) -> Path:
    """A gzip-compressed root image: slot A of ``node_image`` with ``version``; ``broken``: an
    agent that does not start; ``kernel`` (its version): that kernel changed (bytes appended to
    the PE image: it still boots, and its measurement differs)."""
    start, size = node_image.partition("IMGA")
    mib = 1024 * 1024
    raw = work / f"root-{version}.img"
    subprocess.run(
        ["dd", f"if={node_image.disk}", f"of={raw}", f"bs={mib}", f"skip={start // mib}",
         f"count={size // mib}", "conv=sparse", "status=none"], check=True,
    )  # fmt: skip
    release = work / f"release-{version}"
    release.write_text(version + "\n")
    requests = ["rm /etc/eve-release", f"write {release} /etc/eve-release"]
    if broken:
        dropin = work / "broken.conf"
        dropin.write_text("[Service]\nExecStart=\nExecStart=/bin/false\n")
        requests += [
            "mkdir /etc/systemd/system/eve-agent.service.d",
            f"write {dropin} /etc/systemd/system/eve-agent.service.d/broken.conf",
        ]
    if kernel:
        original = work / f"vmlinuz-{version}"
        subprocess.run(["debugfs", "-R", f"dump /boot/vmlinuz-{kernel} {original}", str(raw)],
                       capture_output=True, check=True)  # fmt: skip
        assert original.stat().st_size > 1024 * 1024, "no kernel dumped from the image"
        with open(original, "ab") as f:
            f.write(b"\0" * 4096)
        requests += [f"rm /boot/vmlinuz-{kernel}", f"write {original} /boot/vmlinuz-{kernel}"]
    script = work / f"debugfs-{version}"
    script.write_text("\n".join(requests) + "\n")
    done = subprocess.run(["debugfs", "-w", "-f", str(script), str(raw)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert "rror" not in done.stderr, done.stderr
    check = subprocess.run(["debugfs", "-R", "cat /etc/eve-release", str(raw)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert check.stdout.strip() == version
    packed = work / f"root-{version}.img.gz"
    with open(raw, "rb") as src, gzip.open(packed, "wb", compresslevel=1) as out:
        shutil.copyfileobj(src, out, 4 * mib)
    raw.unlink()
    return packed


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def datastore(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """An HTTP server of a directory on the host's loopback: (directory, port)."""
    root = tmp_path / "datastore"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def update_controller(tmp_path: Path) -> Iterator[Controller]:
    ctl = Controller(tmp_path / "controller")
    ctl.cli("init", "--ip", CONTROLLER_ADDRESS)
    ctl.cli("onboard", "add", "--cert", str(ctl.certs / "onboard.cert.pem"), "--any-serial")
    ctl.set_default_config(ITEMS)
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


def partitions(controller: Controller, uuid: str) -> dict[str, dict[str, Any]]:
    shown = json.loads(controller.cli("baseos", "show", uuid, "--json").stdout)
    reported = shown["reported"] or {"partitions": []}
    return {p["partition"]: p for p in reported["partitions"]}


def test_a_bad_update_falls_back_and_a_good_one_commits(
    tmp_path: Path,
    image: NodeImage,  # noqa: F811 - the fixture
    update_controller: Controller,
    datastore: tuple[Path, int],
) -> None:
    controller = update_controller
    store, port = datastore
    layout = json.loads((image.disk.parent / "layout.json").read_text())
    version, kernel = layout["eve_agent"], layout["kernel"]
    bad, good = store / f"root-{version}.bad.img.gz", store / f"root-{version}.good.img.gz"
    # Made while the node boots and onboards (about a minute of gzip on the host).
    errors: list[BaseException] = []

    def make_both() -> None:
        try:
            make_update(image, store, f"{version}.bad", broken=True)
            make_update(image, store, f"{version}.good", kernel=kernel)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    maker = threading.Thread(target=make_both, name="update-images")
    maker.start()
    provisioning = Provisioning.from_certs(controller.certs, controller.port, "vm-update-1")
    node = Node(image, tmp_path / "node", provisioning, controller_port=controller.port,
                extra_ports=[port])  # fmt: skip
    try:
        node.start()
        try:
            uuid = wait_attested(controller)
            maker.join()
            if errors:
                raise errors[0]
            run_updates(node, controller, uuid, port, version, bad, good)
        except (AssertionError, NodeVmError) as exc:
            raise AssertionError(f"{exc}\n{diagnosis(node)}") from exc
    finally:
        maker.join()
        node.stop()


def run_updates(
    node: Node, controller: Controller, uuid: str, port: int, version: str, bad: Path,
    good: Path,
) -> None:  # fmt: skip
    wait_for(lambda: "IMGB" in partitions(controller, uuid), 120, "partitions reported", 2)
    first = partitions(controller, uuid)
    assert first["IMGA"]["activated"] and first["IMGA"]["state"] == "active", first
    assert first["IMGA"]["version"] == version and first["IMGB"]["state"] == "unused", first

    # 1. An image whose agent does not start: the trial guard ends the trial, IMGA again.
    url = f"http://{CONTROLLER_ADDRESS}:{port}/{bad.name}"
    controller.cli("baseos", "set", uuid, "--url", url, "--sha256", sha256(bad),
                   "--version", f"{version}.bad")  # fmt: skip

    def fell_back() -> dict[str, dict[str, Any]] | None:
        node.reset_if_stuck_restarting()  # a TCG reboot hang (seen once): not the update's
        now = partitions(controller, uuid)
        b = now.get("IMGB", {})
        return now if b.get("status") == "FALLBACK" and now["IMGA"]["activated"] else None

    after_bad = wait_for(fell_back, UPDATE_TIMEOUT, "the bad update to fall back", 5)
    assert after_bad["IMGB"]["version"] == f"{version}.bad", after_bad
    assert "was not committed within 90 s" in after_bad["IMGB"]["error"], after_bad
    assert after_bad["IMGA"]["version"] == version, after_bad
    wait_for(node.guest_agent_ready, 120, "the guest agent", 2)
    assert "root=PARTLABEL=IMGA" in in_guest(node, "cat", "/proc/cmdline")
    assert in_guest(node, "cat", "/etc/eve-release").strip() == version
    loader = in_guest(node, "cat", "/boot/efi/loader/loader.conf")
    assert "default eve-a.conf" in loader, loader

    # 2. A good image: tried, committed.
    url = f"http://{CONTROLLER_ADDRESS}:{port}/{good.name}"
    controller.cli("baseos", "set", uuid, "--url", url, "--sha256", sha256(good),
                   "--version", f"{version}.good")  # fmt: skip

    def committed() -> dict[str, dict[str, Any]] | None:
        node.reset_if_stuck_restarting()
        now = partitions(controller, uuid)
        b = now.get("IMGB", {})
        ok = b.get("activated") and b.get("state") == "active" and b.get("status") == "UPDATED"
        return now if ok else None

    after_good = wait_for(committed, UPDATE_TIMEOUT, "the good update to commit", 5)
    assert after_good["IMGB"]["version"] == f"{version}.good", after_good
    assert after_good["IMGA"]["state"] == "unused", after_good
    wait_for(node.guest_agent_ready, 120, "the guest agent", 2)
    assert "root=PARTLABEL=IMGB" in in_guest(node, "cat", "/proc/cmdline")
    assert in_guest(node, "cat", "/etc/eve-release").strip() == f"{version}.good"
    loader = in_guest(node, "cat", "/boot/efi/loader/loader.conf")
    assert "default eve-b.conf" in loader, loader
    in_guest(node, "test", "!", "-e", "/boot/efi/EFI/eve/trial.env")
    text = controller.cli("device", "show", uuid).stdout
    assert f"IMGB active {version}.good (running) UPDATED" in text, text

    # The new slot boots a changed kernel (PCR 4: the firmware measures what the boot loader
    # loads) with another command line (root=PARTLABEL=IMGB: PCR 12, measured by systemd-boot):
    # the controller refuses the quote and names them; the vault, sealed to the old PCRs, stays
    # locked until the operator accepts the new values, then opens with the escrowed key.
    reason = device_shown(controller, uuid)["attestation"]["reason"]
    differing = re.search(r"PCRs differing: ([\d, ]+)", reason)
    assert differing, reason
    assert {"4", "12"} <= set(differing.group(1).replace(" ", "").split(",")), reason
    controller.cli("attest", "policy", uuid, "--accept-current")
    wait_for(lambda: device_shown(controller, uuid)["attest_state"] == "attested", 180,
             "the node to attest with the accepted PCR values", 3)  # fmt: skip

    def vault() -> str:
        return str(json.loads(in_guest(node, "eve-agent", "status", "--json"))["vault"]["state"])

    wait_for(lambda: vault() == "unlocked", 120, "the vault to open through escrow", 3)
