"""Load on a real ``eve-controller``: well-behaved devices measuring latency, beside hostile ones.

The shared toolkit of the hostile-client test (``tests/e2e/test_controller_hostile.py``) and
its ``make bench`` figure (``tools/bench_controller.py``):

* :class:`ControllerProcess` - ``eve-controller init``, the onboarding cert allow-listed for any
  serial, and ``serve`` as a child process on a free loopback port, its output in a log file;
* :func:`enrol` - devices made the way EVE makes them: a P-256 device key and self-signed
  certificate, ``/register`` signed by the onboarding cert, ``/uuid``, and attestation without
  a TPM (nonce, empty quote) for the integrity token that ``/config`` wants;
* :func:`well_behaved` - each device on its own keep-alive connection, one request every
  ``period`` seconds in turn: ``GET /ping``, ``POST /config``, ``POST /info``; every request's
  latency and status is recorded (:class:`Samples`);
* :func:`hostile_process` - the hostile clients of :mod:`tools.controller_hostile`, run as a
  separate process so that their CPU use does not delay the measuring clients' event loop
  (they compete with the controller for the machine's cores, as a real attacker's traffic
  would).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.wire import envelope, pki  # noqa: E402
from agent.wire.pb.attest import attest_pb2  # noqa: E402
from agent.wire.pb.config import devconfig_pb2  # noqa: E402
from agent.wire.pb.eveuuid import eveuuid_pb2  # noqa: E402
from agent.wire.pb.info import info_pb2  # noqa: E402
from agent.wire.pb.register import register_pb2  # noqa: E402

PREFIX = "/api/v2/edgedevice"
HOST = "127.0.0.1"
REQUEST_TIMEOUT = 15.0
"""Seconds a well-behaved request may take before it counts as an error (a stall)."""


class LoadError(RuntimeError):
    """The controller could not be started or a device could not be enrolled."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ControllerProcess:
    """An ``eve-controller`` state directory under ``root`` and its ``serve`` process.

    Use as a context manager: the process is stopped (SIGTERM, then SIGKILL) on exit, also when
    the body fails.  ``max_connections`` is ``serve --max-connections``; ``python_args`` go
    before ``-m controller`` (``["-m", "cProfile", "-o", FILE]`` profiles the server).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_connections: int | None = None,
        python_args: Sequence[str] = (),
    ) -> None:
        self.python_args = list(python_args)
        self.state = root / "controller"
        self.log_path = root / "controller.log"
        self.port = _free_port()
        self.max_connections = max_connections
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def root_cert(self) -> Path:
        return self.state / "certs" / "root-certificate.pem"

    def _cli(self, *args: str) -> None:
        argv = [sys.executable, "-m", "controller", "--state", str(self.state), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
        if done.returncode != 0:
            raise LoadError(f"eve-controller {' '.join(args)}: {done.stderr.strip()}")

    def __enter__(self) -> ControllerProcess:
        self._cli("init")
        onboard = self.state / "certs" / "onboard.cert.pem"
        self._cli("onboard", "add", "--cert", str(onboard), "--any-serial")
        argv = [sys.executable, *self.python_args, "-m", "controller"]
        argv += ["--state", str(self.state), "serve"]
        argv += ["--listen", f"{HOST}:{self.port}"]
        if self.max_connections is not None:
            argv += ["--max-connections", str(self.max_connections)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
            )
        try:
            deadline = time.monotonic() + 30
            while "listening on" not in self.log():
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise LoadError(f"the controller did not start:\n{self.log()[-2000:]}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def tls(self) -> ssl.SSLContext:
        """A client context that trusts the controller's root, as devices do."""
        return ssl.create_default_context(cafile=str(self.root_cert))


