# SPDX-License-Identifier: Apache-2.0
"""Base OS A/B updates: the slot driver against files (real ext4 images read by debugfs, a
directory as the ESP and as efivarfs) and the update manager across simulated reboots.

A "reboot" here is a new :class:`BaseOsManager` on the same files with the kernel command line
and ``/etc/eve-release`` of the slot the boot loader would start: the one-shot entry when set
(and then spent), else ``loader.conf``'s default.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.drivers import bootslots
from agent.drivers.bootslots import BootSlots, SlotError, SlotPaths
from agent.model.baseos import BaseOsConfig
from agent.model.config import NodeConfig
from agent.model.configitems import ConfigItems, parse_items
from agent.reconcile.baseos import BaseOsManager, Content
from agent.wire.pb.info import info_pb2

DEVICE = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
TREE = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
SLOT_BYTES = 8 * 1024 * 1024
ONESHOT = f"LoaderEntryOneShot-{bootslots.LOADER_GUID}"

pytestmark = pytest.mark.skipif(shutil.which("debugfs") is None, reason="needs e2fsprogs")


def make_image(tmp: Path, version: str, *, size_mib: int = 4, kernel: bool = True) -> Path:
    """A root image as the node image's slots hold: ext4 made from a directory."""
    tree = tmp / f"tree-{version}"
    (tree / "etc").mkdir(parents=True)
    (tree / "boot").mkdir()
    (tree / "etc" / "eve-release").write_text(version + "\n")
    if kernel:
        (tree / "boot" / "vmlinuz-6.1.0-9-amd64").write_bytes(b"MZ kernel " + version.encode())
        (tree / "boot" / "initrd.img-6.1.0-9-amd64").write_bytes(b"initrd " + version.encode())
        (tree / "boot" / "vmlinuz-6.1.0-10-amd64").write_bytes(b"MZ newer " + version.encode())
        (tree / "boot" / "initrd.img-6.1.0-10-amd64").write_bytes(b"initrd2 " + version.encode())
    image = tmp / f"root-{version}.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), f"{size_mib}M"], check=True
    )
    return image


@dataclass
class Machine:
    """The files of a node: two partitions, an ESP, efivarfs, /proc/cmdline, /etc/eve-release."""

    base: Path
    running: str = "IMGA"
    paths: SlotPaths = field(init=False)

    def __post_init__(self) -> None:
        self.paths = SlotPaths(
            esp=self.base / "esp",
            efivars=self.base / "efivars",
            partitions=self.base / "by-partlabel",
            cmdline=self.base / "cmdline",
            release=self.base / "eve-release",
        )
        for d in (self.paths.efivars, self.paths.partitions, self.paths.esp / "loader/entries"):
            d.mkdir(parents=True)
        for label in bootslots.SLOTS:
            with open(self.paths.partitions / label, "wb") as f:
                f.truncate(SLOT_BYTES)
        self.paths.loader_conf.write_text("default eve-a.conf\ntimeout 0\neditor no\n")
        self.paths.entry("IMGA").write_text("title A\nlinux /EFI/eve/a/vmlinuz\n")
        self.boot("IMGA", "1.0")

    def boot(self, label: str, version: str) -> None:
        self.running = label
        self.paths.cmdline.write_text(
            f"BOOT_IMAGE=x root=PARTLABEL={label} rw console=ttyS0,115200 panic=10\n"
        )
        self.paths.release.write_text(version + "\n")

    def power_cycle(self) -> str:
        """What systemd-boot starts next: the one-shot entry (spent), else the default."""
        var = self.paths.efivars / ONESHOT
        if var.exists():
            entry = var.read_bytes()[4:].decode("utf-16-le").rstrip("\0")
            var.unlink()
        else:
            conf = self.paths.loader_conf.read_text().split()
            entry = conf[conf.index("default") + 1]
        label = next(s for s in bootslots.SLOTS if bootslots.entry_id(s) == entry)
        version = self._slot_version(label)
        self.boot(label, version)
        return label

    def _slot_version(self, label: str) -> str:
        out = subprocess.run(
            ["debugfs", "-R", "cat /etc/eve-release", str(self.paths.partitions / label)],
            capture_output=True, check=True,
        )  # fmt: skip
        return out.stdout.decode().strip() or "1.0"


