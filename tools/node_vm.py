"""Boot nodes of the node image (``make image``, images/node/) under QEMU, as real machines.

Per node, in its own directory:

- ``swtpm/``: a TPM 2.0 (``swtpm socket``, SHA-256 bank, its EK made by ``swtpm_setup``) that
  QEMU attaches as ``tpm-crb``: the guest has ``/dev/tpmrm0``, and OVMF measures the boot into
  it and hands its event log to the kernel (securityfs), as on hardware.
- ``OVMF_VARS.fd``: the node's own copy of OVMF's variable store (``OVMF_CODE_4M.fd`` is shared,
  read-only); the ESP's removable-media path boots systemd-boot without an NVRAM entry.
- ``disk.qcow2``: a copy-on-write overlay of the image (the cached image is never written), whose
  CONFIG partition holds this node's provisioning, written with ``qemu-io`` into the overlay
  (no mounts): ``server``, ``root-certificate.pem``, ``onboard.cert.pem``, ``onboard.key.pem``,
  ``soft_serial``, on a vfat made with ``mkfs.vfat`` + ``mcopy``.
- QEMU user networking with ``restrict=on``: the guest reaches nothing but the controller.  One
  ``guestfwd`` rule makes ``10.0.2.100:<port>`` lead to ``127.0.0.1:<port>`` on the host,
  through ``tools/node_vm.py relay`` started by QEMU for each connection; so the controller
  listens on loopback only and the node's server is ``10.0.2.100:<port>`` (the controller's TLS
  certificate must name that address: ``eve-controller init --ip 10.0.2.100``).  slirp refuses
  a forwarding rule on its host address 10.0.2.2, and without ``restrict=on`` (where 10.0.2.2
  is the host's loopback) the guest could reach every port of the host and beyond.  DHCP comes
  from slirp.
- ``console.log``: the serial console (ttyS0: firmware, kernel, systemd) since the last power-on,
  ``console.prev.log`` the one before; ``qemu.log``.
- ``qga.sock``: QEMU's guest agent channel; :meth:`Node.exec` runs a command in the guest through
  it (``guest-exec``), which is how tests look inside (``systemctl is-active eve-agent``): the
  node has no login.  ``qmp.sock``: QEMU's monitor, for an ACPI power-off.  ``events.sock``: a
  second monitor a thread of :class:`Node` follows, writing QEMU's events to ``events.log``.
- A reset is a power cycle: QEMU runs with ``-action reboot=shutdown``, so a guest's reboot (or a
  QMP ``system_reset``) makes it exit, and the event thread, having seen the ``SHUTDOWN`` event
  with a reset reason, starts the swtpm and QEMU again on the same disk, NVRAM and TPM state.
  Debian 12's QEMU 7.2 under TCG (q35, OVMF, two vCPUs) was seen to hang for good after the
  kernel's ``reboot: machine restart`` when it reset the machine in place; a new process has no
  such state.  For the guest this is a cold boot, which a reboot may be on real boards too.

KVM is used when it works here (``agent.drivers.kvm``: CPU flags and a probe guest), TCG
otherwise (on these CI hosts: about a minute from power-on to systemd's multi-user target).

Command line (as root)::

    .venv/bin/python tools/node_vm.py up --dir /tmp/nodes --nodes 2 \\
        --certs STATE/certs --port 8443            # until Ctrl-C
    .venv/bin/python tools/node_vm.py exec /tmp/nodes/node-1 -- systemctl is-active eve-agent
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
#: The controller's address in the guests' network (forwarded to the host's loopback).
CONTROLLER_ADDRESS = "10.0.2.100"


class NodeVmError(Exception):
    """A node could not be prepared, started or reached; the message says why."""


@dataclass(frozen=True)
class Provisioning:
    """What the installer writes to a node's CONFIG partition."""

    server: str
    root_certificate: bytes
    onboard_cert: bytes
    onboard_key: bytes
    serial: str

    @classmethod
    def from_certs(cls, certs: Path, port: int, serial: str) -> Provisioning:
        """From an ``eve-controller`` state's ``certs/`` directory, for a controller on the
        host's ``127.0.0.1:port``."""
        return cls(
            server=f"{CONTROLLER_ADDRESS}:{port}",
            root_certificate=(certs / "root-certificate.pem").read_bytes(),
            onboard_cert=(certs / "onboard.cert.pem").read_bytes(),
            onboard_key=(certs / "onboard.key.pem").read_bytes(),
            serial=serial,
        )

    def files(self) -> dict[str, bytes]:
        return {
            "server": self.server.encode() + b"\n",
            "root-certificate.pem": self.root_certificate,
            "onboard.cert.pem": self.onboard_cert,
            "onboard.key.pem": self.onboard_key,
            "soft_serial": self.serial.encode() + b"\n",
        }