# --- devices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """A registered, attested device: its UUID, key and certificate, integrity token."""

    uuid: str
    signer: envelope.SoftwareSigner
    token: bytes

    def seal(self, message: bytes) -> bytes:
        return envelope.seal_as_device(message, self.signer)

    def to_json(self) -> dict[str, str]:
        return {
            "uuid": self.uuid,
            "key": pki.key_pem(self.signer.key).decode(),
            "cert": pki.cert_pem(self.signer.cert).decode(),
            "token": base64.b64encode(self.token).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Device:
        signer = envelope.SoftwareSigner(
            key=pki.load_key(data["key"].encode()), cert=pki.load_cert(data["cert"].encode())
        )
        return cls(data["uuid"], signer, base64.b64decode(data["token"]))

    def config_request(self) -> bytes:
        return self.seal(
            devconfig_pb2.ConfigRequest(integrity_token=self.token).SerializeToString()
        )

    def info_request(self) -> bytes:
        info = info_pb2.ZInfoMsg(ztype=info_pb2.ZiDevice, devId=self.uuid)
        info.atTimeStamp.GetCurrentTime()
        return self.seal(info.SerializeToString())


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, bytes]:
    async with session.post(url, data=body) as resp:
        return resp.status, await resp.read()


async def _enrol_one(
    session: aiohttp.ClientSession, url: str, onboard: envelope.SoftwareSigner, serial: str
) -> Device:
    key = pki.new_ec_key()
    signer = envelope.SoftwareSigner(key=key, cert=pki.make_certificate(key, f"device {serial}"))
    register = register_pb2.ZRegisterMsg(
        pemCert=base64.b64encode(pki.cert_pem(signer.cert)), serial=serial
    )
    body = envelope.seal_as_device(register.SerializeToString(), onboard, include_cert=True)
    status, answer = await _post(session, f"{url}{PREFIX}/register", body)
    if status not in (200, 201):
        raise LoadError(f"register {serial}: {status} {answer[:200]!r}")
    sealed = envelope.seal_as_device(eveuuid_pb2.UuidRequest().SerializeToString(), signer)
    status, answer = await _post(session, f"{url}{PREFIX}/uuid", sealed)
    if status != 200:
        raise LoadError(f"uuid {serial}: {status} {answer[:200]!r}")
    uuid_response = eveuuid_pb2.UuidResponse()
    uuid_response.ParseFromString(envelope.parse(answer).payload)
    device_uuid = uuid_response.uuid
    token = b""
    for request in (
        attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_NONCE),
        attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_QUOTE, quote=attest_pb2.ZAttestQuote()),
    ):
        sealed = envelope.seal_as_device(request.SerializeToString(), signer)
        status, answer = await _post(session, f"{url}{PREFIX}/id/{device_uuid}/attest", sealed)
        if status != 201:
            raise LoadError(f"attest {serial}: {status} {answer[:200]!r}")
        response = attest_pb2.ZAttestResponse()
        response.ParseFromString(envelope.parse(answer).payload)
        token = bytes(response.quoteResp.integrity_token) or token
    if not token:
        raise LoadError(f"attest {serial}: no integrity token")
    return Device(device_uuid, signer, token)


