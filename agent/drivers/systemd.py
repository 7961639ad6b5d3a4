"""systemd's service protocol: notifications to the service manager (sd_notify) and the watchdog
period it asked for.  No library: the protocol is one datagram on a Unix socket.
"""

from __future__ import annotations

import contextlib
import os
import socket


def sd_notify(message: str) -> None:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1``, ``STATUS=...``) when NOTIFY_SOCKET is set;
    silently nothing otherwise.  Never blocks and never raises: a lost notification is harmless,
    a notifier that hangs the agent is not."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(address)
        sock.sendall(message.encode())


def watchdog_interval() -> float | None:
    """Half of systemd's watchdog period for this process (WATCHDOG_USEC, WATCHDOG_PID), or None
    when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.1, int(usec) / 2e6)
    except ValueError:
        return None
