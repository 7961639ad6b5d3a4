"""TPM bus protection: what DeviceTpm puts on the wire for seal, unseal and ECDH_ZGen.

The proof is a capture of the bus itself: the driver talks to swtpm through a TCP relay that
records every byte of both directions of the TPM command connection (the swtpm TCTI speaks raw
TPM 2.0 commands on the command port, so the relay sees exactly what a probe on the LPC/SPI
lines of a real TPM would see).  With bus protection on (the default), the sealed secret and
the ECDH shared point never appear in the capture, and the capture shows why: the commands
that carry them are authorised by sessions that StartAuthSession salted to the SRK (0x81000002,
a non-empty encryptedSalt), unbound, with AES-128-CFB, and whose attribute byte in the command
carries ``decrypt`` (TPM2_Create) or ``encrypt`` (TPM2_Unseal, TPM2_ECDH_ZGen).  With
``encrypt_sessions=False`` the same bytes are there in the clear, which shows the capture would
catch them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent.drivers import tpm_device
from agent.drivers.swtpm import HOST, SwtpmError, SwtpmProcess
from agent.drivers.tpm import KeyRole
from agent.drivers.tpm_device import DeviceTpm

# TPM 2.0 constants (Part 2)
CC_CREATE = 0x153
CC_ECDH_ZGEN = 0x154
CC_LOAD = 0x157
CC_UNSEAL = 0x15E
CC_FLUSH_CONTEXT = 0x165
CC_START_AUTH_SESSION = 0x176
CC_POLICY_PCR = 0x17F
ST_SESSIONS = 0x8002
RH_NULL = 0x40000007
RS_PW = 0x40000009
SE_HMAC, SE_POLICY = 0x00, 0x01
ALG_AES, ALG_CFB, ALG_NULL, ALG_SHA256 = 0x0006, 0x0043, 0x0010, 0x000B
ATTR_DECRYPT, ATTR_ENCRYPT = 0x20, 0x40
#: Handles in each command's handle area (sessions follow them).
HANDLES = {CC_CREATE: 1, CC_ECDH_ZGEN: 1, CC_LOAD: 1, CC_UNSEAL: 1, CC_POLICY_PCR: 1}


# --- a recording relay in front of swtpm -------------------------------------------------------


class Relay:
    """Listens on a free loopback port pair P, P+1 and relays to ``port``, ``port + 1`` (the
    swtpm TCTI's command and control ports), recording the command connection's bytes."""

    def __init__(self, port: int) -> None:
        self.commands = bytearray()  # host -> TPM
        self.responses = bytearray()  # TPM -> host
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.port = self._listen_pair(port)

    @property
    def tcti(self) -> str:
        return f"swtpm:host={HOST},port={self.port}"

    def clear(self) -> None:
        with self._lock:
            self.commands.clear()
            self.responses.clear()

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _listen_pair(self, upstream: int) -> int:
        for _ in range(50):
            first = socket.create_server((HOST, 0))
            port = int(first.getsockname()[1])
            try:
                second = socket.create_server((HOST, port + 1))
            except OSError:
                first.close()
                continue
            for listener, target, record in (
                (first, upstream, True),
                (second, upstream + 1, False),
            ):
                self._sockets.append(listener)
                self._spawn(self._accept, listener, target, record)
            return port
        raise OSError("no free pair of loopback ports for the relay")

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket, upstream: int, record: bool) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, upstream))
            self._sockets += [client, server]
            self._spawn(self._pump, client, server, self.commands if record else None)
            self._spawn(self._pump, server, client, self.responses if record else None)

    def _pump(self, src: socket.socket, dst: socket.socket, log: bytearray | None) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if log is not None:
                    with self._lock:
                        log += data
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


# --- parsing the capture ------------------------------------------------------------------------


@dataclass
class Command:
    code: int
    body: bytes  # everything after the 10-byte header
    response: bytes  # the response's bytes after its header
    rc: int
    #: (session handle, attribute byte) of each authorisation in the command
    sessions: list[tuple[int, int]] = field(default_factory=list)


def _split(stream: bytes) -> list[tuple[int, int, bytes]]:
    """(tag, code, body) of each TPM message in ``stream``."""
    out = []
    while stream:
        tag, size, code = struct.unpack(">HII", stream[:10])
        out.append((tag, code, bytes(stream[10:size])))
        stream = stream[size:]
    return out


def _tpm2b(data: bytes, at: int) -> tuple[bytes, int]:
    (size,) = struct.unpack(">H", data[at : at + 2])
    return data[at + 2 : at + 2 + size], at + 2 + size


def parse(relay: Relay) -> list[Command]:
    commands, responses = _split(bytes(relay.commands)), _split(bytes(relay.responses))
    assert len(commands) == len(responses)
    parsed = []
    for (tag, code, body), (_, rc, response) in zip(commands, responses, strict=True):
        command = Command(code, body, response, rc)
        if tag == ST_SESSIONS:
            at = 4 * HANDLES[code]
            (size,) = struct.unpack(">I", body[at : at + 4])
            area, at = body[at + 4 : at + 4 + size], 0
            while at < len(area):
                (handle,) = struct.unpack(">I", area[at : at + 4])
                _nonce, at = _tpm2b(area, at + 4)
                attributes = area[at]
                _hmac, at = _tpm2b(area, at + 1)
                command.sessions.append((handle, attributes))
        parsed.append(command)
    return parsed


@dataclass(frozen=True)
class Session:
    tpm_key: int
    bind: int
    salted: bool
    kind: int
    symmetric: tuple[int, ...]


def started_sessions(commands: list[Command]) -> dict[int, Session]:
    """The sessions StartAuthSession made, by the handle the TPM gave them."""
    sessions = {}
    for command in commands:
        if command.code != CC_START_AUTH_SESSION or command.rc != 0:
            continue
        tpm_key, bind = struct.unpack(">II", command.body[:8])
        _nonce, at = _tpm2b(command.body, 8)
        salt, at = _tpm2b(command.body, at)
        kind = command.body[at]
        (algorithm,) = struct.unpack(">H", command.body[at + 1 : at + 3])
        symmetric: tuple[int, ...] = (algorithm,)
        if algorithm != ALG_NULL:
            symmetric += struct.unpack(">HH", command.body[at + 3 : at + 7])
        (handle,) = struct.unpack(">I", command.response[:4])
        sessions[handle] = Session(tpm_key, bind, bool(salt), kind, symmetric)
    return sessions


def the(commands: list[Command], code: int) -> Command:
    (found,) = [c for c in commands if c.code == code and c.rc == 0]
    return found


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swtpm_state(tmp_path_factory: pytest.TempPathFactory) -> Path | str:
    """A manufactured and provisioned swtpm state to copy, or why there is none."""
    if shutil.which("swtpm") is None or shutil.which("swtpm_setup") is None:
        return "swtpm or swtpm_setup not installed (Debian: swtpm, swtpm-tools)"
    state = tmp_path_factory.mktemp("swtpm-sessions") / "tpm"
    proc = SwtpmProcess(state)
    try:
        proc.start()
        device = DeviceTpm(proc.tcti)
        try:
            device.provision()
        finally:
            device.close()
    except SwtpmError as exc:
        return str(exc)
    finally:
        proc.stop()
    return state


@dataclass
class Wire:
    relay: Relay
    connect: Callable[..., DeviceTpm]


@pytest.fixture
def wire(
    swtpm_state: Path | str,
    tmp_path: Path,
    require_service: Callable[[str, str], NoReturn],
) -> Iterator[Wire]:
    if isinstance(swtpm_state, str):
        require_service("swtpm", swtpm_state)
    shutil.copytree(swtpm_state, tmp_path / "tpm")
    proc = SwtpmProcess(tmp_path / "tpm")
    proc.start()
    assert proc.port is not None
    relay = Relay(proc.port)
    opened: list[DeviceTpm] = []

    def connect(**options: bool) -> DeviceTpm:
        device = DeviceTpm(relay.tcti, **options)
        opened.append(device)
        device.read_pcrs([0])  # connect, flush leftovers: not part of what is looked at
        relay.clear()
        return device

    try:
        yield Wire(relay, connect)
    finally:
        for device in opened:
            device.close()
        relay.close()
        proc.stop()


SECRET = os.urandom(32)


def _protected_by(
    command: Command, sessions: dict[int, Session], kind: int, attribute: int
) -> Session:
    """The session authorising ``command``, checked to be salted, encrypted and ``kind``."""
    ((handle, attributes),) = command.sessions
    session = sessions[handle]
    assert session == Session(
        tpm_key=KeyRole.SRK.value,
        bind=RH_NULL,
        salted=True,
        kind=kind,
        symmetric=(ALG_AES, 128, ALG_CFB),
    )
    assert attributes & attribute
    return session


# --- tests ---------------------------------------------------------------------------------------


def test_seal_and_unseal_keep_the_secret_off_the_wire(wire: Wire) -> None:
    device = wire.connect()
    blob = device.seal(SECRET, pcrs=(0, 7))
    assert device.unseal(blob) == SECRET
    captured = bytes(wire.relay.commands + wire.relay.responses)
    assert SECRET not in captured
    assert SECRET[:8] not in captured and SECRET[-8:] not in captured

    commands = parse(wire.relay)
    sessions = started_sessions(commands)
    create = the(commands, CC_CREATE)
    _protected_by(create, sessions, SE_HMAC, ATTR_DECRYPT)
    unseal = the(commands, CC_UNSEAL)
    _protected_by(unseal, sessions, SE_POLICY, ATTR_ENCRYPT)
    ((policy_session, _),) = unseal.sessions
    assert struct.unpack(">I", the(commands, CC_POLICY_PCR).body[:4])[0] == policy_session
    # Each session is flushed after its command: none is left in the TPM's few session slots.
    flushed = {struct.unpack(">I", c.body[:4])[0] for c in commands if c.code == CC_FLUSH_CONTEXT}
    assert len(sessions) == 2 and set(sessions) <= flushed


def test_without_encryption_the_secret_is_on_the_wire(wire: Wire) -> None:
    device = wire.connect(encrypt_sessions=False)
    blob = device.seal(SECRET, pcrs=(0, 7))
    sealing = bytes(wire.relay.commands)
    assert SECRET in sealing  # TPM2_Create's inSensitive, in the clear
    wire.relay.clear()
    assert device.unseal(blob) == SECRET
    assert SECRET in bytes(wire.relay.responses)  # TPM2_Unseal's outData, in the clear
    commands = parse(wire.relay)
    assert not any(s.salted for s in started_sessions(commands).values())


def test_ecdh_shared_point_is_encrypted_on_the_wire(wire: Wire) -> None:
    peer = ec.generate_private_key(ec.SECP256R1())
    for encrypted in (True, False):
        device = wire.connect(encrypt_sessions=encrypted)
        x, y = device.ecdh_shared_point(peer.public_key())
        ecdh_public = device.public_key(KeyRole.ECDH)
        assert isinstance(ecdh_public, ec.EllipticCurvePublicKey)
        assert peer.exchange(ec.ECDH(), ecdh_public) == x.to_bytes(32, "big")
        responses = bytes(wire.relay.responses)
        commands = parse(wire.relay)
        zgen = the(commands, CC_ECDH_ZGEN)
        if encrypted:
            assert x.to_bytes(32, "big") not in responses
            assert y.to_bytes(32, "big") not in responses
            _protected_by(zgen, started_sessions(commands), SE_HMAC, ATTR_ENCRYPT)
        else:
            assert x.to_bytes(32, "big") in responses
            ((handle, attributes),) = zgen.sessions
            assert handle == RS_PW and not attributes & (ATTR_ENCRYPT | ATTR_DECRYPT)
        device.close()


def test_a_tpm_without_the_cipher_gets_plain_sessions(
    wire: Wire, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # AES-127 is no TPM's cipher: TestParms refuses it as it would refuse AES-128-CFB on a TPM
    # without it, and the driver falls back to EVE's legacy, unprotected sessions.
    monkeypatch.setattr(tpm_device, "_SESSION_AES_BITS", 127)
    device = wire.connect()
    with caplog.at_level(logging.WARNING, logger=tpm_device.__name__):
        blob = device.seal(SECRET, pcrs=(0,))
    assert "without TPM bus protection" in caplog.text
    assert SECRET in bytes(wire.relay.commands)
    assert device.unseal(blob) == SECRET


def test_blobs_sealed_either_way_open_either_way(wire: Wire) -> None:
    """Encryption is a property of the transport, not of the blob: a blob sealed with plain
    sessions (an older agent) unseals with encrypted ones and the other way round."""
    plain = wire.connect(encrypt_sessions=False)
    old = plain.seal(b"sealed in the clear", pcrs=(0, 7))
    plain.close()
    device = wire.connect()
    new = device.seal(b"sealed encrypted", pcrs=(0, 7))
    assert device.unseal(old) == b"sealed in the clear"
    device.close()
    plain = wire.connect(encrypt_sessions=False)
    assert plain.unseal(new) == b"sealed encrypted"
