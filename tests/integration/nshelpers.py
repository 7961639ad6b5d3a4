"""Small helpers for tests that build topologies of network namespaces (root): run ``ip``, run
a command in a namespace, an app stand-in (a namespace on a bridge), and a tiny TCP server and
client that tell who called."""

from __future__ import annotations

import subprocess
import time

#: A server that answers each connection with the caller's address, then closes.
WHO = (
    "import socket, sys\n"
    "host = sys.argv[2] if len(sys.argv) > 2 else '0.0.0.0'\n"
    "s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((host, int(sys.argv[1]))); s.listen(8)\n"
    "while True:\n"
    "    c, a = s.accept(); c.sendall(a[0].encode()); c.close()\n"
)
#: Its client: prints what the server at ``argv[1]:argv[2]`` says (exit status 1 if none).
ASK = (
    "import socket, sys\n"
    "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    "print(c.recv(64).decode())\n"
)


def ip(*argv: str) -> None:
    """``ip ARGV``; raises CalledProcessError."""
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


def in_ns(ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``argv`` in namespace ``ns`` (never raises for its exit status)."""
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=False, timeout=timeout)  # fmt: skip


def ask(ns: str, host: str, port: int) -> subprocess.CompletedProcess[str]:
    """Connect from ``ns`` to ``host:port`` and read what a :data:`WHO` server says."""
    return in_ns(ns, "python3", "-c", ASK, host, str(port))


def serve_who(ns: str, port: int, host: str = "0.0.0.0") -> subprocess.Popen[bytes]:
    """A :data:`WHO` server in ``ns`` on ``host`` (``::``: IPv6; the caller kills it)."""
    return subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", WHO, str(port), host],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def app_standin(
    node_ns: str, app_ns: str, bridge: str, link: str, address: str = "",
    gateway: str = "", mac: str = "",
) -> None:  # fmt: skip
    """An app stand-in: namespace ``app_ns`` with ``eth0`` on ``bridge`` of ``node_ns`` (the
    host side named ``link``), at ``address`` (``a.b.c.d/len``; none: left for DHCP) and
    ``mac``, with a default route via ``gateway`` when given."""
    ip("netns", "add", app_ns)
    ip("-n", app_ns, "link", "set", "lo", "up")
    ip("-n", node_ns, "link", "add", link, "type", "veth", "peer", "name", "eth0",
       "netns", app_ns)  # fmt: skip
    ip("-n", node_ns, "link", "set", link, "master", bridge, "up")
    if mac:
        ip("-n", app_ns, "link", "set", "eth0", "address", mac)
    if address:
        ip("-n", app_ns, "addr", "add", address, "dev", "eth0")
    ip("-n", app_ns, "link", "set", "eth0", "up")
    if gateway:
        ip("-n", app_ns, "route", "add", "default", "via", gateway)


_CONNECT = (
    "import socket, sys\n"
    "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
)


def wait_listening(where: list[str], host: str, port: int, within: float = 20.0) -> None:
    """Until something accepts on ``host:port``, connecting from the namespace ``where`` runs
    commands in (``["ip", "netns", "exec", NS]`` or ``["nsenter", "--net=..."]``): a server
    just started may need seconds on a loaded machine.  AssertionError after ``within``."""
    deadline = time.monotonic() + within
    while True:
        done = subprocess.run([*where, "python3", "-c", _CONNECT, host, str(port)],
                              capture_output=True, check=False, timeout=30)  # fmt: skip
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {host}:{port} after {within:g} s")
        time.sleep(0.2)
