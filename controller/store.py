"""Everything the controller remembers, as typed operations on ``controller.db``.

The store is synchronous, and a connection belongs to the thread that opened it.  Each call is
one short statement or transaction on a local file, so the server's request handlers call the
shared store directly for the light work (lookups, attestation, config).  A useful side effect:
within the server process, request handling never interleaves inside a store call, which keeps
read-then-write steps (nonce consumption, registration) atomic against other requests;
``BEGIN IMMEDIATE`` keeps them atomic against other connections (the admin commands in other
processes, and the server's upload worker, which stores reports and logs through its own
connection from :meth:`Store.reopen` so that bulk inserts never run on the event loop).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from controller import db
from controller.records import (
    AttestState,
    Clock,
    ConfigVersion,
    Device,
    DeviceCert,
    GoldenSource,
    LogRecord,
    NewConfig,
    NonceRecord,
    ObjectError,
    ObjectKind,
    ObjectStatus,
    OnboardDecision,
    OnboardEntry,
    PcrPolicy,
    PcrReport,
    RegisterOutcome,
    Report,
    ReportKind,
)

_DEVICE_COLUMNS = (
    "uuid, cert_pem, cert_sha256, onboard_sha256, serial, registered_at, last_seen, "
    "require_attestation, allow_no_tpm, attest_state, attest_reason, attest_at, integrity_token"
)


class UnknownDevice(LookupError):
    """No device with that UUID."""


class Store:
    """The controller database.  Use as a context manager, or call close()."""

    def __init__(
        self, conn: sqlite3.Connection, *, clock: Clock = time.time, path: Path | None = None
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._path = path

    @classmethod
    def open(cls, path: Path, *, clock: Clock = time.time) -> Store:
        """Open or create the database (schema migrated); raises db.SchemaTooNew, sqlite3.Error."""
        return cls(db.connect(path), clock=clock, path=path)

    @property
    def path(self) -> Path | None:
        """The database file, when the store was opened from one (see :meth:`reopen`)."""
        return self._path

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for modules that keep their own tables (controller.clusters), so
        their changes can share a transaction with the store's tables."""
        return self._conn

    def reopen(self) -> Store:
        """Another connection to the same file, with the same clock, for use in another thread.

        An SQLite connection belongs to the thread that opened it; a worker thread that stores
        uploads opens its own with this.  Raises ValueError for a store not opened from a file.
        """
        if self._path is None:
            raise ValueError("this store was not opened from a file")
        return Store.open(self._path, clock=self._clock)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def now(self) -> float:
        return self._clock()

    # --- onboarding allow-list ------------------------------------------------------------

    def add_onboard(
        self,
        *,
        cert_pem: bytes,
        cert_sha256: str,
        subject: str,
        serials: Iterable[str],
        any_serial: bool,
    ) -> OnboardEntry:
        """Allow-list an onboarding certificate, or extend an existing entry.

        Serials are added to those already allowed; ``any_serial`` can only be switched on here
        (``remove_onboard`` with serials narrows it again).
        """
        with db.transaction(self._conn) as c:
            c.execute(
                "INSERT INTO onboard (cert_sha256, cert_pem, subject, any_serial, added_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (cert_sha256) DO UPDATE SET"
                " any_serial = max(any_serial, excluded.any_serial)",
                (cert_sha256, cert_pem, subject, int(any_serial), self.now()),
            )
            c.executemany(
                "INSERT OR IGNORE INTO onboard_serial (cert_sha256, serial) VALUES (?, ?)",
                [(cert_sha256, s) for s in serials],
            )
        entry = self.onboard_entry(cert_sha256)
        assert entry is not None
        return entry

    def remove_onboard(self, cert_sha256: str, serials: Sequence[str] = ()) -> bool:
        """Remove the whole entry, or only ``serials`` from it; False when there is no entry.

        Devices it registered stay registered.
        """
        with db.transaction(self._conn) as c:
            if not c.execute(
                "SELECT 1 FROM onboard WHERE cert_sha256 = ?", (cert_sha256,)
            ).fetchone():
                return False
            if serials:
                c.executemany(
                    "DELETE FROM onboard_serial WHERE cert_sha256 = ? AND serial = ?",
                    [(cert_sha256, s) for s in serials],
                )
            else:
                c.execute("DELETE FROM onboard WHERE cert_sha256 = ?", (cert_sha256,))
        return True

    def onboard_entry(self, cert_sha256: str) -> OnboardEntry | None:
        entries = self._onboard_entries("WHERE cert_sha256 = ?", (cert_sha256,))
        return entries[0] if entries else None

    def list_onboard(self) -> list[OnboardEntry]:
        return self._onboard_entries("", ())

    def _onboard_entries(self, where: str, args: tuple[object, ...]) -> list[OnboardEntry]:
        rows = self._conn.execute(
            "SELECT cert_sha256, subject, cert_pem, any_serial, added_at FROM onboard "
            f"{where} ORDER BY added_at",
            args,
        ).fetchall()
        entries = []
        for sha, subject, pem, any_serial, added_at in rows:
            serials = tuple(
                r[0]
                for r in self._conn.execute(
                    "SELECT serial FROM onboard_serial WHERE cert_sha256 = ? ORDER BY serial",
                    (sha,),
                )
            )
            entries.append(
                OnboardEntry(
                    cert_sha256=sha,
                    subject=subject,
                    cert_pem=bytes(pem),
                    any_serial=bool(any_serial),
                    serials=serials,
                    added_at=added_at,
                )
            )
        return entries

    def onboard_decision(self, cert_sha256: str, serial: str) -> OnboardDecision:
        """May this onboarding certificate register a device with this serial?"""
        entry = self.onboard_entry(cert_sha256)
        if entry is None:
            return OnboardDecision.CERT_NOT_LISTED
        if entry.any_serial or serial in entry.serials:
            return OnboardDecision.ALLOWED
        return OnboardDecision.SERIAL_NOT_ALLOWED

    # --- devices ----------------------------------------------------------------------------

    def register_device(
        self,
        *,
        onboard_sha256: str,
        serial: str,
        cert_pem: bytes,
        cert_sha256: bytes,
        default_config: Callable[[str, float, bytes | None], NewConfig],
    ) -> tuple[RegisterOutcome, Device]:
        """Register (onboarding certificate, serial) with a device certificate.

        New pair: a device with a random UUID is created together with its version-0 config
        (``default_config(uuid, registered_at, project_default)``, the last argument being what
        set_default_config stored, or None).  Same pair and same certificate: nothing
        changes.  Same pair with another certificate, or a certificate already used by another
        device: a conflict; the existing device is returned.  Atomic.
        """
        with db.transaction(self._conn) as c:
            row = c.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM device WHERE onboard_sha256 = ? AND serial = ?",
                (onboard_sha256, serial),
            ).fetchone()
            if row is not None:
                existing = _device(row)
                if existing.cert_sha256 == cert_sha256:
                    return RegisterOutcome.ALREADY_REGISTERED, existing
                return RegisterOutcome.SERIAL_CONFLICT, existing
            row = c.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM device WHERE cert_sha256 = ?", (cert_sha256,)
            ).fetchone()
            if row is not None:
                return RegisterOutcome.CERT_CONFLICT, _device(row)
            device_uuid = str(uuidlib.uuid4())
            now = self.now()
            c.execute(
                "INSERT INTO device (uuid, cert_sha256, cert_pem, onboard_sha256, serial,"
                " registered_at) VALUES (?, ?, ?, ?, ?, ?)",
                (device_uuid, cert_sha256, cert_pem, onboard_sha256, serial, now),
            )
            template = c.execute("SELECT config FROM default_config WHERE id = 1").fetchone()
            version0 = default_config(device_uuid, now, bytes(template[0]) if template else None)
            self._insert_config(c, device_uuid, 0, version0)
            row = c.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM device WHERE uuid = ?", (device_uuid,)
            ).fetchone()
        return RegisterOutcome.CREATED, _device(row)

    def device(self, device_uuid: str) -> Device | None:
        row = self._conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM device WHERE uuid = ?", (device_uuid,)
        ).fetchone()
        return _device(row) if row else None

    def require_device(self, device_uuid: str) -> Device:
        """Like device(), but raises UnknownDevice."""
        found = self.device(device_uuid)
        if found is None:
            raise UnknownDevice(f"no device {device_uuid}")
        return found

    def device_by_cert_hash(self, cert_hash: bytes) -> Device | None:
        """The device whose certificate DER hashes to ``cert_hash`` (32 bytes, or its first 16)."""
        if len(cert_hash) == 32:
            where, arg = "cert_sha256 = ?", cert_hash
        elif len(cert_hash) == 16:
            where, arg = "substr(cert_sha256, 1, 16) = ?", cert_hash
        else:
            return None
        row = self._conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM device WHERE {where}", (arg,)
        ).fetchone()
        return _device(row) if row else None

    def list_devices(self) -> list[Device]:
        rows = self._conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM device ORDER BY registered_at"
        ).fetchall()
        return [_device(r) for r in rows]

    def touch(self, device_uuid: str) -> None:
        """Record that the device made an authenticated request now."""
        self._conn.execute(
            "UPDATE device SET last_seen = ? WHERE uuid = ?", (self.now(), device_uuid)
        )

    def set_device_policy(
        self,
        device_uuid: str,
        *,
        require_attestation: bool | None = None,
        allow_no_tpm: bool | None = None,
    ) -> Device:
        """Change per-device policy; None leaves a setting as it is.  Raises UnknownDevice."""
        with db.transaction(self._conn) as c:
            if require_attestation is not None:
                c.execute(
                    "UPDATE device SET require_attestation = ? WHERE uuid = ?",
                    (int(require_attestation), device_uuid),
                )
            if allow_no_tpm is not None:
                c.execute(
                    "UPDATE device SET allow_no_tpm = ? WHERE uuid = ?",
                    (int(allow_no_tpm), device_uuid),
                )
        return self.require_device(device_uuid)

    def remove_device(self, device_uuid: str) -> bool:
        """Forget a device and everything stored about it; False when it did not exist."""
        cur = self._conn.execute("DELETE FROM device WHERE uuid = ?", (device_uuid,))
        return cur.rowcount > 0

    # --- attestation ------------------------------------------------------------------------

    def set_attestation(
        self,
        device_uuid: str,
        state: AttestState,
        reason: str,
        *,
        integrity_token: bytes | None,
    ) -> None:
        """Record the attestation outcome and the integrity token that /config must now see.

        ``integrity_token=None`` revokes the token: the device must attest again.
        """
        self._conn.execute(
            "UPDATE device SET attest_state = ?, attest_reason = ?, attest_at = ?,"
            " integrity_token = ? WHERE uuid = ?",
            (state.value, reason, self.now(), integrity_token, device_uuid),
        )

    def note_attestation(self, device_uuid: str, state: AttestState, reason: str) -> None:
        """Record a state change that leaves the integrity token as it is."""
        self._conn.execute(
            "UPDATE device SET attest_state = ?, attest_reason = ?, attest_at = ? WHERE uuid = ?",
            (state.value, reason, self.now(), device_uuid),
        )

    def put_nonce(self, device_uuid: str, nonce: bytes, lifetime: float) -> NonceRecord:
        """Issue ``nonce``; it replaces any earlier nonce of the device."""
        now = self.now()
        record = NonceRecord(nonce=nonce, issued_at=now, expires_at=now + lifetime)
        self._conn.execute(
            "INSERT OR REPLACE INTO attest_nonce (device_uuid, nonce, issued_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (device_uuid, record.nonce, record.issued_at, record.expires_at),
        )
        return record

    def take_nonce(self, device_uuid: str) -> NonceRecord | None:
        """Remove and return the device's outstanding nonce (expired or not); single use."""
        with db.transaction(self._conn) as c:
            row = c.execute(
                "SELECT nonce, issued_at, expires_at FROM attest_nonce WHERE device_uuid = ?",
                (device_uuid,),
            ).fetchone()
            c.execute("DELETE FROM attest_nonce WHERE device_uuid = ?", (device_uuid,))
        if row is None:
            return None
        return NonceRecord(nonce=bytes(row[0]), issued_at=row[1], expires_at=row[2])

    def device_certs(self, device_uuid: str) -> list[DeviceCert]:
        rows = self._conn.execute(
            "SELECT cert_type, hash_algo, cert_hash, pem, is_mutable, is_tpm, zcert"
            " FROM device_cert WHERE device_uuid = ? ORDER BY position",
            (device_uuid,),
        ).fetchall()
        return [
            DeviceCert(
                cert_type=t,
                hash_algo=a,
                cert_hash=bytes(h),
                pem=bytes(p),
                is_mutable=bool(m),
                is_tpm=bool(tpm),
                zcert=bytes(z),
            )
            for t, a, h, p, m, tpm, z in rows
        ]

    def set_device_certs(self, device_uuid: str, certs: Sequence[DeviceCert]) -> None:
        """Replace the device's stored certificates with ``certs`` (policy is the caller's)."""
        now = self.now()
        with db.transaction(self._conn) as c:
            c.execute("DELETE FROM device_cert WHERE device_uuid = ?", (device_uuid,))
            c.executemany(
                "INSERT INTO device_cert (device_uuid, position, cert_type, hash_algo, cert_hash,"
                " pem, is_mutable, is_tpm, zcert, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        device_uuid,
                        i,
                        dc.cert_type,
                        dc.hash_algo,
                        dc.cert_hash,
                        dc.pem,
                        int(dc.is_mutable),
                        int(dc.is_tpm),
                        dc.zcert,
                        now,
                    )
                    for i, dc in enumerate(certs)
                ],
            )

    def storage_keys(self, device_uuid: str) -> list[bytes]:
        """Escrowed vault keys (serialised AttestVolumeKey), in the order they were sent."""
        rows = self._conn.execute(
            "SELECT volume_key FROM storage_key WHERE device_uuid = ? ORDER BY position",
            (device_uuid,),
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def set_storage_keys(self, device_uuid: str, keys: Sequence[bytes]) -> None:
        """Replace the escrowed keys of the device."""
        now = self.now()
        with db.transaction(self._conn) as c:
            c.execute("DELETE FROM storage_key WHERE device_uuid = ?", (device_uuid,))
            c.executemany(
                "INSERT INTO storage_key (device_uuid, position, volume_key, stored_at)"
                " VALUES (?, ?, ?, ?)",
                [(device_uuid, i, k, now) for i, k in enumerate(keys)],
            )

    # --- PCR policy (measured boot) ------------------------------------------------------------

    def pcr_policy(self, device_uuid: str) -> PcrPolicy:
        """The device's PCR policy; the default (default PCRs, nothing learnt) without a row."""
        row = self._conn.execute(
            "SELECT pcr_indexes, golden, golden_log, golden_source, golden_at FROM pcr_policy"
            " WHERE device_uuid = ?",
            (device_uuid,),
        ).fetchone()
        if row is None:
            return PcrPolicy()
        indexes, golden, golden_log, source, golden_at = row
        policy = PcrPolicy()
        return PcrPolicy(
            pcrs=_indexes(indexes) if indexes is not None else policy.pcrs,
            custom_pcrs=indexes is not None,
            golden=_pcr_map(golden) if golden is not None else None,
            golden_log=bytes(golden_log) if golden_log is not None else None,
            golden_source=GoldenSource(source) if source else None,
            golden_at=float(golden_at) if golden_at is not None else None,
        )

    def set_policy_pcrs(self, device_uuid: str, pcrs: Sequence[int] | None) -> PcrPolicy:
        """Choose which PCRs the policy compares (None: the default set).  Raises UnknownDevice."""
        self.require_device(device_uuid)
        text = None if pcrs is None else ",".join(str(i) for i in sorted(set(pcrs)))
        self._conn.execute(
            "INSERT INTO pcr_policy (device_uuid, pcr_indexes) VALUES (?, ?)"
            " ON CONFLICT (device_uuid) DO UPDATE SET pcr_indexes = excluded.pcr_indexes",
            (device_uuid, text),
        )
        return self.pcr_policy(device_uuid)

    def set_golden(
        self,
        device_uuid: str,
        golden: Mapping[int, bytes] | None,
        event_log: bytes | None,
        source: GoldenSource | None,
    ) -> None:
        """Set the golden values (or with None forget them: trust on first use again)."""
        self._conn.execute(
            "INSERT INTO pcr_policy (device_uuid, golden, golden_log, golden_source, golden_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_uuid) DO UPDATE SET"
            " golden = excluded.golden, golden_log = excluded.golden_log,"
            " golden_source = excluded.golden_source, golden_at = excluded.golden_at",
            (
                device_uuid,
                None if golden is None else _pcr_json(golden),
                event_log if golden is not None else None,
                source.value if golden is not None and source is not None else None,
                self.now() if golden is not None else None,
            ),
        )

    def accept_reported_pcrs(self, device_uuid: str) -> PcrReport | None:
        """Make the last verified report's PCRs (and log) the golden values; None without one."""
        with db.transaction(self._conn):
            report = self.pcr_report(device_uuid)
            if report is None:
                return None
            self.set_golden(device_uuid, report.pcrs, report.event_log, GoldenSource.ADMIN)
            self._conn.execute(
                "UPDATE pcr_report SET mismatched = '', detail = '' WHERE device_uuid = ?",
                (device_uuid,),
            )
        return report

    def record_pcr_report(self, device_uuid: str, report: PcrReport, *, learn: bool) -> bool:
        """Store the PCRs of a verified quote; with ``learn``, also make them the golden values
        unless the device has some already (trust on first use).  Returns whether it learnt."""
        with db.transaction(self._conn) as c:
            c.execute(
                "INSERT OR REPLACE INTO pcr_report (device_uuid, pcrs, quoted, event_log,"
                " versions, reported_at, mismatched, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    device_uuid,
                    _pcr_json(report.pcrs),
                    ",".join(map(str, report.quoted)),
                    report.event_log,
                    json.dumps([list(v) for v in report.versions]),
                    report.reported_at,
                    ",".join(map(str, report.mismatched)),
                    report.detail,
                ),
            )
            if not learn:
                return False
            cur = c.execute(
                "INSERT INTO pcr_policy (device_uuid, golden, golden_log, golden_source,"
                " golden_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_uuid) DO UPDATE SET"
                " golden = excluded.golden, golden_log = excluded.golden_log,"
                " golden_source = excluded.golden_source, golden_at = excluded.golden_at"
                " WHERE pcr_policy.golden IS NULL",
                (
                    device_uuid,
                    _pcr_json(report.pcrs),
                    report.event_log,
                    GoldenSource.FIRST_USE.value,
                    self.now(),
                ),
            )
            return cur.rowcount > 0

    def pcr_report(self, device_uuid: str) -> PcrReport | None:
        row = self._conn.execute(
            "SELECT pcrs, quoted, event_log, versions, reported_at, mismatched, detail"
            " FROM pcr_report WHERE device_uuid = ?",
            (device_uuid,),
        ).fetchone()
        if row is None:
            return None
        pcrs, quoted, event_log, versions, reported_at, mismatched, detail = row
        return PcrReport(
            pcrs=_pcr_map(pcrs),
            quoted=_indexes(quoted),
            event_log=bytes(event_log) if event_log is not None else None,
            versions=tuple((str(t), str(v)) for t, v in json.loads(versions)),
            reported_at=float(reported_at),
            mismatched=_indexes(mismatched),
            detail=str(detail),
        )

    # --- configuration ----------------------------------------------------------------------

    def add_config(self, device_uuid: str, render: Callable[[int], NewConfig]) -> ConfigVersion:
        """Store the next config version: ``render(version)`` makes it for that number.

        The version is one more than the highest stored, read and written in one transaction so
        two concurrent ``config set`` never produce the same number.  Raises UnknownDevice.
        """
        with db.transaction(self._conn) as c:
            if not c.execute("SELECT 1 FROM device WHERE uuid = ?", (device_uuid,)).fetchone():
                raise UnknownDevice(f"no device {device_uuid}")
            (highest,) = c.execute(
                "SELECT coalesce(max(version), -1) FROM config WHERE device_uuid = ?",
                (device_uuid,),
            ).fetchone()
            version = int(highest) + 1
            self._insert_config(c, device_uuid, version, render(version))
        found = self.config_version(device_uuid, version)
        assert found is not None
        return found

    def _insert_config(
        self, c: sqlite3.Connection, device_uuid: str, version: int, new: NewConfig
    ) -> None:
        c.execute(
            "INSERT INTO config (device_uuid, version, config, config_hash, config_timestamp,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (device_uuid, version, new.config, new.config_hash, new.config_timestamp, self.now()),
        )

    def set_default_config(self, config: bytes | None) -> None:
        """Set (or with None, clear) the config newly registered devices start with."""
        if config is None:
            self._conn.execute("DELETE FROM default_config")
        else:
            self._conn.execute(
                "INSERT OR REPLACE INTO default_config (id, config, set_at) VALUES (1, ?, ?)",
                (config, self.now()),
            )

    def default_config(self) -> bytes | None:
        row = self._conn.execute("SELECT config FROM default_config WHERE id = 1").fetchone()
        return bytes(row[0]) if row else None

    def current_config(self, device_uuid: str) -> ConfigVersion | None:
        """The highest config version of the device (version 0 is made at registration)."""
        row = self._conn.execute(
            "SELECT device_uuid, version, config, config_hash, config_timestamp, created_at"
            " FROM config WHERE device_uuid = ? ORDER BY version DESC LIMIT 1",
            (device_uuid,),
        ).fetchone()
        return _config(row) if row else None

    def config_version(self, device_uuid: str, version: int) -> ConfigVersion | None:
        row = self._conn.execute(
            "SELECT device_uuid, version, config, config_hash, config_timestamp, created_at"
            " FROM config WHERE device_uuid = ? AND version = ?",
            (device_uuid, version),
        ).fetchone()
        return _config(row) if row else None

    def config_history(self, device_uuid: str) -> list[ConfigVersion]:
        rows = self._conn.execute(
            "SELECT device_uuid, version, config, config_hash, config_timestamp, created_at"
            " FROM config WHERE device_uuid = ? ORDER BY version",
            (device_uuid,),
        ).fetchall()
        return [_config(r) for r in rows]

    # --- reports and logs -------------------------------------------------------------------

    def add_report(self, device_uuid: str, kind: ReportKind, raw: bytes, json: str | None) -> int:
        cur = self._conn.execute(
            "INSERT INTO report (device_uuid, kind, received_at, raw, json) VALUES (?, ?, ?, ?, ?)",
            (device_uuid, kind.value, self.now(), raw, json),
        )
        return int(cur.lastrowid or 0)

    def reports(
        self, device_uuid: str, kind: ReportKind, *, last: int | None = None
    ) -> list[Report]:
        """Stored reports of one kind, oldest first; only the newest ``last`` when given."""
        limit = -1 if last is None else last
        rows = self._conn.execute(
            "SELECT id, device_uuid, kind, received_at, raw, json FROM ("
            " SELECT * FROM report WHERE device_uuid = ? AND kind = ? ORDER BY id DESC LIMIT ?"
            ") ORDER BY id",
            (device_uuid, kind.value, limit),
        ).fetchall()
        return [
            Report(id=i, device_uuid=d, kind=ReportKind(k), received_at=r, raw=bytes(raw), json=j)
            for i, d, k, r, raw, j in rows
        ]

    def report_counts(self, device_uuid: str) -> dict[ReportKind, int]:
        counts = dict.fromkeys(ReportKind, 0)
        for kind, n in self._conn.execute(
            "SELECT kind, count(*) FROM report WHERE device_uuid = ? GROUP BY kind", (device_uuid,)
        ):
            counts[ReportKind(kind)] = int(n)
        return counts

    # --- objects: the last reported state of apps, network instances, volumes, content trees --

    def put_object_status(self, device_uuid: str, status: ObjectStatus, *, limit: int) -> bool:
        """Store ``status`` in place of the object's previous one.  A new object is refused
        (False, nothing stored) when the device already has ``limit`` objects."""
        key = (device_uuid, status.kind.value, status.object_id)
        errors = json.dumps([[e.description, e.time, e.severity] for e in status.errors])
        with db.transaction(self._conn) as c:
            known = c.execute(
                "SELECT 1 FROM object_status WHERE device_uuid = ? AND kind = ? AND object_id = ?",
                key,
            ).fetchone()
            if known is None:
                (count,) = c.execute(
                    "SELECT count(*) FROM object_status WHERE device_uuid = ?", (device_uuid,)
                ).fetchone()
                if int(count) >= limit:
                    return False
            c.execute(
                "INSERT OR REPLACE INTO object_status (device_uuid, kind, object_id, name, state,"
                " errors, reported_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, status.name, status.state, errors, status.reported_at, status.received_at),
            )
        return True

    def remove_object_status(self, device_uuid: str, kind: ObjectKind, object_id: str) -> bool:
        """Forget a deleted object; False when it was not known."""
        cur = self._conn.execute(
            "DELETE FROM object_status WHERE device_uuid = ? AND kind = ? AND object_id = ?",
            (device_uuid, kind.value, object_id),
        )
        return cur.rowcount > 0

    def object_statuses(
        self, device_uuid: str, kind: ObjectKind | None = None
    ) -> list[ObjectStatus]:
        """The device's objects by kind, then name, then UUID."""
        where, args = "device_uuid = ?", [device_uuid]
        if kind is not None:
            where += " AND kind = ?"
            args.append(kind.value)
        rows = self._conn.execute(
            "SELECT kind, object_id, name, state, errors, reported_at, received_at"
            f" FROM object_status WHERE {where} ORDER BY kind, name, object_id",
            args,
        ).fetchall()
        return [_object_status(r) for r in rows]

    def add_logs(
        self, device_uuid: str, app_uuid: str | None, meta: str, entries: Sequence[str]
    ) -> int:
        """Store one upload: its header metadata and its entries.  Returns the entry count."""
        now = self.now()
        with db.transaction(self._conn) as c:
            cur = c.execute(
                "INSERT INTO log_bundle (device_uuid, app_uuid, received_at, meta)"
                " VALUES (?, ?, ?, ?)",
                (device_uuid, app_uuid, now, meta),
            )
            bundle = cur.lastrowid
            c.executemany(
                "INSERT INTO log_entry (bundle_id, device_uuid, app_uuid, received_at, entry)"
                " VALUES (?, ?, ?, ?, ?)",
                [(bundle, device_uuid, app_uuid, now, e) for e in entries],
            )
        return len(entries)

    def log_entries(
        self,
        device_uuid: str,
        *,
        app_uuid: str | None = None,
        after_id: int = 0,
        last: int | None = None,
    ) -> list[LogRecord]:
        """Log entries after ``after_id``, oldest first; device logs and app logs together unless
        ``app_uuid`` narrows it to one app.  ``last`` keeps only the newest N."""
        where = "e.device_uuid = ? AND e.id > ?"
        args: list[object] = [device_uuid, after_id]
        if app_uuid is not None:
            where += " AND e.app_uuid = ?"
            args.append(app_uuid)
        args.append(-1 if last is None else last)
        rows = self._conn.execute(
            "SELECT * FROM ("
            " SELECT e.id, e.device_uuid, e.app_uuid, e.received_at, e.entry, b.meta"
            f" FROM log_entry e JOIN log_bundle b ON b.id = e.bundle_id WHERE {where}"
            " ORDER BY e.id DESC LIMIT ?"
            ") ORDER BY id",
            args,
        ).fetchall()
        return [
            LogRecord(id=i, device_uuid=d, app_uuid=a, received_at=r, entry=e, meta=m)
            for i, d, a, r, e, m in rows
        ]

    def device_usage(self, device_uuid: str, *, row_cost: int) -> int:
        """Bytes the device's reports and log entries take, with ``row_cost`` added per row.

        Scans the device's rows: meant to be called rarely (once, then kept up to date).
        """
        total = 0
        for query in (
            "SELECT coalesce(sum(length(raw) + coalesce(length(CAST(json AS BLOB)), 0)), 0),"
            " count(*) FROM report WHERE device_uuid = ?",
            "SELECT coalesce(sum(length(CAST(entry AS BLOB))), 0), count(*)"
            " FROM log_entry WHERE device_uuid = ?",
        ):
            size, rows = self._conn.execute(query, (device_uuid,)).fetchone()
            total += int(size) + int(rows) * row_cost
        return total

    def log_count(self, device_uuid: str) -> int:
        (n,) = self._conn.execute(
            "SELECT count(*) FROM log_entry WHERE device_uuid = ?", (device_uuid,)
        ).fetchone()
        return int(n)


