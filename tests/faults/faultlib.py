"""What the fault-injection tests share: seeded rounds bounded in number and time, killing an agent
at a stage read from its log, what the controller's database holds, and whether every file in a
node's persist directory is whole.

Every random choice comes from :class:`Faults`, seeded from ``EVE_FAULTS_SEED`` (or a fresh seed,
printed), so that a failing run replays with the same choices.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import random
import sqlite3
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.link.controllercerts import parse_controller_certs
from agent.wire import envelope
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.info import info_pb2
from tests.e2e.harness import Controller, Node, wait_for

SEED_ENV = "EVE_FAULTS_SEED"


class Faults:
    """One test's random source and bounds.  :meth:`rounds` yields round numbers until
    ``iterations`` rounds ran or ``budget`` seconds passed, whichever comes first."""

    def __init__(self, seed: int, test: str) -> None:
        self.seed = seed
        self.test = test
        self.rng = random.Random(f"{seed}:{test}")
        self.done = 0

    def note(self, text: str) -> None:
        """A line in the test's output (shown on failure), naming the seed."""
        print(f"[faults {self.test} seed={self.seed}] {text}", flush=True)

    def rounds(self, iterations: int, budget: float) -> Iterator[int]:
        started = time.monotonic()
        for i in range(iterations):
            if time.monotonic() - started > budget:
                self.note(f"time budget of {budget:.0f} s used after {i} rounds")
                return
            self.done = i + 1
            yield i


