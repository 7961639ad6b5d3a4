# SPDX-License-Identifier: Apache-2.0
"""The host services and tools the test suite needs are really there and really work.

Started by ``tools/services.sh start`` (``make services``): dockerd, libvirtd (+ virtlogd) and
the registry on 127.0.0.1:5000. swtpm and the network namespace are made by the tests here.
Every object made here is named ``evetest-...`` / ``evetest_...`` and removed again, also when
a test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

RequireService = Callable[[str, str], NoReturn]

REPO = Path(__file__).resolve().parents[2]
UNITS = ("eve-agent.service", "eve-controller.service")
LIBVIRT_URI = "qemu:///system"
REGISTRY_ADDR = os.environ.get("EVE_REGISTRY_ADDR", "127.0.0.1:5000")
DOCKER_HOST = os.environ.get("DOCKER_HOST", "unix:///run/docker.sock")


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _need_binary(require_service: RequireService, name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        require_service(name, f"not on PATH (Debian package {package}; run `make deps`)")
    return path


def _need_root(require_service: RequireService, what: str) -> None:
    if os.geteuid() != 0:
        require_service(what, "needs root")


# --- tools the tests and the agent call --------------------------------------------------


@pytest.mark.parametrize(
    ("binary", "package"),
    [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("swtpm", "swtpm"),
        ("swtpm_setup", "swtpm-tools"),
        ("tpm2_getrandom", "tpm2-tools"),
        ("dnsmasq", "dnsmasq"),
        ("nft", "nftables"),
        ("ip", "iproute2"),
        ("conntrack", "conntrack"),
        ("busybox", "busybox-static"),
        ("xorriso", "xorriso"),
        ("genisoimage", "genisoimage"),
    ],
)
def test_tool_installed(binary: str, package: str, require_service: RequireService) -> None:
    _need_binary(require_service, binary, package)


def test_venv_imports_driver_bindings() -> None:
    """The venv has every driver binding, including Debian's nftables (symlinked in)."""
    proc = _run(
        [sys.executable, "-c", "import nftables, tpm2_pytss, libvirt, docker, pyroute2"],
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


# --- systemd units ------------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_unit_file_verifies(unit: str, tmp_path: Path, require_service: RequireService) -> None:
    analyze = _need_binary(require_service, "systemd-analyze", "systemd")
    source = (REPO / "systemd" / unit).read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", source, re.MULTILINE)
    assert exec_start is not None, f"{unit} has no ExecStart="
    assert exec_start.group(1).startswith("/"), "ExecStart= must be an absolute path"
    # The installed console script need not exist here: verify a copy that runs /bin/true.
    copy = tmp_path / unit
    copy.write_text(source.replace(f"ExecStart={exec_start.group(1)}", "ExecStart=/bin/true"))
    proc = _run([analyze, "verify", str(copy)], timeout=60)
    output = proc.stdout + proc.stderr
    ours = [line for line in output.splitlines() if str(copy) in line or unit in line]
    assert proc.returncode == 0, output
    assert not ours, "systemd-analyze verify complained:\n" + "\n".join(ours)


def test_agent_unit_is_a_watched_notify_service() -> None:
    settings = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in (REPO / "systemd" / "eve-agent.service").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["WatchdogSec"] == "60"
    assert settings["Restart"] == "always"
    # A private mount namespace would hide the agent's mounts and netns from other daemons.
    for key in ("ProtectSystem", "PrivateTmp", "ProtectHome", "PrivateDevices", "DeviceAllow"):
        assert key not in settings, f"{key}= breaks the agent"


# --- dockerd -------------------------------------------------------------------------------


def test_dockerd_answers(require_service: RequireService) -> None:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=20)
    except DockerException as exc:
        error = str(exc)
    else:
        error = ""
    if error:
        require_service("dockerd", f"{DOCKER_HOST}: {error}")
    try:
        assert client.ping() is True
        version = client.version()
        assert version.get("Version"), version
        info = client.info()
        assert info.get("ServerVersion")
    finally:
        client.close()


# --- libvirtd --------------------------------------------------------------------------------


def test_virtlogd_running(require_service: RequireService) -> None:
    _need_root(require_service, "virtlogd")
    if not Path("/run/libvirt/virtlogd-sock").is_socket():
        require_service("virtlogd", "/run/libvirt/virtlogd-sock missing")


@pytest.fixture
def libvirt_conn(require_service: RequireService) -> Iterator[object]:
    _need_root(require_service, "libvirtd")
    import libvirt

    try:
        conn = libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        error = str(exc)
    else:
        error = ""
    if error:
        require_service("libvirtd", f"{LIBVIRT_URI}: {error}")
    try:
        yield conn
    finally:
        conn.close()


def _undefine_if_present(conn: object, name: str) -> None:
    import libvirt

    assert isinstance(conn, libvirt.virConnect)
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    with contextlib.suppress(libvirt.libvirtError):  # a transient domain is gone once destroyed
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefine()


def test_libvirt_defines_and_undefines_a_domain(libvirt_conn: object) -> None:
    import libvirt

    conn = libvirt_conn
    assert isinstance(conn, libvirt.virConnect)
    assert conn.getVersion() > 0
    name = f"evetest-{secrets.token_hex(4)}"
    xml = f"""
    <domain type='qemu'>
      <name>{name}</name>
      <memory unit='MiB'>32</memory>
      <vcpu>1</vcpu>
      <os><type arch='x86_64'>hvm</type></os>
      <devices/>
    </domain>
    """
    try:
        dom = conn.defineXML(xml)
        assert dom.name() == name
        assert conn.lookupByName(name).UUIDString() == dom.UUIDString()
        assert not dom.isActive()
        dom.undefine()
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(name)
    finally:
        _undefine_if_present(conn, name)