@dataclass(frozen=True)
class NodeImage:
    """The built image: its disk and the partition layout beside it."""

    disk: Path
    layout: dict[str, Any]

    @classmethod
    def build(cls, timeout: float = 1500.0) -> NodeImage:
        """``images/build.sh node`` (cached: seconds when nothing changed).  Raises
        NodeVmError with the end of its output when it fails."""
        try:
            done = subprocess.run(
                ["bash", str(REPO / "images/build.sh"), "node"],
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise NodeVmError(f"images/build.sh node took more than {timeout:.0f} s") from exc
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise NodeVmError(f"images/build.sh node failed ({done.returncode}):\n"
                              f"{done.stderr[-3000:]}")  # fmt: skip
        return cls.load(Path(lines[-1].split()[1]))

    @classmethod
    def load(cls, disk: Path) -> NodeImage:
        layout = json.loads((disk.parent / "layout.json").read_text())
        assert isinstance(layout, dict)
        return cls(disk, layout)

    def partition(self, name: str) -> tuple[int, int]:
        """(start, size) in bytes of the partition named ``name``."""
        for part in self.layout["partitions"]:
            if part["name"] == name:
                return int(part["start"]), int(part["size"])
        raise NodeVmError(f"the image has no partition {name}")


def kvm_works() -> bool:
    """Whether KVM guests run here (not only whether /dev/kvm exists)."""
    sys.path.insert(0, str(REPO))
    from agent.drivers.kvm import kvm_usable

    usable, _reason = asyncio.run(kvm_usable(5.0))
    return usable


def _run(argv: Sequence[str], what: str, timeout: float = 120.0) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise NodeVmError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")


@dataclass
class ExecResult:
    exitcode: int
    stdout: str
    stderr: str


class Node:
    """One node VM; see the module docstring for its files."""

    def __init__(
        self,
        image: NodeImage,
        workdir: Path,
        provisioning: Provisioning,
        *,
        controller_port: int,
        accel: str = "auto",
        memory_mib: int = 2048,
        cpus: int = 2,
        usb_stick: Path | None = None,
        extra_ports: Sequence[int] = (),
    ) -> None:
        self.image = image
        #: More host loopback ports the guest reaches at the controller's address (a datastore).
        self.extra_ports = tuple(extra_ports)
        self.dir = workdir
        self.provisioning = provisioning
        self.controller_port = controller_port
        self.accel = accel
        self.memory_mib = memory_mib
        self.cpus = cpus
        #: A raw image attached as a USB stick on an xHCI controller (the I/O lockdown's test).
        self.usb_stick = usb_stick
        self._swtpm: subprocess.Popen[bytes] | None = None
        self._qemu: subprocess.Popen[bytes] | None = None
        #: Held while the machine is powered on or off (by a test or by the event thread).
        self._power = threading.RLock()
        self._stopping = False
        #: The reasons of the resets the machine went through (QEMU's SHUTDOWN event reasons:
        #: ``guest-reset`` for a reboot from the guest), oldest first.
        self.resets: list[str] = []

    # --- files
    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def qga_socket(self) -> Path:
        return self.dir / "qga.sock"

    @property
    def qmp_socket(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def events_socket(self) -> Path:
        return self.dir / "events.sock"

    @property
    def events_log(self) -> Path:
        return self.dir / "events.log"

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- life cycle
    def start(self) -> None:
        """Prepare the node's files (first time only: a restart is a power cycle of the same
        machine) and power it on.  Raises NodeVmError."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "disk.qcow2").exists():
            self._prepare_disk()
        if not (self.dir / "OVMF_VARS.fd").exists():
            shutil.copyfile(OVMF_VARS, self.dir / "OVMF_VARS.fd")
        with self._power:
            self._stopping = False
            self._power_on()

    def _power_on(self) -> None:
        self._start_swtpm()
        self._start_qemu()
        assert self._qemu is not None
        threading.Thread(target=self._follow_events, args=(self._qemu,), daemon=True,
                         name=f"events {self.dir.name}").start()  # fmt: skip

    def _follow_events(self, qemu: subprocess.Popen[bytes]) -> None:
        """Write QEMU's events to ``events.log`` until it exits; when it exited for a reset
        (``-action reboot=shutdown``) and nobody is stopping the node, power it on again."""
        reason = ""
        with contextlib.suppress(OSError, ValueError), socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.events_socket))
            stream = sock.makefile("rwb")
            stream.readline()  # greeting
            stream.write(b'{"execute": "qmp_capabilities"}\n')
            stream.flush()
            with open(self.events_log, "ab") as log:
                for line in stream:  # until QEMU closes the monitor (its end)
                    message = json.loads(line)
                    if "event" not in message:
                        continue
                    log.write(line)
                    log.flush()
                    if message["event"] == "SHUTDOWN":
                        reason = str(message.get("data", {}).get("reason", ""))
        qemu.wait()
        with self._power:
            if self._stopping or self._qemu is not qemu or "reset" not in reason:
                return
            self.resets.append(reason)
            self._note(f"QEMU exited for a reset ({reason}): powering on again")
            try:
                self._wait_swtpm()
                self._power_on()
            except NodeVmError as exc:
                self._note(f"power on after the reset failed: {exc}")

    def _note(self, text: str) -> None:
        with open(self.events_log, "a") as log:
            log.write(f"# {time.strftime('%H:%M:%S')} {text}\n")

    def _prepare_disk(self) -> None:
        overlay = self.dir / "disk.qcow2"
        partial = self.dir / "disk.qcow2.partial"
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
              "-b", str(self.image.disk.resolve()), str(partial)], "qemu-img create")  # fmt: skip
        start, size = self.image.partition("CONFIG")
        config = self.dir / "config.img"
        config.unlink(missing_ok=True)
        _run(["mkfs.vfat", "-n", "CONFIG", "-C", str(config), str(size // 1024)], "mkfs.vfat")
        files = self.dir / "config"
        shutil.rmtree(files, ignore_errors=True)
        files.mkdir()
        for name, data in self.provisioning.files().items():
            (files / name).write_bytes(data)
        _run(["mcopy", "-i", str(config), *sorted(str(p) for p in files.iterdir()), "::/"],
             "mcopy of the provisioning")  # fmt: skip
        _run(["qemu-io", "-f", "qcow2", "-c", f"write -q -s {config} {start} {size}",
              str(partial)], "qemu-io write of the CONFIG partition")  # fmt: skip
        partial.rename(overlay)

    def _start_swtpm(self) -> None:
        state = self.dir / "swtpm"
        if not (state / "tpm2-00.permall").exists():
            state.mkdir(parents=True, exist_ok=True)
            # SHA-256 only, as the agent expects; the EK is made here, its certificate by the
            # agent (issued by the device key); NV locked as on a real TPM.
            _run(["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--createek",
                  "--pcr-banks", "sha256", "--lock-nvram", "--overwrite",
                  "--logfile", str(state / "swtpm_setup.log")], "swtpm_setup")  # fmt: skip
        sock = state / "swtpm.sock"
        sock.unlink(missing_ok=True)
        log = open(state / "swtpm.out", "ab")  # noqa: SIM115 - the child keeps it
        # --terminate: the TPM goes when QEMU closes its control channel (power off).
        self._swtpm = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
             "--ctrl", f"type=unixio,path={sock}", "--terminate",
             "--log", f"file={state / 'swtpm.log'},level=1"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 10
        while not sock.exists():
            if self._swtpm.poll() is not None or time.monotonic() > deadline:
                raise NodeVmError(f"swtpm did not start: {(state / 'swtpm.out').read_text()}")
            time.sleep(0.05)

    def qemu_argv(self, accel: str) -> list[str]:
        forwards = []
        for port in (self.controller_port, *self.extra_ports):
            relay = f"{sys.executable} {Path(__file__).resolve()} relay 127.0.0.1 {port}"
            if "," in relay:
                raise NodeVmError(f"QEMU cannot take a command with a comma: {relay}")
            forwards.append(f"guestfwd=tcp:{CONTROLLER_ADDRESS}:{port}-cmd:{relay}")
        forward = ",".join(forwards)
        return [
            "qemu-system-x86_64", "-name", self.dir.name, "-nodefaults", "-no-user-config",
            "-machine", f"q35,accel={accel}", "-m", str(self.memory_mib), "-smp", str(self.cpus),
            *(["-cpu", "host"] if accel == "kvm" else []),
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.dir / 'OVMF_VARS.fd'}",
            "-drive", f"if=virtio,format=qcow2,file={self.dir / 'disk.qcow2'},cache=unsafe",
            "-chardev", f"socket,id=chrtpm,path={self.dir / 'swtpm' / 'swtpm.sock'}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0",
            "-netdev", f"user,id=net0,restrict=on,{forward}",
            "-device", "virtio-net-pci,netdev=net0",
            "-chardev", f"socket,id=qga0,path={self.qga_socket},server=on,wait=off",
            "-device", "virtio-serial-pci",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-qmp", f"unix:{self.events_socket},server=on,wait=off",
            "-action", "reboot=shutdown",
            "-serial", f"file:{self.console_log}",
            "-display", "none", "-vga", "none",
            "-device", "virtio-rng-pci",
            *self._usb_argv(),
        ]  # fmt: skip

    def _usb_argv(self) -> list[str]:
        if self.usb_stick is None:
            return []
        if "," in str(self.usb_stick.resolve()):
            raise NodeVmError(f"QEMU cannot take a file name with a comma: {self.usb_stick}")
        return [
            "-device", "qemu-xhci,id=xhci",
            "-drive", f"if=none,id=usbstick,format=raw,file={self.usb_stick.resolve()}",
            "-device", "usb-storage,bus=xhci.0,drive=usbstick",
        ]  # fmt: skip

    def _start_qemu(self) -> None:
        accel = self.accel
        if accel == "auto":
            accel = "kvm" if kvm_works() else "tcg"
        for path in (self.qga_socket, self.qmp_socket, self.events_socket):
            path.unlink(missing_ok=True)
        if self.console_log.exists():  # QEMU truncates it: the last power-on's stays beside
            self.console_log.replace(self.dir / "console.prev.log")
        argv = self.qemu_argv(accel)
        (self.dir / "qemu.argv").write_text(" ".join(argv) + "\n")
        log = open(self.dir / "qemu.log", "ab")  # noqa: SIM115 - the child keeps it
        self._qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                      start_new_session=True)  # fmt: skip
        log.close()
        # QMP answers once the machine is made (a bad option has made QEMU exit by then).
        deadline = time.monotonic() + 30
        while True:
            if self._qemu.poll() is not None or time.monotonic() > deadline:
                self.stop(timeout=5)
                raise NodeVmError(f"QEMU did not start: {(self.dir / 'qemu.log').read_text()}")
            if self.qmp_socket.exists():
                with contextlib.suppress(OSError, ValueError, NodeVmError):
                    self.qmp("query-status")
                    return
            time.sleep(0.1)

    def alive(self) -> bool:
        return self._qemu is not None and self._qemu.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """ACPI power off (systemd stops the agent cleanly), then QEMU's end; killed after
        ``timeout``.  Idempotent."""
        with self._power:
            self._stopping = True
            self._power_off(timeout)

    def _power_off(self, timeout: float) -> None:
        if self.alive():
            with contextlib.suppress(OSError, NodeVmError):
                self.qmp("system_powerdown")
            assert self._qemu is not None
            try:
                self._qemu.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._qemu.pid, signal.SIGKILL)
                self._qemu.wait(10)
        self._wait_swtpm()

    def _wait_swtpm(self) -> None:
        """The swtpm ends with QEMU's control channel; killed if it does not."""
        if self._swtpm is not None:
            try:
                self._swtpm.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._swtpm.pid, signal.SIGKILL)
                self._swtpm.wait(5)

    def reset_if_stuck_restarting(self, after: float = 180.0) -> bool:
        """Reset the machine (QMP ``system_reset``: a power cycle, see the module docstring)
        when its console ended on the kernel's ``reboot: machine restart`` over ``after``
        seconds ago, and say so; whether it did.  QEMU 7.2 (Debian 12) under TCG has been seen
        to spin for good there when it reset the machine in place (q35, OVMF), and its ICH9
        watchdog does not reset the machine: this is what a real board's watchdog would do,
        should a power-cycling reset hang too.  Cheap when nothing is stuck (a stat)."""
        try:
            st = self.console_log.stat()
        except FileNotFoundError:
            return False
        if time.time() - st.st_mtime < after:
            return False
        with open(self.console_log, "rb") as f:
            f.seek(max(0, st.st_size - 256))
            tail = f.read().decode(errors="replace").rstrip()
        if not tail.endswith("reboot: machine restart"):
            return False
        self.qmp("system_reset")
        print(f"node {self.dir}: console silent for {time.time() - st.st_mtime:.0f} s after "
              "the kernel's restart: machine reset", flush=True)  # fmt: skip
        return True

    # --- QMP and the guest agent
    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.qmp_socket))
            stream = sock.makefile("rwb")
            json.loads(stream.readline())  # greeting
            for request in ({"execute": "qmp_capabilities"},
                            {"execute": command, "arguments": arguments or {}}):  # fmt: skip
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                while True:
                    reply = json.loads(stream.readline())
                    if "return" in reply or "error" in reply:
                        break
                if "error" in reply:
                    raise NodeVmError(f"QMP {request['execute']}: {reply['error']}")
            return reply["return"]

    def _qga(self, requests: list[dict[str, Any]], timeout: float) -> list[Any]:
        """Send requests to the guest agent on one connection (after a guest-sync-delimited,
        which skips whatever a previous client left half-read); their answers."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.qga_socket))
            stream = sock.makefile("rwb")
            sync_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
            sync = {"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}
            stream.write(b"\xff" + json.dumps(sync).encode() + b"\n")
            stream.flush()
            while True:
                line = stream.readline()
                if not line:
                    raise NodeVmError("the guest agent closed the channel")
                line = line.lstrip(b"\xff").strip()
                if line and json.loads(line).get("return") == sync_id:
                    break
            answers = []
            for request in requests:
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                reply = json.loads(stream.readline())
                if "error" in reply:
                    raise NodeVmError(f"guest agent {request['execute']}: {reply['error']}")
                answers.append(reply["return"])
            return answers

    def guest_agent_ready(self) -> bool:
        """Whether the guest agent answers (the system is up to udev and basic.target)."""
        try:
            self._qga([{"execute": "guest-ping"}], timeout=3)
        except (OSError, ValueError, NodeVmError):
            return False
        return True

    def exec(self, argv: Sequence[str], timeout: float = 60.0) -> ExecResult:
        """Run ``argv`` in the guest as root (guest-exec) and wait for it.  Raises NodeVmError
        when the guest agent does not answer or the command does not end in ``timeout``."""
        try:
            command = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
            (started,) = self._qga([{"execute": "guest-exec", "arguments": command}], timeout=15)
            deadline = time.monotonic() + timeout
            while True:
                query = {"execute": "guest-exec-status", "arguments": {"pid": started["pid"]}}
                (status,) = self._qga([query], timeout=15)
                if status.get("exited"):
                    break
                if time.monotonic() > deadline:
                    raise NodeVmError(f"{' '.join(argv)}: still running after {timeout:.0f} s")
                time.sleep(0.2)
        except (OSError, ValueError) as exc:
            raise NodeVmError(f"guest agent: {exc}") from exc

        def text(key: str) -> str:
            return base64.b64decode(status.get(key, "")).decode(errors="replace")

        return ExecResult(int(status.get("exitcode", -1)), text("out-data"), text("err-data"))


def relay(host: str, port: int) -> int:
    """Copy between stdin/stdout (QEMU's end of one guest connection) and ``host:port``."""
    upstream = socket.create_connection((host, port), timeout=10)
    upstream.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, upstream.fileno())
    sel.register(upstream, selectors.EVENT_READ, 1)
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            source = key.fd
            data = os.read(source, 65536)
            if not data:
                sel.unregister(source)
                open_ends -= 1
                if source == 0:
                    with contextlib.suppress(OSError):
                        upstream.shutdown(socket.SHUT_WR)
                else:
                    with contextlib.suppress(OSError):
                        os.close(1)
                continue
            view = memoryview(data)
            while view:
                view = view[os.write(key.data, view) :]
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="node_vm.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build (cached) and boot N nodes until interrupted")
    up.add_argument("--dir", type=Path, required=True, help="the nodes' directories go here")
    up.add_argument("--nodes", type=int, default=1)
    up.add_argument("--certs", type=Path, required=True,
                    help="controller's certs/ (eve-controller init --ip 10.0.2.100)")  # fmt: skip
    up.add_argument("--port", type=int, required=True, help="the controller's port on 127.0.0.1")
    up.add_argument("--serial-prefix", default="node-vm-")
    up.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    up.add_argument("--memory", type=int, default=2048, help="MiB per node")
    up.add_argument("--cpus", type=int, default=2)
    up.add_argument("--usb-stick", type=Path, metavar="RAW",
                    help="attach this raw image to each node as a USB stick (xHCI)")  # fmt: skip
    ex = sub.add_parser("exec", help="run a command in a running node (guest agent)")
    ex.add_argument("node_dir", type=Path)
    ex.add_argument("argv", nargs="+")
    rel = sub.add_parser("relay", help=argparse.SUPPRESS)
    rel.add_argument("host")
    rel.add_argument("port", type=int)
    args = p.parse_args(argv)

    if args.command == "relay":
        return relay(args.host, args.port)
    if args.command == "exec":
        node = Node(NodeImage(Path("/dev/null"), {}), args.node_dir,
                    Provisioning("", b"", b"", b"", ""), controller_port=0)  # fmt: skip
        result = node.exec(args.argv)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.exitcode

    # `up` runs until SIGINT or SIGTERM (also when started in the background, where SIGINT
    # would be ignored), then powers the nodes off.
    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    image = NodeImage.build()
    nodes: list[Node] = []
    try:
        for i in range(1, args.nodes + 1):
            provisioning = Provisioning.from_certs(args.certs, args.port,
                                                   f"{args.serial_prefix}{i}")  # fmt: skip
            node = Node(image, args.dir / f"node-{i}", provisioning, controller_port=args.port,
                        accel=args.accel, memory_mib=args.memory, cpus=args.cpus,
                        usb_stick=args.usb_stick)  # fmt: skip
            nodes.append(node)
            node.start()
            print(f"node-{i}: {node.dir} (console: {node.console_log})", flush=True)
        while any(n.alive() for n in nodes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for node in nodes:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