# ---- killing an agent at a stage -------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """Where to kill: after ``marker`` shows in the agent's log (then a random pause up to
    ``jitter`` s), or, without a marker, ``delay`` (a (low, high) range) after the start.  When
    ``past`` shows first the stage was passed without its marker (e.g. a key made in an earlier
    run): kill there."""

    name: str
    marker: str | None = None
    jitter: float = 0.03
    delay: tuple[float, float] = (0.0, 2.0)
    past: str = "config items changed"


class LogTail:
    """New lines of an append-only log file from the moment it was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.text = ""

    def read(self) -> str:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
            self.offset += len(data)
            self.text += data.decode(errors="replace")
        return self.text

    def wait(self, marker: str, timeout: float, alive: Any = None, past: str = "") -> bool:
        """True once ``marker`` appeared; False when ``past`` appeared without it, after
        ``timeout``, or when ``alive()`` is false."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.read()
            if marker in text:
                return True
            if (past and past in text) or (alive is not None and not alive()):
                return False
            time.sleep(0.002)
        return False


@dataclass(frozen=True)
class Killed:
    """What :func:`start_and_kill` did: where (in words) and the log of the killed run."""

    where: str
    log: str

    def cleaned_up(self) -> bool:
        """Whether the run got as far as removing the leftovers of earlier kills (a kill
        before that, while Python still imports, say, leaves them for the next start)."""
        return LEFTOVERS_CHECKED in self.log


LEFTOVERS_CHECKED = "checked the state directories for interrupted writes"


def start_and_kill(node: Node, faults: Faults, stages: Sequence[Stage]) -> Killed:
    """Start ``node``'s agent, kill -9 it at a stage chosen at random; where and its log.
    The agent is stopped when this returns (its log handle closed)."""
    stage = faults.rng.choice(list(stages))
    pause = (
        faults.rng.uniform(0.0, stage.jitter) if stage.marker else faults.rng.uniform(*stage.delay)
    )
    tail = LogTail(node.root / "agent.log")
    node.start()
    agent = node.agent
    assert agent is not None
    what = stage.name
    if stage.marker is not None and not tail.wait(stage.marker, 20, agent.alive, stage.past):
        what += " (passed without its marker)"
    time.sleep(pause)
    if not agent.alive():
        raise AssertionError(f"the agent exited by itself ({what}):\n{tail.read()[-3000:]}")
    agent.kill()
    agent.stop()
    return Killed(f"{what} +{pause:.3f} s", tail.read())


def agent_status(node: Node) -> dict[str, Any] | None:
    """The running agent's status file (None while it has written none since it started)."""
    try:
        data = json.loads((node.root / "run" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or node.agent is None:
        return None
    return data if data.get("pid") == node.agent.proc.pid else None


def items(status: dict[str, Any]) -> dict[str, str]:
    value = status.get("config_items") or {}
    assert isinstance(value, dict)
    return value


# ---- the controller's database ---------------------------------------------------------------


class ControllerDB:
    """Read-only queries on a controller's SQLite database (WAL: beside the running server)."""

    def __init__(self, controller: Controller) -> None:
        self.path = controller.state / "controller.db"

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        uri = f"file:{self.path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            return list(conn.execute(sql, args).fetchall())

    def devices(self) -> list[tuple[str, str, bytes]]:
        """(uuid, serial, cert_pem) of every device."""
        return [(str(u), str(s), bytes(c)) for u, s, c in
                self.query("SELECT uuid, serial, cert_pem FROM device")]  # fmt: skip

    def devices_of(self, serial: str) -> list[tuple[str, bytes]]:
        return [(u, c) for u, s, c in self.devices() if s == serial]

    def latest_config(self, device_uuid: str) -> tuple[int, str]:
        """(version, config hash) of the device's newest config."""
        rows = self.query(
            "SELECT version, config_hash FROM config WHERE device_uuid = ?"
            " ORDER BY version DESC LIMIT 1",
            device_uuid,
        )
        return int(rows[0][0]), str(rows[0][1])

    def log_records(self, device_uuid: str) -> set[tuple[int, str]]:
        """(msgid, content) of every device log entry (not app logs) the controller stored."""
        rows = self.query(
            "SELECT entry FROM log_entry WHERE device_uuid = ? AND app_uuid IS NULL", device_uuid
        )
        return {_record(json.loads(e)) for (e,) in rows}

    def log_rows(self, device_uuid: str) -> set[int]:
        return {int(i) for (i,) in self.query(
            "SELECT id FROM log_entry WHERE device_uuid = ?", device_uuid)}  # fmt: skip

    def reports(self, device_uuid: str, kind: str = "info") -> list[tuple[int, float, bytes]]:
        """(id, received_at, raw payload) of the device's reports of ``kind``, oldest first."""
        return [(int(i), float(t), bytes(r)) for i, t, r in self.query(
            "SELECT id, received_at, raw FROM report WHERE device_uuid = ? AND kind = ?"
            " ORDER BY id", device_uuid, kind)]  # fmt: skip

    def info_since(self, device_uuid: str, since: float) -> bool:
        """The controller stored device info received after ``since`` (time.time())."""
        return any(t > since for _, t, _ in self.reports(device_uuid))


# ---- what a node holds durably ---------------------------------------------------------------


def _record(entry: dict[str, Any]) -> tuple[int, str]:
    return int(entry["msgid"]), str(entry.get("content", ""))


def spooled_records(persist: Path) -> set[tuple[int, str]]:
    """(msgid, content) of every log record in the node's log spool on disk
    (``newlog/pending``): the records the agent holds durably, which must reach the controller."""
    records: set[tuple[int, str]] = set()
    for path in (persist / "newlog" / "pending").glob("dev.*.gz"):
        for line in gzip.decompress(path.read_bytes()).splitlines():
            if line.strip():
                records.add(_record(json.loads(line)))
    return records


def outbox_infos(persist: Path) -> dict[str, bytes]:
    """The info messages waiting in the node's outbox on disk, by key."""
    return {p.stem: p.read_bytes() for p in (persist / "outbox").glob("*.info")}


def info_delivered_or_superseded(payload: bytes, delivered: list[bytes]) -> bool:
    """An outbox message is not lost when the controller has it byte for byte, or has a later
    message of the same kind (the outbox keeps the latest per key: a newer one replaces it)."""
    if payload in delivered:
        return True
    msg = info_pb2.ZInfoMsg()
    msg.ParseFromString(payload)
    stamp = msg.atTimeStamp.ToNanoseconds()
    for raw in delivered:
        other = info_pb2.ZInfoMsg()
        other.ParseFromString(raw)
        same = other.ztype == msg.ztype and other.WhichOneof("InfoContent") == msg.WhichOneof(
            "InfoContent"
        )
        if same and other.atTimeStamp.ToNanoseconds() >= stamp:
            return True
    return False


# ---- whole files -----------------------------------------------------------------------------


def is_leftover(path: Path) -> bool:
    """A temporary file of an atomic write (``.<name>.<random>.tmp``): never read as state."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def identity_state(persist: Path) -> str:
    """'none' or 'both' (key and certificate that belong together); raises for anything else."""
    cert, key = persist / "certs" / "device.cert.pem", persist / "certs" / "device.key.pem"
    if not cert.exists() and not key.exists():
        return "none"
    assert cert.exists() and key.exists(), (
        f"half an identity: cert {cert.exists()} key {key.exists()}"
    )
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert public.public_numbers() == private.public_key().public_numbers(), "key and cert differ"  # type: ignore[union-attr]
    return "both"


def _check_one(path: Path, rel: str, persist: Path, roots: list[x509.Certificate]) -> None:
    data = path.read_bytes()
    name = path.name
    if rel.startswith("checkpoint/controllercerts"):
        parse_controller_certs(data, roots)
    elif rel.startswith("checkpoint/lastconfig"):
        trusted: dict[bytes, x509.Certificate] = {}
        for certs in ("controllercerts", "controllercerts.bak"):
            with contextlib.suppress(Exception):
                cc = parse_controller_certs((persist / "checkpoint" / certs).read_bytes(), roots)
                trusted.update(cc.trusted_signers())
        env = envelope.open_signed(data, trusted)
        devconfig_pb2.ConfigResponse().ParseFromString(env.payload)
    elif name.endswith(".key.pem"):
        serialization.load_pem_private_key(data, None)
    elif name.endswith(".pem"):
        assert x509.load_pem_x509_certificates(data)
    elif name.endswith(".json") or rel == "status/registration":
        json.loads(data)
    elif name.endswith(".info"):
        info_pb2.ZInfoMsg().ParseFromString(data)
    elif name.endswith(".gz"):
        for line in gzip.decompress(data).splitlines():
            if line.strip():
                json.loads(line)
    elif rel == "status/uuid":
        uuidlib.UUID(data.decode().strip())
    elif rel == "status/restartcounter":
        int(data.decode().strip())


def whole_files(persist: Path, root_pem: bytes) -> tuple[list[str], list[str]]:
    """(problems, leftovers): every file of ``persist`` whose content does not parse as its kind
    says, with the error, and the temporary files interrupted atomic writes left behind."""
    roots = x509.load_pem_x509_certificates(root_pem)
    problems: list[str] = []
    leftovers: list[str] = []
    for path in sorted(persist.rglob("*")):
        if not path.is_file():
            continue
        rel = str(path.relative_to(persist))
        if is_leftover(path):
            leftovers.append(rel)
            continue
        try:
            _check_one(path, rel, persist, roots)
        except Exception as exc:  # noqa: BLE001 - any failure to parse is the finding
            problems.append(f"{rel}: {type(exc).__name__}: {exc}")
    return problems, leftovers


def persist_files(persist: Path) -> list[str]:
    """Every file under ``persist`` (relative paths), temporary ones left out."""
    return sorted(str(p.relative_to(persist)) for p in persist.rglob("*")
                  if p.is_file() and not is_leftover(p))  # fmt: skip


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def wait_converged(
    node: Node,
    db: ControllerDB,
    want: dict[str, str],
    *,
    since: float,
    version: int | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Wait until the running agent reaches the controller and applied the controller's newest
    config (same hash), with the items ``want`` (and, when given, ``version``), and the
    controller stored device info received after ``since`` (time.time()); the agent's status."""

    def converged() -> dict[str, Any] | None:
        status = agent_status(node)
        if status is None or not status.get("controller_reachable"):
            return None
        if not status.get("config_applied_ok"):
            return None
        have = items(status)
        if any(have.get(k) != v for k, v in want.items()):
            return None
        if version is not None and status.get("config_version") != str(version):
            return None
        uuid = status.get("uuid")
        if not uuid or status.get("config_hash") != db.latest_config(str(uuid))[1]:
            return None
        if not db.info_since(str(uuid), since):
            return None
        return status

    result = wait_for(converged, timeout, f"the node to converge on {want}", interval=0.1)
    assert isinstance(result, dict)
    return result


# ---- a small filesystem ----------------------------------------------------------------------


@contextlib.contextmanager
def small_fs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``mount`` (made if needed; root only), always unmounted
    at the end (lazily when still busy)."""
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):  # big writes first, then what a page still takes
            chunk = b"\0" * size
            while True:
                try:
                    if os.write(fd, chunk) == 0:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


def storage_states(db: ControllerDB, device_uuid: str, since: float = 0) -> list[str]:
    """The storage state names of the device info the controller received after ``since``,
    oldest first."""
    states = []
    for _, at, raw in db.reports(device_uuid):
        if at <= since:
            continue
        msg = info_pb2.ZInfoMsg()
        msg.ParseFromString(raw)
        for info in msg.dinfo.storage_info:
            states.append(info_pb2.StorageStatus.Name(info.storage_state))
    return states


def checkpoint_hash(persist: Path, root_pem: bytes) -> str:
    """The configHash of the config in the primary checkpoint (verified)."""
    roots = x509.load_pem_x509_certificates(root_pem)
    certs = parse_controller_certs((persist / "checkpoint" / "controllercerts").read_bytes(), roots)
    env = envelope.open_signed((persist / "checkpoint" / "lastconfig").read_bytes(),
                               certs.trusted_signers())  # fmt: skip
    resp = devconfig_pb2.ConfigResponse()
    resp.ParseFromString(env.payload)
    return str(resp.configHash)
