"""Issue 9, controller side: what a peer sends cannot forge or split the controller's log lines."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from controller.api import PREFIX
from controller.logsafe import LogThrottle, SafeFormatter, printable
from tests.unit.test_controller_harness import Harness, controller_harness

FORGED = quote("\n2030-01-01 00:00:00,000 INFO controller.api: POST /forged 201 device=x", "/")


@pytest.fixture
async def ctl(tmp_path: Path) -> AsyncIterator[Harness]:
    async with controller_harness(tmp_path) as harness:
        yield harness


def api_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "controller.api"]


async def test_a_newline_in_the_path_does_not_start_a_log_line(
    ctl: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controller.api")
    async with ctl.client.get(f"{PREFIX}/ping{FORGED}%1b[2J") as resp:
        assert resp.status == 404
    [line] = api_lines(caplog)
    assert "\n" not in line and "\x1b" not in line
    assert "/ping\\n2030-01-01" in line
    assert "\\x1b[2J" in line


async def test_device_supplied_strings_in_details_stay_on_one_line(
    ctl: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    device = await ctl.onboarded()
    caplog.set_level(logging.INFO, logger="controller.api")
    answer = await device.send(f"/id/{device.uuid}/apps/instanceid/a%0Ab%0D/newlogs", b"")
    assert answer.status == 400
    [line] = api_lines(caplog)
    assert "\n" not in line and "\r" not in line
    assert "a\\nb\\r" in line


def test_printable_escapes_unambiguously_and_cuts() -> None:
    assert printable("plain /path") == "plain /path"
    assert printable("a\nb\r\tc\x1b[0m") == "a\\nb\\r\\tc\\x1b[0m"
    assert printable("line\u2028separator\x85") == "line\\u2028separator\\x85"
    # A backslash is doubled, so "\\n" sent as two characters cannot pass for an escape.
    assert printable("a\\nb") == "a\\\\nb"
    assert printable("x" * 250, 10) == "xxxxxxxxxx...(+240 chars)"


def test_safe_formatter_keeps_a_record_on_one_line() -> None:
    record = logging.LogRecord("aiohttp", logging.ERROR, __file__, 1, "bad %s", ("a\nb",), None)
    formatted = SafeFormatter("%(name)s: %(message)s").format(record)
    assert formatted == "aiohttp: bad a\\nb"
    assert record.getMessage() == "bad a\nb"  # other handlers see the record unchanged


def test_throttle_lets_one_line_per_condition_through() -> None:
    now = [0.0]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    log = logging.getLogger("test.throttle")
    log.propagate = False
    log.addHandler(Collect())
    throttle = LogThrottle(log, interval=60.0, clock=lambda: now[0])
    for _ in range(100):
        throttle.warning_for("rate dev-1", "device %s refused", "dev-1")
    throttle.warning_for("rate dev-2", "device %s refused", "dev-2")
    now[0] = 61.0
    throttle.warning_for("rate dev-1", "device %s refused", "dev-1")
    assert records == [
        "device dev-1 refused",
        "device dev-2 refused",
        "device dev-1 refused (and 99 more like it since the last such line)",
    ]


def test_cli_serve_log_has_one_line_per_request(tmp_path: Path) -> None:
    """The real command: its log stream cannot be made to carry a line the peer wrote."""
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
            url = proc.stdout.readline().split()[-1]
            tls = ssl.create_default_context(cafile=str(state / "certs" / "root-certificate.pem"))
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{url}{PREFIX}/ping{FORGED}", context=tls, timeout=10)
            assert refused.value.code == 404
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = stderr.splitlines()
    assert not [line for line in lines if "/forged" in line and "/ping" not in line], stderr
    assert len([line for line in lines if "controller.api:" in line]) == 1, stderr