async def enrol(ctl: ControllerProcess, serials: Sequence[str]) -> list[Device]:
    """Register, attest (without a TPM) and return one device per serial."""
    state_certs = ctl.state / "certs"
    onboard = envelope.SoftwareSigner(
        key=pki.load_key((state_certs / "onboard.key.pem").read_bytes()),
        cert=pki.load_cert((state_certs / "onboard.cert.pem").read_bytes()),
    )
    connector = aiohttp.TCPConnector(ssl=ctl.tls(), limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:
        return list(
            await asyncio.gather(*(_enrol_one(session, ctl.url, onboard, s) for s in serials))
        )


# --- well-behaved clients -----------------------------------------------------------------------


@dataclass
class Samples:
    """Latencies (seconds) and outcomes of well-behaved requests."""

    latencies: list[float] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    """When each request was made, in seconds since ``started`` (parallel to latencies)."""
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    """Anything but the expected status: ``"POST /config: 503"``, timeouts, resets."""
    slowest: list[tuple[float, str, float]] = field(default_factory=list)
    """The ten slowest requests at least: latency, what, seconds since the first request."""
    started: float = field(default_factory=time.monotonic)

    def add(self, what: str, latency: float, status: int, expected: int) -> None:
        self.latencies.append(latency)
        self.at.append(time.monotonic() - latency - self.started)
        self.by_kind.setdefault(what, []).append(latency)
        self.statuses[f"{what} {status}"] += 1
        if status != expected:
            self.errors.append(f"{what}: {status}")
        self.slowest.append((latency, what, time.monotonic() - self.started))
        if len(self.slowest) > 40:
            self.slowest.sort(reverse=True)
            del self.slowest[10:]

    def worst(self, count: int = 5) -> str:
        """The ``count`` slowest requests, and when they were made."""
        return ", ".join(
            f"{what} {latency * 1e3:.0f} ms at {at:.1f} s"
            for latency, what, at in sorted(self.slowest, reverse=True)[:count]
        )

    def percentile(
        self, fraction: float, what: str | None = None, *, after: float | None = None
    ) -> float:
        """The ``fraction`` quantile (nearest rank) of the latencies, of one kind of request
        (``"GET /ping"``) or of all, or of the requests made ``after`` seconds into the phase;
        0 when there are none."""
        values = self.latencies if what is None else self.by_kind.get(what, [])
        if after is not None:
            values = [lat for lat, at in zip(self.latencies, self.at, strict=True) if at >= after]
        if not values:
            return 0.0
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]

    @property
    def count(self) -> int:
        return len(self.latencies)

    def summary(self) -> str:
        return (
            f"{self.count} requests, p50 {self.percentile(0.5) * 1e3:.1f} ms, "
            f"p99 {self.percentile(0.99) * 1e3:.1f} ms, "
            f"max {max(self.latencies, default=0.0) * 1e3:.1f} ms, {len(self.errors)} errors ("
            + ", ".join(
                f"{what} p50 {self.percentile(0.5, what) * 1e3:.1f} "
                f"p99 {self.percentile(0.99, what) * 1e3:.1f}"
                for what in sorted(self.by_kind)
            )
            + ")"
        )


async def _device_loop(
    device: Device, url: str, tls: ssl.SSLContext, until: float, period: float, out: Samples
) -> None:
    # One keep-alive connection per device, as EVE keeps one to its controller.
    connector = aiohttp.TCPConnector(ssl=tls, limit=1)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        turn = random.randrange(3)
        next_at = time.monotonic() + random.uniform(0, period)
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() >= until:
                return
            next_at += period
            kind = turn % 3
            turn += 1
            if kind == 0:
                what, method, path, body, expected = "GET /ping", "GET", "/ping", b"", 200
            elif kind == 1:
                what, method, expected = "POST /config", "POST", 200
                path, body = f"/id/{device.uuid}/config", device.config_request()
            else:
                what, method, expected = "POST /info", "POST", 201
                path, body = f"/id/{device.uuid}/info", device.info_request()
            started = time.perf_counter()
            try:
                async with session.request(method, f"{url}{PREFIX}{path}", data=body) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                elapsed = time.perf_counter() - started
                out.latencies.append(elapsed)
                out.at.append(time.monotonic() - elapsed - out.started)
                out.errors.append(f"{what}: {type(exc).__name__}: {exc}")
                continue
            out.add(what, time.perf_counter() - started, status, expected)


async def well_behaved(
    ctl: ControllerProcess, devices: Sequence[Device], *, duration: float, period: float = 0.5
) -> Samples:
    """Every device makes one request each ``period`` seconds for ``duration`` seconds."""
    out = Samples()
    tls = ctl.tls()
    until = time.monotonic() + duration
    await asyncio.gather(*(_device_loop(d, ctl.url, tls, until, period, out) for d in devices))
    return out


