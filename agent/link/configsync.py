"""Signed config sync: poll ``/id/<uuid>/config``, verify, checkpoint, hand over to be applied.

Follows EVE's ``zedagent/handleconfig.go``: the device echoes the last ``configHash`` and the
controller answers 304 when nothing changed; 403 restarts attestation; 404 and 400 mean "do you
still exist?" and send the node back to ``/uuid``.  A response is applied only when all of these
hold, otherwise nothing is applied and nothing is checkpointed, and one error line is logged and
kept for the device report:

* the envelope parses and its signature verifies against the controller signing certificate
  (an unknown certificate hash triggers one ``/certs`` refresh first);
* the payload decodes as ``ConfigResponse``;
* the config names this device's UUID;
* its ``config_timestamp`` is not older than the one applied last (replays of old configs).

A config's object errors (invalid objects, objects past the model's limits) are bounded before
the config is handed over: the first :data:`MAX_CONFIG_ERRORS`, clipped, then one more error
counting the rest.  A config of a hundred thousand bad objects must not become a hundred thousand
error records, log lines, status entries and info messages.

Encrypted secrets in the config (``CipherBlock``) are opened while the model is built, with the
node's ECDH key (the TPM's, or the software one) and the controller's ECDH certificate from
``/certs``; a block that does not decrypt is an error on its object only (see
:mod:`agent.model.config`).

Nothing here blocks the event loop: the envelope check, the parse and the model of a config (tens
of milliseconds for a large one, plus the ECDH of its secrets, a TPM command) run in a worker
thread, as do the device signature of each request and the checkpoint writes (fsync).

The checkpoint is the raw signed response, byte for byte, so it is verified again when loaded.
A checkpoint that cannot be written (full disk, I/O error) does not stop anything, as in EVE
(``persist.SaveConfig`` logs and goes on): the verified config is applied all the same, the
problem goes to the shared :class:`agent.util.storagehealth.StorageHealth` (one log line, the
device report), and the write is retried with backoff at each poll round until the disk takes it.
The .bak is not promoted while the primary is behind the config in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography import x509
from google.protobuf.message import DecodeError

from agent.link.attestation import Attestor
from agent.link.checkpoint import CheckpointStore
from agent.link.controllercerts import ControllerCertError, ControllerCertStore
from agent.link.devicecipher import DeviceEcdh, config_decryptor
from agent.link.offload import seal_as_device_async
from agent.link.transport import PROTO_TYPE, ControllerClient, TransportError
from agent.model.config import Decrypt, NodeConfig, ObjectError, from_proto
from agent.model.configitems import ConfigItems
from agent.util.ids import parse_uuid
from agent.util.liveness import Liveness
from agent.util.storagehealth import StorageHealth
from agent.util.timing import Backoff, jittered, wait_or_stop
from agent.wire import envelope
from agent.wire.envelope import Signer
from agent.wire.pb.config import devconfig_pb2

log = logging.getLogger(__name__)

#: What a failing checkpoint write is called in the storage report.
CHECKPOINT = "config checkpoint"
CHECKPOINT_BACKUP = "config checkpoint backup"

#: Object errors of one config kept (each clipped), the rest counted in one more error.
MAX_CONFIG_ERRORS = 200
_MAX_ID, _MAX_NAME, _MAX_MESSAGE = 64, 256, 2048

#: Applies a config; returns True when every object applied without error.
Applier = Callable[[NodeConfig], Awaitable[bool]]


class ConfigRejected(Exception):
    """A config response that must not be applied.  The message is the reported reason."""


@dataclass
class SyncStatus:
    """What ``eve-agent status`` and the device info report about config."""

    config_hash: str = ""
    config_timestamp: float = 0.0
    received_at: float = 0.0
    applied_ok: bool = False
    source: str = ""  # "controller" or "checkpoint"
    last_contact: float = 0.0
    controller_reachable: bool = False
    last_error: str = ""
    last_error_at: float = 0.0
    rejected: int = 0


def _timestamp(msg: devconfig_pb2.EdgeDevConfig) -> float:
    if not msg.HasField("config_timestamp"):
        return 0.0
    return msg.config_timestamp.seconds + msg.config_timestamp.nanos / 1e9


def bound_errors(config: NodeConfig) -> NodeConfig:
    """``config`` with at most MAX_CONFIG_ERRORS object errors, each clipped, and one more
    ``config`` error (id ``errors-omitted``) counting those left out."""
    errors = config.errors
    clipped = [
        e
        if len(e.id) <= _MAX_ID and len(e.name) <= _MAX_NAME and len(e.message) <= _MAX_MESSAGE
        else ObjectError(e.kind, e.id[:_MAX_ID], e.name[:_MAX_NAME], e.message[:_MAX_MESSAGE])
        for e in errors[:MAX_CONFIG_ERRORS]
    ]
    if len(errors) > MAX_CONFIG_ERRORS:
        rest = errors[MAX_CONFIG_ERRORS:]
        kinds = sorted({e.kind for e in rest})
        clipped.append(
            ObjectError(
                "config",
                "errors-omitted",
                "",
                f"{len(rest)} more object errors ({', '.join(kinds)}) not listed",
            )
        )
    elif all(a is b for a, b in zip(clipped, errors, strict=True)):
        return config
    return dataclasses.replace(config, errors=tuple(clipped))


def _open_response(
    raw: bytes, trusted: dict[bytes, x509.Certificate]
) -> devconfig_pb2.ConfigResponse:
    """Verify the envelope and parse the ConfigResponse in it (blocking: run in a thread).

    Raises envelope.UnknownSigner, or ConfigRejected for every other envelope or payload fault.
    """
    try:
        env = envelope.open_signed(raw, trusted)
    except envelope.UnknownSigner:
        raise
    except envelope.EnvelopeError as exc:
        raise ConfigRejected(f"config envelope rejected: {exc}") from exc
    resp = devconfig_pb2.ConfigResponse()
    try:
        resp.ParseFromString(env.payload)
    except DecodeError as exc:
        raise ConfigRejected(f"config payload undecodable: {exc}") from exc
    return resp


class ConfigSync:
    """The config loop of one node.  Create it, then ``await run(stop)``."""

    def __init__(
        self,
        client: ControllerClient,
        *,
        device: Signer,
        device_uuid: Callable[[], str | None],
        certs: ControllerCertStore,
        attestor: Attestor,
        checkpoints: CheckpointStore,
        apply: Applier,
        items: Callable[[], ConfigItems],
        on_unknown_device: Callable[[], Awaitable[None]],
        ecdh: DeviceEcdh | None = None,
        liveness: Liveness | None = None,
        health: StorageHealth | None = None,
    ) -> None:
        self._liveness = liveness
        self._health = health or StorageHealth()
        #: The config in effect when its checkpoint could not be written yet; retried.
        self._unsaved: bytes | None = None
        self._save_backoff = Backoff(initial=5.0, maximum=600.0)
        self._save_retry_at = 0.0
        self._client = client
        self._device = device
        self._device_uuid = device_uuid
        self._certs = certs
        self._attestor = attestor
        self._checkpoints = checkpoints
        self._apply = apply
        self._items = items
        self._on_unknown_device = on_unknown_device
        self._ecdh = ecdh
        self.status = SyncStatus()
        self.current: NodeConfig | None = None
        self._applied_at_mono: float | None = None
        self._promoted = False
        self._controller_cert_hash = ""
        #: Set to make the loop poll now (e.g. the interval changed); cleared when used.
        self.wake = asyncio.Event()

    # ---- verification -------------------------------------------------------------------

    def _decryptor(self) -> Decrypt | None:
        """Opens CipherBlocks with our ECDH key; None without a key or controller ECDH cert."""
        if self._ecdh is None or self._certs.current is None:
            return None
        return config_decryptor(self._ecdh, (self._certs.current.ecdh_pem,))

    async def _model(self, msg: devconfig_pb2.EdgeDevConfig) -> NodeConfig:
        """``from_proto`` with our decryptor, in a worker thread: a large config takes tens of
        milliseconds to model, and its secrets need ECDH (a TPM command).  Raises ValueError
        like ``from_proto``."""
        config = await asyncio.to_thread(from_proto, msg, decrypt=self._decryptor())
        return bound_errors(config)

    async def _verify(self, raw: bytes) -> tuple[devconfig_pb2.ConfigResponse, NodeConfig]:
        """Check a signed ConfigResponse.  Raises ConfigRejected, envelope.UnknownSigner."""
        if self._certs.current is None:
            raise ConfigRejected("no controller certificates to verify the config with")
        trusted = self._certs.current.trusted_signers()
        resp = await asyncio.to_thread(_open_response, raw, trusted)
        # The cheap checks first: nothing is decrypted or modelled for a config we refuse.
        try:
            target = parse_uuid(resp.config.id.uuid, "config device uuid")
        except ValueError as exc:
            raise ConfigRejected(f"config carries no valid device UUID: {exc}") from exc
        me = self._device_uuid()
        if me is not None and target != me:
            raise ConfigRejected(f"config is for device {target}, this is {me}")
        ts = _timestamp(resp.config)
        if ts < self.status.config_timestamp:
            raise ConfigRejected(
                f"config_timestamp {dt.datetime.fromtimestamp(ts, dt.UTC):%Y-%m-%dT%H:%M:%SZ} is "
                "older than the applied config: refusing a replayed or obsolete config"
            )
        try:
            config = await self._model(resp.config)
        except ValueError as exc:
            raise ConfigRejected(f"config invalid: {exc}") from exc
        return resp, config

    def _reject(self, reason: str) -> None:
        self.status.rejected += 1
        self.status.last_error = reason
        self.status.last_error_at = time.time()
        log.error("config rejected, nothing applied: %s", reason)

    # ---- checkpoint ---------------------------------------------------------------------

    async def load_checkpoint(self, *, prefer_backup: bool = False) -> bool:
        """Apply the saved config (primary, else .bak), re-verified.  True when one applied.

        A corrupt primary is replaced by a .bak that verifies.  ``prefer_backup`` (after an
        abnormal stop, as EVE does after a crash or watchdog reboot) tries the known-good .bak
        first, so a config that crashes the node cannot crash it in a loop.
        """
        if self._certs.current is None:
            log.info("no saved controller certificates: cannot use a saved config")
            return False
        candidates = await asyncio.to_thread(lambda: list(self._checkpoints.candidates()))
        if prefer_backup:
            candidates.reverse()
        for name, raw in candidates:
            try:
                resp, config = await self._verify(raw)
            except (ConfigRejected, envelope.UnknownSigner) as exc:
                log.warning("saved config %s unusable: %s", name, exc)
                continue
            if name.endswith(".bak") and not prefer_backup and self._checkpoints.mtime():
                log.warning("restoring %s from %s", self._checkpoints.primary.name, name)
                try:
                    await asyncio.to_thread(self._checkpoints.restore_primary, raw)
                except OSError as exc:
                    self._health.failed(CHECKPOINT, exc)
                    self._unsaved = raw  # save_pending() restores it later
            log.info("running the saved config %s (hash %s)", name, resp.configHash[:16])
            await self._adopt(resp, config, raw=None, source="checkpoint")
            return True
        return False

    async def _adopt(
        self,
        resp: devconfig_pb2.ConfigResponse,
        config: NodeConfig,
        *,
        raw: bytes | None,
        source: str,
    ) -> None:
        if raw is not None:
            self._unsaved = raw
            self._save_retry_at = 0.0
            self._save_backoff.reset()
            await self.save_pending()
            self._promoted = False
        received_at = time.time()
        ok = await self._apply(config)
        # Status changes only once the config is in effect, so readers never see a half state.
        self.current = config
        self.status.config_hash = resp.configHash
        self.status.config_timestamp = _timestamp(resp.config)
        self.status.received_at = received_at
        self.status.source = source
        self.status.applied_ok = ok
        self._applied_at_mono = time.monotonic() if ok else None
        new_cert_hash = resp.config.controllercert_confighash
        # A saved config only tells us which certificates we have; a new one from the
        # controller that names other certificates makes us fetch them.
        changed = self._controller_cert_hash and self._controller_cert_hash != new_cert_hash
        if source == "controller" and changed:
            log.info("controller certificates changed; fetching them")
            await self._refresh_certs()
        self._controller_cert_hash = new_cert_hash

    async def save_pending(self) -> bool:
        """Write the checkpoint of the config in effect if it is not on disk yet and its retry
        is due.  True when nothing is left unsaved.  Never raises for disk trouble: a failure
        is reported to the storage health and retried later, with backoff."""
        if self._unsaved is None:
            return True
        if time.monotonic() < self._save_retry_at:
            return False
        raw = self._unsaved
        try:
            await asyncio.to_thread(self._checkpoints.save, raw)
        except OSError as exc:
            self._health.failed(CHECKPOINT, exc)
            self._save_retry_at = time.monotonic() + self._save_backoff.next()
            return False
        if self._unsaved is raw:
            self._unsaved = None
        self._save_backoff.reset()
        self._health.ok(CHECKPOINT)
        return self._unsaved is None

    @property
    def checkpoint_pending(self) -> bool:
        """The config in effect is not in the checkpoint yet (the disk refused it)."""
        return self._unsaved is not None

    async def _maybe_promote(self) -> None:
        """Refresh lastconfig.bak once the config has run cleanly for the test window (and is
        the one in the primary checkpoint)."""
        if self._promoted or self._applied_at_mono is None or self._unsaved is not None:
            return
        window = self._items().int("timer.test.baseimage.update")
        if time.monotonic() - self._applied_at_mono >= window:
            try:
                await asyncio.to_thread(self._checkpoints.promote)
            except OSError as exc:
                self._health.failed(CHECKPOINT_BACKUP, exc)  # tried again next round
                return
            self._health.ok(CHECKPOINT_BACKUP)
            self._promoted = True

    # ---- polling ------------------------------------------------------------------------

    async def _refresh_certs(self) -> None:
        try:
            await self._certs.refresh(self._client)
        except (TransportError, ControllerCertError) as exc:
            log.warning("controller certificate refresh failed: %s", exc)

    async def poll_once(self, stop: asyncio.Event) -> None:
        """One config request and its consequences.  Never raises for controller trouble."""
        token = await self._attestor.token(stop)
        if token is None:
            return
        req = devconfig_pb2.ConfigRequest(configHash=self.status.config_hash, integrity_token=token)
        body = await seal_as_device_async(req.SerializeToString(), self._device)
        try:
            resp = await self._client.request("config", body)
        except TransportError as exc:
            self.status.controller_reachable = False
            log.warning("config request failed: %s", exc)
            return
        self.status.controller_reachable = True
        self.status.last_contact = time.time()
        if resp.status == 304:
            return
        if resp.status == 403:
            self._attestor.restart("config answered 403 (integrity token refused)")
            return
        if resp.status in (400, 404):
            log.warning("config answered %d: checking the device UUID", resp.status)
            await self._on_unknown_device()
            return
        if resp.status != 200:
            log.warning("config answered HTTP %d", resp.status)
            return
        if not resp.content_type.startswith(PROTO_TYPE):
            # EVE's ValidateProtoContentType: a body that does not say it is protobuf is not
            # parsed (a captive portal or a proxy error page answers 200 too).
            log.warning("config answer has Content-Type %r, not %s", resp.content_type, PROTO_TYPE)
            return
        await self._handle_config(resp.body)

    async def _handle_config(self, raw: bytes) -> None:
        try:
            try:
                cfg_resp, config = await self._verify(raw)
            except envelope.UnknownSigner:
                log.info("config signed by an unknown certificate; fetching /certs")
                await self._refresh_certs()
                try:
                    cfg_resp, config = await self._verify(raw)
                except envelope.UnknownSigner as exc:
                    raise ConfigRejected(f"config signed by an unknown certificate: {exc}") from exc
        except ConfigRejected as exc:
            self._reject(str(exc))
            return
        if cfg_resp.configHash and cfg_resp.configHash == self.status.config_hash:
            return  # a 200 with the same hash is "unchanged" for EVE too
        log.info(
            "new config %s (version %r, %d apps, %d network instances)",
            cfg_resp.configHash[:16],
            config.version,
            len(config.apps),
            len(config.network_instances),
        )
        self.status.last_error = ""
        await self._adopt(cfg_resp, config, raw=raw, source="controller")

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; each wait is a jittered ``timer.config.interval``."""
        while not stop.is_set():
            # One round: attestation (a few requests), the config request, a certificate or
            # UUID re-check, the apply hand-off; each request is bounded by the send timeout.
            send = float(self._items().int("timer.send.timeout") or 120)
            with (
                self._liveness.activity("config poll", 8 * send + 120)
                if self._liveness is not None
                else contextlib.nullcontext()
            ):
                await self.poll_once(stop)
                await self.save_pending()
                await self._certs.save_pending()
                await self._maybe_promote()
            interval = self._items().int("timer.config.interval")
            if await wait_or_stop(stop, jittered(interval), wake=self.wake):
                return
