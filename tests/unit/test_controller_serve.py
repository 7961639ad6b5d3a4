"""``eve-controller serve``: HTTPS with the controller's certificates, ready line, clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from controller.api import PREFIX
from controller.identity import init_certs
from controller.server import ListenAddress, serve
from controller.state import StateDir


def client_tls(state: StateDir) -> ssl.SSLContext:
    """What a device does: trust only the controller's root certificate."""
    return ssl.create_default_context(cafile=str(state.root_cert))


async def test_serve_answers_over_tls_and_stops(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    init_certs(state)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(state, ListenAddress("127.0.0.1", 0), ready=ready.set_result, stop=stop)
    )
    url = await asyncio.wait_for(ready, 10)
    assert url.startswith("https://127.0.0.1:") and not url.endswith(":0")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}{PREFIX}/certs", ssl=client_tls(state)) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-proto-binary"
    # The name "localhost" is in the certificate too.
    port = url.rsplit(":", 1)[1]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://localhost:{port}{PREFIX}/ping", ssl=client_tls(state)) as resp,
    ):
        assert resp.status == 200
    stop.set()
    await asyncio.wait_for(server, 10)


def test_listen_address_parsing() -> None:
    assert ListenAddress.parse("127.0.0.1:8443") == ListenAddress("127.0.0.1", 8443)
    assert ListenAddress.parse("[::1]:0") == ListenAddress("::1", 0)
    assert ListenAddress("::1", 1).url() == "https://[::1]:1"
    for bad in ("8443", ":8443", "host:port", "host:70000"):
        with pytest.raises(ValueError):
            ListenAddress.parse(bad)


def test_cli_serve_prints_ready_line_and_exits_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cli = [sys.executable, "-m", "controller", "--state", str(state)]
    subprocess.run([*cli, "init"], check=True, capture_output=True, timeout=60)
    with subprocess.Popen(
        [*cli, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on https://127.0.0.1:"), line
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
