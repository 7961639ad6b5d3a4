"""libvirt domain XML for the agent's VMs, built and read with ElementTree (never templates).

:func:`build` turns a :class:`DomainConfig` into the XML handed to libvirt; :func:`parse_mark`
reads back the agent's own metadata element (node, app UUID, generation) from any domain's
XML, and :func:`parse` the fields the agent set.  Pure: no libvirt, no files.

The mark is ``<eve:app xmlns:eve="https://github.com/lf-edge/eve-agent/ns/1" node=...
app=... generation=.../>`` inside ``<metadata>``: libvirt keeps elements of foreign
namespaces there, and ``virDomainGetMetadata`` finds ours by the namespace URI.  A domain
without it is not ours and the agent never touches it.

What a domain has: ``type='qemu'`` (TCG) or ``'kvm'``; memory in MiB; vCPUs; BIOS or UEFI
(``firmware='efi'``, libvirt picks OVMF and keeps an NVRAM file per domain); direct kernel
boot (kernel, initrd, command line) or boot from the first disk; virtio disks (qcow2 or raw
files); the NoCloud seed as a read-only CD-ROM (IDE on ``pc``, SATA on ``q35``) or a
read-only virtio disk; the first serial port on a pty whose output virtlogd appends to a log
file (the console stays attachable with ``virsh console``); no network interfaces (the
network layer adds its own); no graphics.
"""

from __future__ import annotations

import enum
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

#: Our metadata namespace and the prefix it is written with.
NAMESPACE = "https://github.com/lf-edge/eve-agent/ns/1"
PREFIX = "eve"
_MARK_TAG = f"{{{NAMESPACE}}}app"

ET.register_namespace(PREFIX, NAMESPACE)


class Accel(enum.StrEnum):
    """How guests run: hardware virtualisation or QEMU's emulator."""

    KVM = "kvm"
    TCG = "tcg"

    @property
    def domain_type(self) -> str:
        return "kvm" if self is Accel.KVM else "qemu"


class SeedBus(enum.StrEnum):
    """How the NoCloud seed ISO is attached."""

    CDROM = "cdrom"
    VIRTIO = "virtio"


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


class DiskFormat(enum.StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"


class DomainXmlError(ValueError):
    """The XML is not a domain, or our mark in it is malformed."""


@dataclass(frozen=True)
class Mark:
    """What makes a domain ours: the node that made it, the app and the app's generation."""

    node: str
    app_uuid: uuid.UUID
    generation: int


@dataclass(frozen=True)
class Disk:
    path: Path
    format: DiskFormat = DiskFormat.QCOW2
    readonly: bool = False


#: libvirt's user aliases start with "ua-"; an ethernet interface's says which bridge it joins.
_BRIDGE_ALIAS = "ua-br-"


@dataclass(frozen=True)
class Nic:
    """A network interface on a bridge the network reconciler made: libvirt creates the tap
    (named ``target`` when given, so the agent can find it) and enslaves it.

    ``ethernet``: the bridge is in another network namespace than libvirt's (an emulated
    node's), so the interface is libvirt's ``ethernet`` kind: libvirt makes the tap
    ``target`` (required) in its own namespace and the hypervisor driver moves it to the bridge
    (:func:`agent.drivers.netlink.claim_links`); the bridge's name rides in the interface's
    alias (``ua-br-<bridge>``)."""

    bridge: str
    mac: str
    target: str | None = None
    model: str = "virtio"
    ethernet: bool = False

    def __post_init__(self) -> None:
        if not _MAC.match(self.mac) or int(self.mac[:2], 16) & 1:
            raise ValueError(f"bad unicast MAC address {self.mac!r}")
        for name in (self.bridge, self.target or "x"):
            if not _IFNAME.match(name):
                raise ValueError(f"bad interface name {name!r}")
        if self.model not in ("virtio", "e1000", "rtl8139"):
            raise ValueError(f"unknown NIC model {self.model!r}")
        if self.ethernet and not self.target:
            raise ValueError("an ethernet interface needs its tap's name")


@dataclass(frozen=True)
class KernelBoot:
    """Direct kernel boot: QEMU loads the kernel and initrd itself."""

    kernel: Path
    initrd: Path | None = None
    cmdline: str = "console=ttyS0"


@dataclass(frozen=True)
class DomainConfig:
    """Everything the XML says; see the module docstring."""

    name: str
    uuid: uuid.UUID
    mark: Mark
    memory_mib: int
    vcpus: int
    accel: Accel
    console_log: Path
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    kernel: KernelBoot | None = None
    seed: Path | None = None
    seed_bus: SeedBus = SeedBus.CDROM
    uefi: bool = False
    machine: str = "pc"
    arch: str = "x86_64"

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"bad domain name {self.name!r}")
        if self.memory_mib < 16:
            raise ValueError(f"memory {self.memory_mib} MiB is too small")
        if self.vcpus < 1:
            raise ValueError(f"vcpus must be at least 1, not {self.vcpus}")
        if self.mark.generation < 0:
            raise ValueError(f"generation must not be negative: {self.mark.generation}")
        if self.kernel is None and not self.disks:
            raise ValueError("nothing to boot: no kernel and no disk")
        if len(self.disks) > 20:
            raise ValueError(f"too many disks: {len(self.disks)}")
        if len(self.nics) > 16:
            raise ValueError(f"too many network interfaces: {len(self.nics)}")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _vd(index: int) -> str:
    """vda..vdz (we allow at most 21 virtio devices)."""
    return "vd" + "abcdefghijklmnopqrstuvwxyz"[index]


