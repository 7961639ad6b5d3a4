"""The domain XML builder and parser (agent.drivers.domainxml), and the NoCloud meta-data."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from agent.drivers import domainxml
from agent.drivers.cloudinit import NoCloud
from agent.drivers.domainxml import (
    Accel,
    Disk,
    DiskFormat,
    DomainConfig,
    DomainXmlError,
    KernelBoot,
    Mark,
    Nic,
    SeedBus,
)

APP = uuid.UUID("6f3f2d7e-2b5a-4c1e-9a59-0d3d3c1b2a10")
NS = "{https://github.com/lf-edge/eve-agent/ns/1}"


def config(**overrides: object) -> DomainConfig:
    base: dict[str, object] = {
        "name": "eve-12345678-" + str(APP),
        "uuid": uuid.uuid5(uuid.NAMESPACE_URL, "x"),
        "mark": Mark("node-a", APP, 3),
        "memory_mib": 256,
        "vcpus": 2,
        "accel": Accel.TCG,
        "console_log": Path("/var/lib/x/console.log"),
        "disks": (Disk(Path("/vol/a.qcow2")), Disk(Path("/vol/b.img"), DiskFormat.RAW, True)),
        "seed": Path("/var/lib/x/seed.iso"),
    }
    base.update(overrides)
    return DomainConfig(**base)  # type: ignore[arg-type]


def test_build_tcg_disk_boot_with_cdrom_seed() -> None:
    root = ET.fromstring(domainxml.build(config()))
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "eve-12345678-" + str(APP)
    assert root.find("memory").get("unit") == "MiB" and root.findtext("memory") == "256"  # type: ignore[union-attr]
    assert root.findtext("vcpu") == "2"
    assert root.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    assert root.find("os/kernel") is None
    assert root.find("cpu") is None  # TCG: QEMU's default model
    mark = root.find(f"metadata/{NS}app")
    assert mark is not None
    assert mark.attrib == {"node": "node-a", "app": str(APP), "generation": "3"}
    disks = root.findall("devices/disk")
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb", "hdc"]  # type: ignore[union-attr]
    assert [d.get("device") for d in disks] == ["disk", "disk", "cdrom"]
    assert disks[0].find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disks[1].find("driver").get("type") == "raw"  # type: ignore[union-attr]
    assert disks[1].find("readonly") is not None and disks[0].find("readonly") is None
    assert disks[2].find("readonly") is not None
    log = root.find("devices/serial/log")
    assert log is not None and log.get("file") == "/var/lib/x/console.log"
    assert root.find("devices/interface") is None
    assert root.find("devices/graphics") is None


def test_build_kvm_direct_kernel_q35_virtio_seed_uefi() -> None:
    cfg = config(
        accel=Accel.KVM,
        kernel=KernelBoot(Path("/k/vmlinuz"), Path("/k/initrd.gz"), "console=ttyS0 quiet"),
        disks=(),
        seed_bus=SeedBus.VIRTIO,
        machine="q35",
        uefi=True,
    )
    root = ET.fromstring(domainxml.build(cfg))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    assert root.findtext("os/kernel") == "/k/vmlinuz"
    assert root.findtext("os/initrd") == "/k/initrd.gz"
    assert root.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert root.find("os").get("firmware") == "efi"  # type: ignore[union-attr]
    assert root.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    (seed,) = root.findall("devices/disk")
    assert seed.get("device") == "disk"
    assert seed.find("target").attrib == {"dev": "vda", "bus": "virtio"}  # type: ignore[union-attr]


def test_q35_cdrom_is_sata() -> None:
    root = ET.fromstring(domainxml.build(config(machine="pc-q35-7.2")))
    cdrom = [d for d in root.findall("devices/disk") if d.get("device") == "cdrom"]
    assert cdrom[0].find("target").attrib == {"dev": "sda", "bus": "sata"}  # type: ignore[union-attr]


def test_values_are_escaped_not_templated() -> None:
    evil = "n'\"<x>&</x>"
    xml = domainxml.build(config(mark=Mark(evil, APP, 0), console_log=Path("/a&b/<c>.log")))
    assert domainxml.parse_mark(xml) == Mark(evil, APP, 0)
    assert domainxml.parse(xml).console_log == Path("/a&b/<c>.log")


@pytest.mark.parametrize(
    "cfg",
    [
        config(),
        config(seed=None, disks=(Disk(Path("/v/x.raw"), DiskFormat.RAW),)),
        config(
            accel=Accel.KVM,
            kernel=KernelBoot(Path("/k/vmlinuz"), None, ""),
            disks=(),
            seed_bus=SeedBus.VIRTIO,
            seed=Path("/d/seed.iso"),
        ),
        config(uefi=True, machine="q35"),
        config(
            nics=(
                Nic("eabcdefb1", "02:11:22:33:44:55", "eabcdefv7"),
                Nic("br-x", "02:11:22:33:44:56", None, "e1000"),
            )
        ),
    ],
)
def test_parse_round_trips(cfg: DomainConfig) -> None:
    assert domainxml.parse(domainxml.build(cfg)) == cfg


def test_parse_libvirt_style_xml() -> None:
    """What libvirt hands back: expanded machine, KiB memory, extra devices, our element with
    its own prefix."""
    xml = f"""<domain type='qemu' id='5'>
      <name>eve-1-{APP}</name><uuid>{uuid.uuid4()}</uuid>
      <metadata><eve:app xmlns:eve="https://github.com/lf-edge/eve-agent/ns/1"
        node="n" app="{APP}" generation="7"/></metadata>
      <memory unit='KiB'>262144</memory><currentMemory unit='KiB'>262144</currentMemory>
      <vcpu placement='static'>1</vcpu>
      <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><boot dev='hd'/></os>
      <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
          <source file='/v/a.qcow2' index='1'/><target dev='vda' bus='virtio'/></disk>
        <controller type='usb' index='0'/>
        <serial type='pty'><source path='/dev/pts/0'/><log file='/s/console.log' append='on'/>
          <target type='isa-serial' port='0'/></serial>
      </devices></domain>"""
    parsed = domainxml.parse(xml)
    assert parsed.mark == Mark("n", APP, 7)
    assert parsed.memory_mib == 256
    assert parsed.machine == "pc-i440fx-7.2"
    assert parsed.disks == (Disk(Path("/v/a.qcow2")),)
    assert parsed.seed is None


def test_parse_mark_absent_and_malformed() -> None:
    assert domainxml.parse_mark("<domain type='qemu'><name>x</name></domain>") is None
    bad = f"<domain><metadata><app xmlns='{NS[1:-1]}' node='n' app='nope' generation='1'/>"
    with pytest.raises(DomainXmlError):
        domainxml.parse_mark(bad + "</metadata></domain>")
    with pytest.raises(DomainXmlError):
        domainxml.parse_mark("<network/>")
    with pytest.raises(DomainXmlError):
        domainxml.parse_mark("<domain")
    with pytest.raises(DomainXmlError):
        domainxml.parse("<domain type='qemu'><name>x</name></domain>")


def test_parse_mark_element_as_the_metadata_api_returns_it() -> None:
    xml = f'<app node="n" app="{APP}" generation="2"/>'
    assert domainxml.parse_mark_element(xml) == Mark("n", APP, 2)
    with pytest.raises(DomainXmlError):
        domainxml.parse_mark_element('<other node="n"/>')
    with pytest.raises(DomainXmlError):
        domainxml.parse_mark_element(f'<app app="{APP}" generation="2"/>')


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": ""},
        {"name": "a/b"},
        {"memory_mib": 8},
        {"vcpus": 0},
        {"mark": Mark("n", APP, -1)},
        {"disks": (), "kernel": None},
    ],
)
def test_invalid_configs(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        config(**overrides)


def test_nocloud_meta_data_is_yaml() -> None:
    seed = NoCloud("i-1: x", "host#1", b"#cloud-config\n")
    assert yaml.safe_load(seed.meta_data()) == {
        "instance-id": "i-1: x",
        "local-hostname": "host#1",
    }
    with pytest.raises(ValueError):
        NoCloud("", "h")


def test_nics_are_bridge_interfaces_and_checked() -> None:
    xml = domainxml.build(config(nics=(Nic("eabcdefb1", "02:11:22:33:44:55", "eabcdefv7"),)))
    iface = ET.fromstring(xml).find("devices/interface")
    assert iface is not None and iface.get("type") == "bridge"
    assert iface.find("source").get("bridge") == "eabcdefb1"  # type: ignore[union-attr]
    assert iface.find("target").get("dev") == "eabcdefv7"  # type: ignore[union-attr]
    assert iface.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    for bad in (
        {"mac": "01:00:5e:00:00:01"},  # multicast
        {"mac": "02:11:22:33:44"},
        {"bridge": "br0; reboot"},
        {"bridge": "a-name-far-too-long"},
        {"model": "ne2k"},
    ):
        args = {"bridge": "br0", "mac": "02:11:22:33:44:55", **bad}
        with pytest.raises(ValueError):
            Nic(**args)


def test_an_emulated_nodes_nic_is_an_ethernet_tap_naming_its_bridge() -> None:
    nic = Nic("eabcdefb1", "02:11:22:33:44:55", "eabcdefv7", ethernet=True)
    xml = domainxml.build(config(nics=(nic,)))
    iface = ET.fromstring(xml).find("devices/interface")
    assert iface is not None and iface.get("type") == "ethernet"
    assert iface.find("source") is None  # the bridge is not in libvirt's namespace
    assert iface.find("target").get("dev") == "eabcdefv7"  # type: ignore[union-attr]
    assert iface.find("alias").get("name") == "ua-br-eabcdefb1"  # type: ignore[union-attr]
    assert domainxml.parse(xml).nics == (nic,)
    with pytest.raises(ValueError, match="tap"):
        Nic("eabcdefb1", "02:11:22:33:44:55", ethernet=True)