def test_libvirt_runs_a_transient_tcg_domain(libvirt_conn: object) -> None:
    """QEMU starts under libvirtd with TCG (no usable KVM here) and is destroyed again."""
    import libvirt

    conn = libvirt_conn
    assert isinstance(conn, libvirt.virConnect)
    name = f"evetest-{secrets.token_hex(4)}"
    xml = f"""
    <domain type='qemu'>
      <name>{name}</name>
      <memory unit='MiB'>64</memory>
      <vcpu>1</vcpu>
      <os><type arch='x86_64'>hvm</type></os>
      <devices><serial type='pty'/></devices>
    </domain>
    """
    try:
        dom = conn.createXML(xml, 0)
        assert dom.isActive()
        state, _reason = dom.state()
        assert state == libvirt.VIR_DOMAIN_RUNNING
        dom.destroy()
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(name)
    finally:
        _undefine_if_present(conn, name)


# --- registry ----------------------------------------------------------------------------------


def test_registry_answers(require_service: RequireService) -> None:
    url = f"http://{REGISTRY_ADDR}/v2/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    status, api, error = 0, None, ""
    try:
        with opener.open(url, timeout=10) as response:
            status = response.status
            api = response.headers.get("Docker-Distribution-Api-Version")
    except (urllib.error.URLError, OSError) as exc:
        error = str(exc)
    if error:
        require_service("registry", f"{url}: {error}")
    assert status == 200
    assert api == "registry/2.0"


# --- swtpm + tpm2-tools + tpm2-pytss -----------------------------------------------------------


def _free_port_pair() -> int:
    """A free loopback TCP port P with P + 1 free too: the swtpm TCTI of tpm2-tss always
    finds the simulator's control channel on the command port + 1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a:
            a.bind(("127.0.0.1", 0))
            port: int = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free pair of loopback ports")


def _wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture
def swtpm_port(tmp_path: Path, require_service: RequireService) -> Iterator[int]:
    """A TPM 2.0 simulator (swtpm) on loopback TCP in a temp dir; yields its command port."""
    swtpm = _need_binary(require_service, "swtpm", "swtpm")
    state = tmp_path / "tpmstate"
    state.mkdir()
    log = tmp_path / "swtpm.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(3):  # a picked port can be taken in between: retry
            port = _free_port_pair()
            ctrl = port + 1
            proc = subprocess.Popen(
                [
                    swtpm, "socket", "--tpm2",
                    "--tpmstate", f"dir={state}",
                    "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                    "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
                    # the swtpm TCTI of tpm2-tss 3.x does not send the power-on/init itself
                    "--flags", "not-need-init",
                    "--log", f"file={log},level=2",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if _wait_listening(ctrl, proc):
                break
            proc.kill()
            proc.wait()
            proc = None
        if proc is None:
            detail = log.read_text() if log.exists() else "no log"
            require_service("swtpm", f"did not start: {detail}")
        yield port
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_swtpm_with_tpm2_tools_and_pytss(swtpm_port: int, require_service: RequireService) -> None:
    startup = _need_binary(require_service, "tpm2_startup", "tpm2-tools")
    getrandom = _need_binary(require_service, "tpm2_getrandom", "tpm2-tools")
    tcti = f"swtpm:host=127.0.0.1,port={swtpm_port}"

    proc = _run([startup, "--clear", "-T", tcti])
    assert proc.returncode == 0, proc.stderr
    proc = _run([getrandom, "-T", tcti, "--hex", "16"])
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"[0-9a-f]{32}", proc.stdout.strip()), proc.stdout

    # The binding the agent uses, compiled against Debian's libtss2, talks to the same TPM.
    from tpm2_pytss import ESAPI, TCTILdr

    with ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={swtpm_port}")) as esys:
        assert len(bytes(esys.get_random(8))) == 8


# --- nftables in a network namespace ------------------------------------------------------------


@pytest.fixture
def netns(require_service: RequireService) -> Iterator[str]:
    """A fresh, empty network namespace ``evetest-<random>``, removed afterwards."""
    _need_root(require_service, "network namespaces")
    ip = _need_binary(require_service, "ip", "iproute2")
    name = f"evetest-{secrets.token_hex(4)}"
    proc = _run([ip, "netns", "add", name])
    if proc.returncode != 0:
        require_service("network namespaces", f"ip netns add: {proc.stderr.strip()}")
    try:
        yield name
    finally:
        _run([ip, "netns", "delete", name])
    assert name not in _run([ip, "netns", "list"]).stdout.split()


def test_nft_table_in_fresh_netns(netns: str, require_service: RequireService) -> None:
    nft = _need_binary(require_service, "nft", "nftables")
    ip = _need_binary(require_service, "ip", "iproute2")
    table = f"evetest_{secrets.token_hex(4)}"
    in_ns = [ip, "netns", "exec", netns]

    # Made through Debian's Python binding (as the agent's firewall driver does) ...
    script = (
        "import nftables\n"
        "n = nftables.Nftables()\n"
        f"rc, out, err = n.cmd('add table inet {table}')\n"
        "assert rc == 0, err\n"
    )
    proc = _run([*in_ns, sys.executable, "-c", script])
    assert proc.returncode == 0, proc.stderr
    # ... seen by the nft CLI inside the namespace, and not in the root namespace.
    assert f"table inet {table}" in _run([*in_ns, nft, "list", "tables"]).stdout
    assert table not in _run([nft, "list", "tables"]).stdout

    proc = _run([*in_ns, nft, "delete", "table", "inet", table])
    assert proc.returncode == 0, proc.stderr
    assert table not in _run([*in_ns, nft, "list", "tables"]).stdout