# --- the hostile process ------------------------------------------------------------------------

HOSTILE_KINDS = ("flood", "idle", "bomb")


@contextlib.contextmanager
def hostile_process(
    ctl: ControllerProcess,
    device: Device,
    kinds: Sequence[str],
    *,
    duration: float,
    workdir: Path,
    idle_connections: int = 300,
    flood_connections: int = 8,
) -> Iterator[HostileRun]:
    """Run :mod:`tools.controller_hostile` against ``ctl`` as ``device`` for ``duration``
    seconds in a child process; the body runs meanwhile.  The child is killed on exit if it
    has not finished; :meth:`HostileRun.result` waits for its report."""
    unknown = set(kinds) - set(HOSTILE_KINDS)
    if unknown:
        raise ValueError(f"unknown hostile kinds {sorted(unknown)}")
    creds = workdir / "hostile-device.json"
    creds.write_text(json.dumps(device.to_json()))
    creds.chmod(0o600)
    report = workdir / f"hostile-{'-'.join(kinds)}-{time.monotonic_ns()}.json"
    argv = [sys.executable, str(REPO / "tools" / "controller_hostile.py")]
    argv += ["--url", ctl.url, "--ca", str(ctl.root_cert), "--device", str(creds)]
    argv += ["--kinds", ",".join(kinds), "--duration", str(duration), "--report", str(report)]
    argv += ["--idle-connections", str(idle_connections)]
    argv += ["--flood-connections", str(flood_connections)]
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, start_new_session=True)
    run = HostileRun(proc, report, duration)
    try:
        yield run
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


@dataclass
class HostileRun:
    """A running hostile process."""

    proc: subprocess.Popen[bytes]
    report: Path
    duration: float

    def result(self) -> dict[str, dict[str, float]]:
        """Wait for the process and return its report: per kind, counters (see
        :mod:`tools.controller_hostile`).  Raises LoadError when it failed."""
        try:
            _, err = self.proc.communicate(timeout=self.duration + 60)
        except subprocess.TimeoutExpired as exc:
            raise LoadError("the hostile process did not finish") from exc
        if self.proc.returncode != 0 or not self.report.exists():
            text = err.decode(errors="replace")[-3000:]
            raise LoadError(f"the hostile process failed ({self.proc.returncode}):\n{text}")
        data = json.loads(self.report.read_text())
        assert isinstance(data, dict)
        return data


@dataclass
class Phase:
    """What one measured phase saw."""

    samples: Samples
    """The well-behaved devices' requests."""
    hostile: dict[str, dict[str, float]]
    """The hostile process's report (empty without hostile kinds)."""
    log: str
    """The controller's log lines written during the phase."""


async def run_phase(
    ctl: ControllerProcess,
    good: Sequence[Device],
    hostile: Device | None,
    kinds: Sequence[str],
    *,
    duration: float,
    workdir: Path,
    warmup: float = 1.0,
    idle_connections: int = 300,
    flood_connections: int = 8,
) -> Phase:
    """Measure ``good`` for ``duration`` seconds, alone (no ``kinds``) or while ``hostile``
    misbehaves in the given ways; the hostile clients start ``warmup`` seconds earlier and
    stop a second after the measurement."""
    offset = len(ctl.log())
    if not kinds:
        samples = await well_behaved(ctl, good, duration=duration)
        return Phase(samples, {}, ctl.log()[offset:])
    if hostile is None:
        raise ValueError("hostile kinds need a hostile device")
    with hostile_process(
        ctl,
        hostile,
        kinds,
        duration=warmup + duration + 1.0,
        workdir=workdir,
        idle_connections=idle_connections,
        flood_connections=flood_connections,
    ) as run:
        await asyncio.sleep(warmup)
        samples = await well_behaved(ctl, good, duration=duration)
        report = await asyncio.to_thread(run.result)
    return Phase(samples, report, ctl.log()[offset:])
