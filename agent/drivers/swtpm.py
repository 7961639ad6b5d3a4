"""One software TPM (swtpm) per emulated node: manufacture it once, power it on and off.

The node's TPM state lives in its own directory, so several nodes on one host each have their
own TPM.  :class:`SwtpmProcess` keeps one ``swtpm socket`` process on a loopback TCP port pair:
the TPM command port P and the control port P+1, because the tss2 ``swtpm`` TCTI (tpm2-tss
3.2.1) always uses port+1 for control and never sends the swtpm "init" control command; that
is also why swtpm runs with ``--flags not-need-init,startup-clear`` (without them every
command fails with TPM_RC_INITIALIZE).

Lifecycle:

- The first :meth:`~SwtpmProcess.start` of an empty state directory *manufactures* the TPM with
  ``swtpm_setup``: EKs (RSA-2048 persisted at 0x81010001, ECC P-384 at 0x81010016), an EK
  certificate in NV 0x01C00002 (and 0x01C00016) and a platform certificate, issued by a local
  CA kept in the state directory (``swtpm_localca`` with our own configuration, so nothing is
  written to /var/lib/swtpm-localca), NV locked as on a real TPM.  If certificates cannot be
  made, the TPM is manufactured without them and a warning is logged.
- :meth:`~SwtpmProcess.start` powers the TPM on: PCRs start from their reset values.  It is a
  no-op while the TPM runs, and it adopts a swtpm left running on the same state directory
  by a previous agent process (the node did not reboot, so neither does its TPM).
- :meth:`~SwtpmProcess.stop` powers it off; NV (persistent keys, certificates) stays in the
  state directory.  Idempotent, and safe when the process already died.

swtpm serves one client connection at a time: close one TPM connection before opening another.
Logs go to ``swtpm.log`` and ``swtpm_setup.log`` in the state directory.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import signal
import socket
import struct
import time
from pathlib import Path
from types import TracebackType

from agent.drivers import runner
from agent.drivers.runner import Daemon

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
STATE_FILE = "tpm2-00.permall"
_PID_FILE = "swtpm.pid"
_LOG_FILE = "swtpm.log"
_SETUP_LOG_FILE = "swtpm_setup.log"
_SETUP_DIR = "manufacturer"
#: TPM2_GetRandom(8) with no sessions: the readiness probe.
_PROBE = struct.pack(">HIIH", 0x8001, 12, 0x0000017B, 8)


class SwtpmError(RuntimeError):
    """swtpm could not be manufactured or started; the message ends with its log's tail."""