@dataclass
class World:
    """The manager's surroundings, under the test's control."""

    machine: Machine
    wanted: BaseOsConfig | None = None
    blob: Path | None = None
    percent: int = 0
    content_error: str = ""
    items: ConfigItems = field(
        default_factory=lambda: parse_items(
            [("timer.test.baseimage.update", "30"), ("timer.update.fallback.no.network", "60")]
        )
    )
    contact: float = 0.0
    healthy: bool = True
    now: float = 1000.0
    wall: float = 1_700_000_000.0
    reboots: list[str] = field(default_factory=list)

    def manager(self) -> BaseOsManager:
        async def reboot(reason: str) -> None:
            self.reboots.append(reason)

        return BaseOsManager(
            BootSlots(self.machine.paths),
            config=self.config,
            content=lambda tree: Content(self.blob, self.percent, self.content_error),
            items=lambda: self.items,
            contacted=lambda: self.contact,
            healthy=lambda: self.healthy,
            reboot=reboot,
            clock=lambda: self.now,
            wall=lambda: self.wall,
        )

    def config(self) -> NodeConfig:
        return NodeConfig(DEVICE, "1", 0.0, self.items, baseos=self.wanted)

    def later(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(Machine(tmp_path / "node"))


def by_label(manager: BaseOsManager) -> dict[str, tuple[str, str, str, str]]:
    return {
        p.label: (p.state, p.version, p.user_status, p.sub_status) for p in manager.partitions()
    }


# --- the driver ------------------------------------------------------------------------------


def test_install_writes_the_slot_kernel_and_entry(world: World, tmp_path: Path) -> None:
    slots = BootSlots(world.machine.paths)
    assert slots.current() == "IMGA" and slots.supported()
    assert slots.running_version() == "1.0"
    seen: list[tuple[int, int]] = []
    version = slots.install("IMGB", make_image(tmp_path, "2.0"), lambda d, t: seen.append((d, t)))
    assert version == "2.0"
    esp = world.machine.paths.esp
    # The newest kernel of the image (version order, not text order) with its initrd.
    assert (esp / "EFI/eve/b/vmlinuz").read_bytes() == b"MZ newer 2.0"
    assert (esp / "EFI/eve/b/initrd.img").read_bytes() == b"initrd2 2.0"
    entry = world.machine.paths.entry("IMGB").read_text()
    assert "options root=PARTLABEL=IMGB rw console=ttyS0,115200 panic=10" in entry
    assert "BOOT_IMAGE" not in entry and "linux   /EFI/eve/b/vmlinuz" in entry
    assert seen and seen[-1][0] == seen[-1][1]
    slots.boot_once("IMGB")
    raw = (world.machine.paths.efivars / ONESHOT).read_bytes()
    assert raw[:4] == b"\x07\x00\x00\x00" and raw[4:].decode("utf-16-le") == "eve-b.conf\0"
    slots.boot_once("IMGB")  # again: replaced, not appended
    assert (world.machine.paths.efivars / ONESHOT).read_bytes() == raw
    assert slots.default() == "IMGA"
    slots.make_default("IMGB")
    assert slots.default() == "IMGB"
    assert "timeout 0" in world.machine.paths.loader_conf.read_text()


def test_install_takes_gzip_and_refuses_bad_images(world: World, tmp_path: Path) -> None:
    slots = BootSlots(world.machine.paths)
    image = make_image(tmp_path, "2.1")
    packed = tmp_path / "root.img.gz"
    packed.write_bytes(gzip.compress(image.read_bytes(), compresslevel=1))
    assert slots.install("IMGB", packed) == "2.1"
    with pytest.raises(SlotError, match="running system"):
        slots.install("IMGA", image)
    with pytest.raises(SlotError, match="larger than slot"):
        slots.install("IMGB", make_image(tmp_path, "big", size_mib=12))
    with pytest.raises(SlotError, match="no /boot/vmlinuz"):
        slots.install("IMGB", make_image(tmp_path, "nokernel", kernel=False))
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * (2 * 1024 * 1024))
    with pytest.raises(SlotError, match=r"not ext4|no valid"):
        slots.install("IMGB", junk)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(packed.read_bytes()[:5000])
    with pytest.raises(SlotError, match="gzip"):
        slots.install("IMGB", broken)


def test_a_host_that_is_not_a_node_has_no_slots(tmp_path: Path) -> None:
    paths = SlotPaths(esp=tmp_path / "esp", efivars=tmp_path / "efi",
                      partitions=tmp_path / "parts", cmdline=tmp_path / "cmdline",
                      release=tmp_path / "release")  # fmt: skip
    (tmp_path / "cmdline").write_text("root=/dev/sda1 ro quiet\n")
    slots = BootSlots(paths)
    assert slots.current() is None and not slots.supported()


# --- the manager ------------------------------------------------------------------------------


