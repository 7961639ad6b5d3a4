"""Opening ``controller.db``: connection settings and the schema, migrated on open.

The server and the admin commands open the same file at the same time, as separate processes.
WAL mode lets readers run beside the one writer; writers wait for each other up to
``BUSY_TIMEOUT_MS``.  Every multi-statement change runs in ``BEGIN IMMEDIATE`` (see
:func:`transaction`), so the write lock is taken up front and a transaction never fails half way
with "database is locked" after it has read something.

The schema version is SQLite's ``PRAGMA user_version``.  ``MIGRATIONS[i]`` takes the schema from
version ``i`` to ``i + 1``; a database newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000

_SCHEMA_V1 = """
CREATE TABLE onboard (
    cert_sha256  TEXT PRIMARY KEY,      -- hex SHA-256 of the certificate DER
    cert_pem     BLOB NOT NULL,
    subject      TEXT NOT NULL,
    any_serial   INTEGER NOT NULL DEFAULT 0,
    added_at     REAL NOT NULL
);
CREATE TABLE onboard_serial (
    cert_sha256  TEXT NOT NULL REFERENCES onboard(cert_sha256) ON DELETE CASCADE,
    serial       TEXT NOT NULL,
    PRIMARY KEY (cert_sha256, serial)
);
-- onboard_sha256 is deliberately not a foreign key: removing an onboarding certificate from
-- the allow-list stops new registrations but keeps the devices it registered.
CREATE TABLE device (
    uuid                 TEXT PRIMARY KEY,
    cert_sha256          BLOB NOT NULL UNIQUE,   -- SHA-256 of the device cert DER
    cert_pem             BLOB NOT NULL,
    onboard_sha256       TEXT,
    serial               TEXT,
    registered_at        REAL NOT NULL,
    last_seen            REAL,
    require_attestation  INTEGER NOT NULL DEFAULT 1,
    allow_no_tpm         INTEGER NOT NULL DEFAULT 1,
    attest_state         TEXT NOT NULL DEFAULT 'unattested',
    attest_reason        TEXT NOT NULL DEFAULT '',
    attest_at            REAL,
    integrity_token      BLOB,
    UNIQUE (onboard_sha256, serial)
);
CREATE TABLE device_cert (
    device_uuid  TEXT NOT NULL REFERENCES device(uuid) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    cert_type    INTEGER NOT NULL,
    hash_algo    INTEGER NOT NULL,
    cert_hash    BLOB NOT NULL,
    pem          BLOB NOT NULL,
    is_mutable   INTEGER NOT NULL,
    is_tpm       INTEGER NOT NULL,
    zcert        BLOB NOT NULL,             -- the ZCert as received
    stored_at    REAL NOT NULL,
    PRIMARY KEY (device_uuid, position)
);
CREATE TABLE attest_nonce (
    device_uuid  TEXT PRIMARY KEY REFERENCES device(uuid) ON DELETE CASCADE,
    nonce        BLOB NOT NULL,
    issued_at    REAL NOT NULL,
    expires_at   REAL NOT NULL
);
CREATE TABLE storage_key (
    device_uuid  TEXT NOT NULL REFERENCES device(uuid) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    volume_key   BLOB NOT NULL,             -- serialised AttestVolumeKey, returned verbatim
    stored_at    REAL NOT NULL,
    PRIMARY KEY (device_uuid, position)
);
CREATE TABLE config (
    device_uuid       TEXT NOT NULL REFERENCES device(uuid) ON DELETE CASCADE,
    version           INTEGER NOT NULL,
    config            BLOB NOT NULL,        -- serialised EdgeDevConfig: hashed and sent as is
    config_hash       TEXT NOT NULL,
    config_timestamp  TEXT NOT NULL,        -- RFC 3339 copy of config_timestamp, for listings
    created_at        REAL NOT NULL,
    PRIMARY KEY (device_uuid, version)
);
-- The project default: what a newly registered device gets as config version 0 (one row).
CREATE TABLE default_config (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    config            BLOB NOT NULL,        -- serialised EdgeDevConfig, without id/timestamp
    set_at            REAL NOT NULL
);
CREATE TABLE report (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device_uuid  TEXT NOT NULL REFERENCES device(uuid) ON DELETE CASCADE,
    kind         TEXT NOT NULL,             -- info, metrics, flowlog, hardwarehealth
    received_at  REAL NOT NULL,
    raw          BLOB NOT NULL,             -- the payload as received
    json         TEXT                       -- protobuf JSON mapping, NULL if kept raw only
);
CREATE INDEX report_by_device ON report(device_uuid, kind, id);
CREATE TABLE log_bundle (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device_uuid  TEXT NOT NULL REFERENCES device(uuid) ON DELETE CASCADE,
    app_uuid     TEXT,                      -- NULL for device logs
    received_at  REAL NOT NULL,
    meta         TEXT NOT NULL              -- JSON from the gzip header
);
CREATE TABLE log_entry (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    bundle_id    INTEGER NOT NULL REFERENCES log_bundle(id) ON DELETE CASCADE,
    device_uuid  TEXT NOT NULL REFERENCES device(uuid) ON DELETE CASCADE,
    app_uuid     TEXT,
    received_at  REAL NOT NULL,
    entry        TEXT NOT NULL              -- one LogEntry JSON object as sent
);
CREATE INDEX log_entry_by_device ON log_entry(device_uuid, app_uuid, id);
"""

# Version 2: measured boot.  The PCR policy per device (admin-owned) and the PCRs its last
# verified quote reported (device-owned).  A device without a pcr_policy row has the default
# PCR set and no golden values yet (trust on first use).
_SCHEMA_V2 = """
CREATE TABLE pcr_policy (
    device_uuid    TEXT PRIMARY KEY REFERENCES device(uuid) ON DELETE CASCADE,
    pcr_indexes    TEXT,                  -- comma-separated PCRs checked; NULL = the default set
    golden         TEXT,                  -- JSON object index to hex SHA-256; NULL = learn next
    golden_log     BLOB,                  -- event log that came with the golden values
    golden_source  TEXT,                  -- first use, or admin
    golden_at      REAL
);
CREATE TABLE pcr_report (
    device_uuid    TEXT PRIMARY KEY REFERENCES device(uuid) ON DELETE CASCADE,
    pcrs           TEXT NOT NULL,         -- JSON object index to hex SHA-256, as reported
    quoted         TEXT NOT NULL,         -- comma-separated PCRs the signed digest covers
    event_log      BLOB,                  -- inflated tpm_binary_event_log, NULL if none
    versions       TEXT NOT NULL,         -- JSON list of [type, version]
    reported_at    REAL NOT NULL,
    mismatched     TEXT NOT NULL,         -- comma-separated PCRs differing from golden
    detail         TEXT NOT NULL          -- events that touched them
);
"""

# Version 3: the last reported state of each app, network instance, volume and content tree of a
# device (from its per-object info messages); a deleted object's row is removed.
_SCHEMA_V3 = """
CREATE TABLE object_status (
    device_uuid    TEXT NOT NULL REFERENCES device(uuid) ON DELETE CASCADE,
    kind           TEXT NOT NULL,         -- app, networkinstance, volume, contenttree
    object_id      TEXT NOT NULL,         -- canonical UUID
    name           TEXT NOT NULL,
    state          TEXT NOT NULL,         -- the state enum's name (RUNNING, ONLINE, ERROR ...)
    errors         TEXT NOT NULL,         -- JSON list of [description, time or null, severity]
    reported_at    REAL,                  -- the message's atTimeStamp
    received_at    REAL NOT NULL,
    PRIMARY KEY (device_uuid, kind, object_id)
);
"""

# Version 4: zero-touch K3s clusters (controller/clusters.py).  Operator tags on devices; clusters
# with their selector, sizes and token; members (a device is in at most one cluster: the UNIQUE
# on device_uuid); each cluster's event history.  A removed device leaves its tags and its
# membership (the next composition replaces it).
_SCHEMA_V4 = """
CREATE TABLE device_tag (
    device_uuid    TEXT NOT NULL REFERENCES device(uuid) ON DELETE CASCADE,
    key            TEXT NOT NULL,
    value          TEXT NOT NULL,
    PRIMARY KEY (device_uuid, key)
);
CREATE INDEX device_tag_by_pair ON device_tag(key, value);
CREATE TABLE cluster (
    id             TEXT PRIMARY KEY,      -- UUID, EdgeNodeCluster.cluster_id
    name           TEXT NOT NULL UNIQUE,
    select_key     TEXT NOT NULL,         -- members are the devices tagged select_key=select_value
    select_value   TEXT NOT NULL,
    servers_min    INTEGER NOT NULL,
    servers_max    INTEGER NOT NULL,
    agents_min     INTEGER NOT NULL,
    agents_max     INTEGER NOT NULL,
    network_tags   TEXT NOT NULL,         -- JSON list of port labels: the cluster interface first
    manifest_url   TEXT NOT NULL,
    k3s_image      TEXT NOT NULL,         -- as the operator gave it ('' = no K3s VM)
    k3s_objects    BLOB,                  -- EdgeDevConfig with the content tree and datastores
    vm_memory_mib  INTEGER NOT NULL,
    vm_vcpus       INTEGER NOT NULL,
    net_index      INTEGER NOT NULL UNIQUE, -- picks the cluster's address ranges
    lost_after     REAL NOT NULL,
    token          TEXT NOT NULL,         -- the K3s join token: a secret, never printed
    active         INTEGER NOT NULL,
    state          TEXT NOT NULL,
    note           TEXT NOT NULL,
    created_at     REAL NOT NULL,
    changed_at     REAL NOT NULL
);
CREATE TABLE cluster_member (
    cluster_id     TEXT NOT NULL REFERENCES cluster(id) ON DELETE CASCADE,
    device_uuid    TEXT NOT NULL UNIQUE REFERENCES device(uuid) ON DELETE CASCADE,
    role           TEXT NOT NULL,         -- init, server, agent
    slot           INTEGER NOT NULL,      -- picks the member's addresses
    joined_at      REAL NOT NULL,
    added          TEXT NOT NULL,         -- JSON: shared objects the controller added to its config
    config_error   TEXT NOT NULL,         -- why its config could not be written ('' = none)
    PRIMARY KEY (cluster_id, device_uuid),
    UNIQUE (cluster_id, slot)
);
CREATE TABLE cluster_event (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id     TEXT NOT NULL REFERENCES cluster(id) ON DELETE CASCADE,
    at             REAL NOT NULL,
    text           TEXT NOT NULL,
    reason         TEXT NOT NULL
);
CREATE INDEX cluster_event_by_cluster ON cluster_event(cluster_id, id);
"""

MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer controller; refuse rather than corrupt it."""


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path`` and bring its schema up to date.

    The connection is in autocommit mode: single statements commit on their own, and groups of
    statements use :func:`transaction`.  Raises SchemaTooNew and sqlite3.Error.
    """
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    path.chmod(0o600)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _migrate(conn: sqlite3.Connection) -> None:
    with transaction(conn):
        # Read inside the write lock so two processes opening a fresh file do not both migrate.
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database schema version {current} is newer than this controller "
                f"({SCHEMA_VERSION})"
            )
        for version in range(current, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")


def _statements(script: str) -> list[str]:
    """Split a migration into statements; executescript() would COMMIT our transaction."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