class SwtpmProcess:
    """The swtpm of one node; see the module docstring."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        swtpm: str = "swtpm",
        swtpm_setup: str = "swtpm_setup",
        start_timeout: float = 10.0,
    ) -> None:
        """``port`` is the command port (control = port + 1); a free pair is picked when None
        and kept for later starts while it stays free."""
        self.state_dir = Path(state_dir).absolute()
        if "," in str(self.state_dir):
            raise SwtpmError(f"swtpm cannot take a state directory with a comma: {state_dir}")
        self._fixed_port = port
        self._port = port
        self._swtpm = swtpm
        self._swtpm_setup = swtpm_setup
        self._start_timeout = start_timeout
        self._proc: Daemon | None = None
        self._adopted_pid: int | None = None
        self.ek_certificate_made: bool | None = None
        """After manufacturing here: whether swtpm_setup wrote an EK certificate."""

    # --- properties

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def tcti(self) -> str:
        """The TCTI configuration string for tpm2-tss (``swtpm:host=...,port=...``)."""
        if self._port is None:
            raise SwtpmError("swtpm has no port yet: start it first")
        return f"swtpm:host={HOST},port={self._port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / _LOG_FILE

    @property
    def running(self) -> bool:
        pid = self._pid()
        return pid is not None and _alive(pid, self._proc)

    @property
    def manufactured(self) -> bool:
        return (self.state_dir / STATE_FILE).exists()

    # --- lifecycle

    def start(self) -> None:
        """Power the TPM on (manufacturing it first if the state directory is new) and wait
        until it answers.  No-op when running.  Raises SwtpmError."""
        if self.running:
            return
        self._forget()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._adopt():
            return
        if not self.manufactured:
            self.manufacture()
        attempts = 1 if self._fixed_port is not None else 5
        for attempt in range(1, attempts + 1):
            if self._fixed_port is None and (attempt > 1 or self._port is None):
                self._port = _free_port_pair()
            try:
                self._launch()
                return
            except SwtpmError:
                if attempt == attempts:
                    raise
                log.warning("swtpm did not start on port %s, trying another", self._port)

    def stop(self, timeout: float = 5.0) -> None:
        """Power the TPM off (volatile state and PCRs are lost, NV is kept).  Idempotent."""
        pid = self._pid()
        if pid is not None and _alive(pid, self._proc):
            log.info("stopping swtpm (pid %d) for %s", pid, self.state_dir)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, self._proc, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, self._proc, timeout)
        self._forget()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / _PID_FILE).unlink()

    def manufacture(self) -> None:
        """Run swtpm_setup on the (empty) state directory; see the module docstring.  Refuses
        a state directory that already holds a TPM: that would wipe the node's keys."""
        if self.manufactured:
            raise SwtpmError(f"{self.state_dir} already holds a TPM; not manufacturing again")
        setup_dir = self.state_dir / _SETUP_DIR
        (setup_dir / "localca").mkdir(parents=True, exist_ok=True)
        config = setup_dir / "swtpm_setup.conf"
        ca_config = setup_dir / "swtpm-localca.conf"
        ca_options = setup_dir / "swtpm-localca.options"
        ca = setup_dir / "localca"
        config.write_text(
            f"create_certs_tool = {shutil.which('swtpm_localca') or 'swtpm_localca'}\n"
            f"create_certs_tool_config = {ca_config}\n"
            f"create_certs_tool_options = {ca_options}\n"
            "active_pcr_banks = sha256\n"
        )
        ca_config.write_text(
            f"statedir = {ca}\n"
            f"signingkey = {ca}/signkey.pem\n"
            f"issuercert = {ca}/issuercert.pem\n"
            f"certserial = {ca}/certserial\n"
        )
        ca_options.write_text(
            "--platform-manufacturer eve-agent\n--platform-version 2.1\n--platform-model swtpm\n"
        )
        base = [
            self._swtpm_setup,
            "--tpm2",
            "--tpmstate",
            str(self.state_dir),
            "--config",
            str(config),
            "--pcr-banks",
            "sha256",
            "--logfile",
            str(self.state_dir / _SETUP_LOG_FILE),
            "--overwrite",
        ]
        if self._run_setup([*base, "--create-ek-cert", "--create-platform-cert", "--lock-nvram"]):
            self.ek_certificate_made = True
            return
        log.warning(
            "swtpm_setup could not make EK certificates for %s; manufacturing without (see %s)",
            self.state_dir,
            self.state_dir / _SETUP_LOG_FILE,
        )
        if self._run_setup([*base, "--createek", "--lock-nvram"]):
            self.ek_certificate_made = False
            return
        raise SwtpmError(
            f"swtpm_setup failed for {self.state_dir}: {_tail(self.state_dir / _SETUP_LOG_FILE)}"
        )

    def __enter__(self) -> SwtpmProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals

    def _run_setup(self, argv: list[str]) -> bool:
        log.info("manufacturing the TPM in %s", self.state_dir)
        try:
            done = runner.run_sync(argv, timeout=120, check=False)
        except runner.CommandError as exc:
            raise SwtpmError(f"cannot run {argv[0]}: {exc}") from exc
        if done.stdout or done.stderr:
            with open(self.state_dir / _SETUP_LOG_FILE, "ab") as out:
                out.write(done.stdout + done.stderr)
        return done.returncode == 0 and self.manufactured

    def _launch(self) -> None:
        port = self._port
        assert port is not None
        argv = [
            self._swtpm,
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={self.state_dir}",
            "--server",
            f"type=tcp,bindaddr={HOST},port={port}",
            "--ctrl",
            f"type=tcp,bindaddr={HOST},port={port + 1}",
            "--flags",
            "not-need-init,startup-clear",
            "--pid",
            f"file={self.state_dir / _PID_FILE}",
            "--log",
            f"file={self.log_path},level=1",
        ]
        log.info("starting swtpm for %s on %s:%d", self.state_dir, HOST, port)
        try:
            self._proc = runner.spawn(argv, log=self.log_path)
        except runner.CommandError as exc:
            raise SwtpmError(f"cannot run {self._swtpm}: {exc}") from exc
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise SwtpmError(f"swtpm exited with status {code}: {_tail(self.log_path)}")
            if _answers(port):
                return
            time.sleep(0.05)
        self.stop()
        raise SwtpmError(f"swtpm did not answer within {self._start_timeout}s")

    def _adopt(self) -> bool:
        """Take over a swtpm a previous agent process left running on this state directory."""
        try:
            pid = int((self.state_dir / _PID_FILE).read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return False
        if f"dir={self.state_dir}".encode() not in cmdline or not cmdline[0].endswith(b"swtpm"):
            return False
        port = _port_of(cmdline)
        if port is None or (self._fixed_port is not None and port != self._fixed_port):
            return False
        if not _answers(port):
            return False
        log.info("adopting the running swtpm (pid %d) for %s", pid, self.state_dir)
        self._adopted_pid, self._port = pid, port
        return True

    def _pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        if self._adopted_pid is None:
            # A fresh object (another process, e.g. `eve-agent poweroff`) finds the running
            # swtpm through its pid file.
            self._adopt()
        return self._adopted_pid

    def _forget(self) -> None:
        if self._proc is not None:
            self._proc.wait(timeout=0)
        self._proc = None
        self._adopted_pid = None


def _alive(pid: int, proc: Daemon | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie we cannot reap (not our child) is as good as gone
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    return True


def _wait_gone(pid: int, proc: Daemon | None, timeout: float) -> bool:
    if proc is not None:
        return proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while _alive(pid, None):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _answers(port: int) -> bool:
    """True when the TPM on ``port`` answers TPM2_GetRandom with success."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as conn:
            conn.sendall(_PROBE)
            header = b""
            while len(header) < 10:
                chunk = conn.recv(10 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    return int.from_bytes(header[6:10], "big") == 0  # tag, size, responseCode


def _free_port_pair() -> int:
    """A port P on loopback such that P and P+1 are both free right now."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((HOST, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind((HOST, port + 1))
                except OSError:
                    continue
        return port
    raise SwtpmError("no free pair of loopback ports")


def _port_of(cmdline: list[bytes]) -> int | None:
    """The command port of a swtpm command line (the ``--server`` option's ``port=``)."""
    for option, value in itertools.pairwise(cmdline):
        if option == b"--server":
            for part in value.decode(errors="replace").split(","):
                key, _, number = part.partition("=")
                if key == "port" and number.isdigit():
                    return int(number)
    return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"