async def test_an_update_is_written_tried_and_committed(world: World, tmp_path: Path) -> None:
    manager = world.manager()
    await manager.step()
    assert by_label(manager)["IMGA"] == ("active", "1.0", "NONE", "NONE_SUBSTATUS")
    world.wanted = BaseOsConfig(TREE, "2.0", activate=True, retry_counter=0)
    world.percent = 40
    await manager.step()
    assert by_label(manager)["IMGB"][2:] == ("DOWNLOADING", "DOWNLOAD_INPROGRESS")
    assert not world.reboots
    world.blob = make_image(tmp_path, "2.0")
    await manager.step()
    assert world.reboots == ["update"]
    assert by_label(manager)["IMGB"] == ("updating", "2.0", "UPDATING", "UPDATE_REBOOTING")
    assert manager.updating()
    assert BootSlots(world.machine.paths).trial() == "IMGB"

    assert world.machine.power_cycle() == "IMGB"
    world.later(100)
    manager = world.manager()
    # Before its first step it reports the slot it booted from, not IMGA.
    (early,) = manager.partitions()
    assert (early.label, early.version, early.activated) == ("IMGB", "2.0", True)
    await manager.step()
    parts = by_label(manager)
    assert parts["IMGB"] == ("inprogress", "2.0", "UPDATING", "UPDATE_TESTING")
    assert manager.partitions()[0].label == "IMGB" and manager.partitions()[0].activated
    # Healthy but the window is not over: no commit; the controller reached: still waiting.
    world.contact = world.wall + 1
    world.later(10)
    await manager.step()
    assert manager.partitions()[0].progress == 20  # seconds left
    world.later(25)
    world.healthy = False
    await manager.step()
    assert by_label(manager)["IMGB"][0] == "inprogress"
    world.healthy = True
    await manager.step()
    assert by_label(manager) == {
        "IMGB": ("active", "2.0", "UPDATED", "NONE_SUBSTATUS"),
        "IMGA": ("unused", "1.0", "NONE", "NONE_SUBSTATUS"),
    }
    assert BootSlots(world.machine.paths).default() == "IMGB"
    assert BootSlots(world.machine.paths).trial() is None
    assert not manager.updating() and world.reboots == ["update"]
    # Committed: every later boot is IMGB.
    assert world.machine.power_cycle() == "IMGB"
    manager = world.manager()
    await manager.step()
    assert by_label(manager)["IMGB"][:3] == ("active", "2.0", "UPDATED")


async def test_a_trial_that_never_commits_falls_back_and_is_not_retried(
    world: World, tmp_path: Path
) -> None:
    world.wanted = BaseOsConfig(TREE, "2.0", activate=True, retry_counter=3)
    world.blob = make_image(tmp_path, "2.0")
    manager = world.manager()
    await manager.step()
    assert world.reboots == ["update"]
    # The new image's agent never starts: the guard reboots, the one-shot entry is spent.
    assert world.machine.power_cycle() == "IMGB"
    assert world.machine.paths.trial.read_text() == "TRIAL_SLOT=IMGB\nTRIAL_SECONDS=90\n"
    world.machine.paths.guard_report.write_text("the trial of IMGB was not committed\n")
    assert world.machine.power_cycle() == "IMGA"
    manager = world.manager()
    await manager.step()
    parts = {p.label: p for p in manager.partitions()}
    assert parts["IMGA"].activated and parts["IMGA"].state == "active"
    assert parts["IMGB"].user_status == "FALLBACK" and parts["IMGB"].version == "2.0"
    assert parts["IMGB"].error == "update to 2.0 failed: the trial of IMGB was not committed"
    assert manager.fell_back == "the trial of IMGB was not committed"
    assert BootSlots(world.machine.paths).trial() is None
    assert not world.machine.paths.guard_report.exists()
    # Same version, same retry counter: refused.
    await manager.step()
    assert world.reboots == ["update"]
    # Another version: the old failure is no longer what the partition shows.
    image, world.blob, world.percent = world.blob, None, 10
    world.wanted = BaseOsConfig(TREE, "2.5", activate=False, retry_counter=3)
    await manager.step()
    b = {p.label: p for p in manager.partitions()}["IMGB"]
    assert (b.version, b.user_status, b.error) == ("2.5", "DOWNLOADING", "")
    # The controller asks again (retry counter): written and rebooted once more.
    world.wanted = BaseOsConfig(TREE, "2.0", activate=True, retry_counter=4)
    world.blob = image
    await manager.step()
    assert world.reboots == ["update", "update"]


async def test_no_controller_in_the_trial_reboots_back_with_the_reason(
    world: World, tmp_path: Path
) -> None:
    world.wanted = BaseOsConfig(TREE, "2.0", activate=True, retry_counter=0)
    world.blob = make_image(tmp_path, "2.0")
    await world.manager().step()
    world.machine.power_cycle()
    manager = world.manager()
    await manager.step()
    world.later(59)
    await manager.step()
    assert world.reboots == ["update"]
    world.later(2)
    await manager.step()
    assert world.reboots == ["update", "fallback"]
    assert world.machine.power_cycle() == "IMGA"
    manager = world.manager()
    await manager.step()
    b = {p.label: p for p in manager.partitions()}["IMGB"]
    assert b.user_status == "FALLBACK" and "no controller contact within 60 s" in b.error


