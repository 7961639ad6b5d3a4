"""controller.db and controller.store: schema versioning, WAL, and the atomic steps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.wire import envelope, pki
from controller import configs, db
from controller.records import NewConfig, OnboardDecision, RegisterOutcome
from controller.store import Store, UnknownDevice


def new_cert() -> tuple[bytes, bytes]:
    key = pki.new_ec_key()
    cert = pki.make_certificate(key, "device")
    return cert.public_bytes(Encoding.PEM), envelope.device_cert_hash(cert)


def register(store: Store, serial: str, cert: tuple[bytes, bytes]) -> tuple[RegisterOutcome, str]:
    outcome, device = store.register_device(
        onboard_sha256="aa",
        serial=serial,
        cert_pem=cert[0],
        cert_sha256=cert[1],
        default_config=configs.default_config,
    )
    return outcome, device.uuid


def test_schema_is_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    Store.open(path).close()  # reopening migrates nothing and fails nothing
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(db.SchemaTooNew):
        Store.open(path)


def test_register_outcomes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "c.db") as store:
        cert_a, cert_b = new_cert(), new_cert()
        outcome, uuid = register(store, "s1", cert_a)
        assert outcome is RegisterOutcome.CREATED
        assert register(store, "s1", cert_a) == (RegisterOutcome.ALREADY_REGISTERED, uuid)
        assert register(store, "s1", cert_b)[0] is RegisterOutcome.SERIAL_CONFLICT
        assert register(store, "s2", cert_a)[0] is RegisterOutcome.CERT_CONFLICT
        assert [c.version for c in store.config_history(uuid)] == [0]
        assert store.device_by_cert_hash(cert_a[1][:16]) == store.device(uuid)
        assert store.device_by_cert_hash(b"x" * 20) is None


def test_onboard_decisions(tmp_path: Path) -> None:
    with Store.open(tmp_path / "c.db") as store:
        assert store.onboard_decision("aa", "s") is OnboardDecision.CERT_NOT_LISTED
        store.add_onboard(
            cert_pem=b"", cert_sha256="aa", subject="x", serials=["s"], any_serial=False
        )
        assert store.onboard_decision("aa", "s") is OnboardDecision.ALLOWED
        assert store.onboard_decision("aa", "t") is OnboardDecision.SERIAL_NOT_ALLOWED
        store.add_onboard(cert_pem=b"", cert_sha256="aa", subject="x", serials=[], any_serial=True)
        assert store.onboard_decision("aa", "t") is OnboardDecision.ALLOWED


def test_config_versions_count_up_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Store.open(path) as server, Store.open(path) as admin:
        _, uuid = register(server, "s1", new_cert())

        def render(version: int) -> NewConfig:
            return configs.default_config(uuid, float(version))

        assert admin.add_config(uuid, render).version == 1
        assert server.add_config(uuid, render).version == 2
        current = server.current_config(uuid)
        assert current is not None and current.version == 2
        with pytest.raises(UnknownDevice):
            admin.add_config("no-such-device", render)


def test_a_failed_render_stores_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path / "c.db") as store:
        _, uuid = register(store, "s1", new_cert())

        def broken(version: int) -> NewConfig:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            store.add_config(uuid, broken)
        assert [c.version for c in store.config_history(uuid)] == [0]


def test_removing_a_device_removes_what_it_sent(tmp_path: Path) -> None:
    with Store.open(tmp_path / "c.db") as store:
        _, uuid = register(store, "s1", new_cert())
        store.add_logs(uuid, None, "{}", ["{}"])
        store.set_storage_keys(uuid, [b"k"])
        assert store.remove_device(uuid)
        assert store.log_count(uuid) == 0
        assert store.storage_keys(uuid) == []
        assert store.config_history(uuid) == []
        assert not store.remove_device(uuid)