def _device(row: Any) -> Device:
    # sqlite3 rows are untyped tuples; the column order is _DEVICE_COLUMNS.
    (
        uuid,
        cert_pem,
        cert_sha256,
        onboard_sha256,
        serial,
        registered_at,
        last_seen,
        require_attestation,
        allow_no_tpm,
        attest_state,
        attest_reason,
        attest_at,
        integrity_token,
    ) = row
    return Device(
        uuid=str(uuid),
        cert_pem=bytes(cert_pem),
        cert_sha256=bytes(cert_sha256),
        onboard_sha256=onboard_sha256 if isinstance(onboard_sha256, str) else None,
        serial=serial if isinstance(serial, str) else None,
        registered_at=float(registered_at),
        last_seen=float(last_seen) if last_seen is not None else None,
        require_attestation=bool(require_attestation),
        allow_no_tpm=bool(allow_no_tpm),
        attest_state=AttestState(attest_state),
        attest_reason=str(attest_reason),
        attest_at=float(attest_at) if attest_at is not None else None,
        integrity_token=bytes(integrity_token) if integrity_token is not None else None,
    )


def _indexes(text: str) -> tuple[int, ...]:
    return tuple(int(i) for i in text.split(",") if i)


def _pcr_json(values: Mapping[int, bytes]) -> str:
    return json.dumps({str(i): values[i].hex() for i in sorted(values)})


def _pcr_map(text: str) -> dict[int, bytes]:
    return {int(i): bytes.fromhex(v) for i, v in json.loads(text).items()}


def _config(row: Any) -> ConfigVersion:
    device_uuid, version, config, config_hash, config_timestamp, created_at = row
    return ConfigVersion(
        device_uuid=str(device_uuid),
        version=int(version),
        config=bytes(config),
        config_hash=str(config_hash),
        config_timestamp=str(config_timestamp),
        created_at=float(created_at),
    )


def _object_status(row: Any) -> ObjectStatus:
    kind, object_id, name, state, errors, reported_at, received_at = row
    return ObjectStatus(
        kind=ObjectKind(kind),
        object_id=str(object_id),
        name=str(name),
        state=str(state),
        errors=tuple(
            ObjectError(str(d), None if t is None else float(t), str(s))
            for d, t, s in json.loads(errors)
        ),
        reported_at=None if reported_at is None else float(reported_at),
        received_at=float(received_at),
    )