async def test_wrong_version_fails_without_reboot(world: World, tmp_path: Path) -> None:
    world.wanted = BaseOsConfig(TREE, "3.0", activate=True, retry_counter=0)
    world.blob = make_image(tmp_path, "2.0")
    manager = world.manager()
    await manager.step()
    b = {p.label: p for p in manager.partitions()}["IMGB"]
    assert not world.reboots and b.user_status == "FAILED"
    assert "version is '2.0', the config names '3.0'" in b.error
    assert BootSlots(world.machine.paths).trial() is None
    assert not (world.machine.paths.efivars / ONESHOT).exists()


async def test_download_only_and_content_errors(world: World, tmp_path: Path) -> None:
    world.wanted = BaseOsConfig(TREE, "2.0", activate=False, retry_counter=0)
    world.blob = make_image(tmp_path, "2.0")
    manager = world.manager()
    await manager.step()
    assert by_label(manager)["IMGB"][2] == "DOWNLOAD_DONE" and not world.reboots
    world.blob, world.content_error = None, "digest mismatch"
    await manager.step()
    b = {p.label: p for p in manager.partitions()}["IMGB"]
    assert b.user_status == "FAILED" and "digest mismatch" in b.error


async def test_a_node_without_slots_says_it_cannot_update(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "node")
    machine.paths.cmdline.write_text("root=/dev/vda1\n")
    world = World(machine, wanted=BaseOsConfig(TREE, "2.0", True, 0))
    manager = world.manager()
    await manager.step()
    (only,) = manager.partitions()
    assert only.activated and only.version == "1.0"
    assert "A/B slots" in only.error and not world.reboots


def test_device_info_reports_both_partitions(world: World) -> None:
    from agent.link.reporting import DeviceFacts, device_info
    from agent.model.baseos import PartitionStatus

    facts = DeviceFacts(
        uuid=DEVICE, version="x", boot_time=0.0, attestation_state="complete",
        attestation_error="", items=parse_items([]),
        partitions=(
            PartitionStatus("IMGB", "inprogress", "2.0", True, "UPDATING", "UPDATE_TESTING",
                            "testing, 20 s left", 20),
            PartitionStatus("IMGA", "unused", "1.0", False, error="boom", error_time=5.0),
        ),
        baseos_update_counter=4, baseos_updating=True,
    )  # fmt: skip
    dinfo = device_info(facts).dinfo
    b, a = dinfo.swList
    assert (b.partitionLabel, b.partitionState, b.shortVersion, b.activated) == (
        "IMGB", "inprogress", "2.0", True,
    )  # fmt: skip
    assert b.userStatus == info_pb2.UPDATING and b.subStatus == info_pb2.UPDATE_TESTING
    assert b.subStatusProgress == 20 and b.status == info_pb2.RUNNING
    assert a.status == info_pb2.ERROR and a.swErr.description == "boom"
    assert dinfo.baseos_update_counter == 4
    assert dinfo.state == info_pb2.ZDEVICE_STATE_BASEOS_UPDATING


def test_the_config_names_a_base_os_by_content_tree() -> None:
    from agent.model.config import from_proto
    from agent.wire.pb.config import devconfig_pb2

    msg = devconfig_pb2.EdgeDevConfig()
    msg.id.uuid = DEVICE
    msg.baseos.content_tree_uuid = TREE
    msg.baseos.base_os_version = "2.0"
    msg.baseos.activate = True
    msg.baseos.retry_update.counter = 7
    cfg = from_proto(msg)
    assert cfg.baseos is None and [e.kind for e in cfg.errors] == ["baseos"]
    assert "missing contenttree" in cfg.errors[0].message
    ds = msg.datastores.add(id="6ba7b812-9dad-11d1-80b4-00c04fd430c8", fqdn="http://x", dType=1)
    tree = msg.contentInfo.add(uuid=TREE, displayName="eve", sha256="a" * 64, URL="root.img")
    tree.ds_ids_list.append(ds.id)
    cfg = from_proto(msg)
    assert cfg.baseos == BaseOsConfig(TREE, "2.0", True, 7) and not cfg.errors
    msg.baseos.base_os_version = "2.0\nforged log line"
    cfg = from_proto(msg)
    assert cfg.baseos is None and "not a version string" in cfg.errors[0].message