def build(config: DomainConfig) -> str:
    """The domain XML for ``config``."""
    domain = ET.Element("domain", {"type": config.accel.domain_type})
    _sub(domain, "name", config.name)
    _sub(domain, "uuid", str(config.uuid))
    metadata = _sub(domain, "metadata")
    ET.SubElement(
        metadata,
        _MARK_TAG,
        {
            "node": config.mark.node,
            "app": str(config.mark.app_uuid),
            "generation": str(config.mark.generation),
        },
    )
    _sub(domain, "memory", str(config.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(config.vcpus), placement="static")

    os_attrs = {"firmware": "efi"} if config.uefi else {}
    os_el = _sub(domain, "os", **os_attrs)
    _sub(os_el, "type", "hvm", arch=config.arch, machine=config.machine)
    if config.kernel is not None:
        _sub(os_el, "kernel", str(config.kernel.kernel))
        if config.kernel.initrd is not None:
            _sub(os_el, "initrd", str(config.kernel.initrd))
        if config.kernel.cmdline:
            _sub(os_el, "cmdline", config.kernel.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")

    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if config.accel is Accel.KVM:
        _sub(domain, "cpu", mode="host-passthrough", check="none")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    virtio = 0
    for disk in config.disks:
        el = _sub(devices, "disk", type="file", device="disk")
        _sub(el, "driver", name="qemu", type=str(disk.format), cache="none", io="native")
        _sub(el, "source", file=str(disk.path))
        _sub(el, "target", dev=_vd(virtio), bus="virtio")
        if disk.readonly:
            _sub(el, "readonly")
        virtio += 1
    if config.seed is not None:
        if config.seed_bus is SeedBus.VIRTIO:
            el = _sub(devices, "disk", type="file", device="disk")
            _sub(el, "driver", name="qemu", type="raw")
            _sub(el, "source", file=str(config.seed))
            _sub(el, "target", dev=_vd(virtio), bus="virtio")
        else:
            el = _sub(devices, "disk", type="file", device="cdrom")
            _sub(el, "driver", name="qemu", type="raw")
            _sub(el, "source", file=str(config.seed))
            if "q35" in config.machine:
                _sub(el, "target", dev="sda", bus="sata")
            else:
                _sub(el, "target", dev="hdc", bus="ide")
        _sub(el, "readonly")
    for nic in config.nics:
        if nic.ethernet:
            assert nic.target is not None
            el = _sub(devices, "interface", type="ethernet")
            _sub(el, "mac", address=nic.mac)
            _sub(el, "target", dev=nic.target, managed="yes")
            _sub(el, "alias", name=f"{_BRIDGE_ALIAS}{nic.bridge}")
        else:
            el = _sub(devices, "interface", type="bridge")
            _sub(el, "mac", address=nic.mac)
            _sub(el, "source", bridge=nic.bridge)
            if nic.target:
                _sub(el, "target", dev=nic.target)
        _sub(el, "model", type=nic.model)
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=str(config.console_log), append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    _sub(devices, "memballoon", model="virtio")
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


def _root(xml: str) -> ET.Element:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DomainXmlError(f"not XML: {exc}") from exc
    if root.tag != "domain":
        raise DomainXmlError(f"not a domain: <{root.tag}>")
    return root


def mark_from_element(element: ET.Element) -> Mark:
    """Our mark from its ``<eve:app>`` element (as ``virDomainGetMetadata`` returns it)."""
    if element.tag != _MARK_TAG:
        raise DomainXmlError(f"not our metadata element: <{element.tag}>")
    node = element.get("node")
    app = element.get("app")
    generation = element.get("generation")
    if not node or not app or generation is None:
        raise DomainXmlError("our metadata lacks node, app or generation")
    try:
        return Mark(node=node, app_uuid=uuid.UUID(app), generation=int(generation))
    except ValueError as exc:
        raise DomainXmlError(f"malformed metadata: {exc}") from exc


def parse_mark_element(xml: str) -> Mark:
    """Our mark from the metadata element's own XML, as ``virDomainGetMetadata`` returns it
    for our namespace URI: libvirt drops the namespace (``<app node=... />``)."""
    try:
        element = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DomainXmlError(f"not XML: {exc}") from exc
    if element.tag == "app":
        element.tag = _MARK_TAG
    return mark_from_element(element)


def parse_mark(xml: str) -> Mark | None:
    """Our mark from a domain's XML; None when the domain carries none (not ours)."""
    element = _root(xml).find(f"metadata/{_MARK_TAG}")
    return None if element is None else mark_from_element(element)


def parse(xml: str) -> DomainConfig:
    """The :class:`DomainConfig` of a domain the agent made (what :func:`build` wrote; libvirt
    adds defaults such as controllers and addresses, which are ignored).  Raises
    DomainXmlError for a domain without our mark or with a shape we never write."""
    root = _root(xml)
    mark = parse_mark(xml)
    if mark is None:
        raise DomainXmlError("the domain carries no eve-agent metadata")

    def text(path: str) -> str:
        value = root.findtext(path)
        if value is None:
            raise DomainXmlError(f"domain without {path}")
        return value.strip()

    try:
        memory_mib = _mib(int(text("memory")), root.find("memory"))
        vcpus = int(text("vcpu"))
        dom_uuid = uuid.UUID(text("uuid"))
    except ValueError as exc:
        raise DomainXmlError(f"malformed domain: {exc}") from exc
    accel = Accel.KVM if root.get("type") == "kvm" else Accel.TCG
    os_type = root.find("os/type")
    kernel: KernelBoot | None = None
    kernel_path = root.findtext("os/kernel")
    if kernel_path:
        initrd = root.findtext("os/initrd")
        kernel = KernelBoot(
            kernel=Path(kernel_path),
            initrd=Path(initrd) if initrd else None,
            cmdline=root.findtext("os/cmdline") or "",
        )
    disks: list[Disk] = []
    seed: Path | None = None
    seed_bus = SeedBus.CDROM
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        driver = disk.find("driver")
        if source is None or source.get("file") is None:
            continue
        path = Path(source.get("file", ""))
        fmt = DiskFormat(driver.get("type", "raw")) if driver is not None else DiskFormat.RAW
        readonly = disk.find("readonly") is not None
        if disk.get("device") == "cdrom":
            seed, seed_bus = path, SeedBus.CDROM
        elif path.name == SEED_NAME and readonly:
            seed, seed_bus = path, SeedBus.VIRTIO
        else:
            disks.append(Disk(path=path, format=fmt, readonly=readonly))
    nics: list[Nic] = []
    for iface in root.iterfind("devices/interface"):
        mac, source, alias = iface.find("mac"), iface.find("source"), iface.find("alias")
        kind = iface.get("type")
        if kind == "bridge" and source is not None:
            bridge = source.get("bridge", "")
        elif kind == "ethernet" and alias is not None:
            bridge = alias.get("name", "").removeprefix(_BRIDGE_ALIAS)
        else:
            continue
        if mac is None:
            continue
        target, model = iface.find("target"), iface.find("model")
        try:
            nics.append(
                Nic(
                    bridge=bridge,
                    mac=mac.get("address", "").lower(),
                    target=target.get("dev") if target is not None else None,
                    model=model.get("type", "virtio") if model is not None else "virtio",
                    ethernet=kind == "ethernet",
                )
            )
        except ValueError as exc:
            raise DomainXmlError(f"malformed interface: {exc}") from exc
    log = root.find("devices/serial/log")
    if log is None or not log.get("file"):
        raise DomainXmlError("domain without a serial console log")
    os_el = root.find("os")
    uefi = os_el is not None and (
        os_el.get("firmware") == "efi" or os_el.find("loader") is not None
    )
    return DomainConfig(
        name=text("name"),
        uuid=dom_uuid,
        mark=mark,
        memory_mib=memory_mib,
        vcpus=vcpus,
        accel=accel,
        console_log=Path(log.get("file", "")),
        disks=tuple(disks),
        nics=tuple(nics),
        kernel=kernel,
        seed=seed,
        seed_bus=seed_bus,
        uefi=uefi,
        machine=os_type.get("machine", "pc") if os_type is not None else "pc",
        arch=os_type.get("arch", "x86_64") if os_type is not None else "x86_64",
    )


#: The file name the driver gives the NoCloud seed (how :func:`parse` tells a virtio seed
#: from a data disk).
SEED_NAME = "seed.iso"

_UNITS = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 10**6, "m": 2**20,
          "mib": 2**20, "gb": 10**9, "g": 2**30, "gib": 2**30}  # fmt: skip


def _mib(value: int, element: ET.Element | None) -> int:
    unit = (element.get("unit", "KiB") if element is not None else "KiB").lower()
    if unit not in _UNITS:
        raise DomainXmlError(f"unknown memory unit {unit}")
    return value * _UNITS[unit] // 2**20
