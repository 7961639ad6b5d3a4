# SPDX-License-Identifier: Apache-2.0
"""Hardening: a kill at the wrong moment of first boot must not brick the node.

The software identity is made in one step (both files or neither): a real ``kill -9`` of a
process making it, at every file-system step, leaves a node that starts.  A half identity left by
an older agent (key without certificate, or the reverse) of a node that never registered is made
again with a log line; one of a node that did (a UUID, or the registration record written before
the first request that shows the certificate) is still refused.  The TPM identity follows the
same rule for its device certificate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.link import identity
from agent.link.identity import IdentityError, load_or_create_device_signer, store_uuid
from agent.settings import NodePaths
from agent.wire import pki

ROOT = Path(__file__).resolve().parents[2]
UUID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


@pytest.fixture
def paths(tmp_path: Path) -> NodePaths:
    return NodePaths.from_root(tmp_path / "node")


def key_only(paths: NodePaths) -> None:
    """What an older agent left when killed between its two writes: the key, no certificate."""
    paths.device_key.parent.mkdir(parents=True, exist_ok=True)
    paths.device_key.write_bytes(pki.key_pem(pki.new_ec_key()))


def cert_only(paths: NodePaths) -> None:
    key = pki.new_ec_key()
    paths.device_cert.parent.mkdir(parents=True, exist_ok=True)
    paths.device_cert.write_bytes(pki.cert_pem(pki.make_certificate(key, "eve-agent device")))


def assert_whole(paths: NodePaths) -> None:
    key = pki.load_key(paths.device_key.read_bytes())
    cert = pki.load_cert(paths.device_cert.read_bytes())
    assert cert.public_key() == key.public_key()
    assert sorted(p.name for p in paths.device_cert.parent.iterdir()) == [
        "device.cert.pem",
        "device.key.pem",
    ]


@pytest.mark.parametrize("half", [key_only, cert_only])
def test_a_half_identity_that_never_registered_is_made_again(
    paths: NodePaths, half: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: IdentityError for good ("refusing to make a new identity over a half-present
    one"), though the device was never shown to a controller."""
    assert callable(half)
    half(paths)
    signer = load_or_create_device_signer(paths)
    assert_whole(paths)
    assert pki.load_cert(paths.device_cert.read_bytes()) == signer.certificate
    assert "half-made device identity" in caplog.text and "never registered" in caplog.text
    assert load_or_create_device_signer(paths).certificate == signer.certificate  # stable


@pytest.mark.parametrize("half", [key_only, cert_only])
def test_a_half_identity_of_a_node_with_a_uuid_is_refused(paths: NodePaths, half: object) -> None:
    assert callable(half)
    half(paths)
    store_uuid(paths, UUID)
    with pytest.raises(IdentityError, match="refusing to make a new identity") as info:
        load_or_create_device_signer(paths)
    assert "device UUID" in str(info.value)


def test_a_half_identity_of_a_node_that_started_registering_is_refused(
    paths: NodePaths,
) -> None:
    signer = load_or_create_device_signer(paths)
    identity.record_registration(paths, signer.certificate)  # about to show it
    paths.device_cert.unlink()  # then the certificate is lost
    with pytest.raises(IdentityError, match="started registering"):
        load_or_create_device_signer(paths)


@pytest.mark.parametrize("name", ["device.key.pem", "device.cert.pem"])
def test_an_unreadable_identity_file_is_named(paths: NodePaths, name: str) -> None:
    """The refusal names the file the operator has to look at."""
    load_or_create_device_signer(paths)
    (paths.device_cert.parent / name).write_bytes(b"garbage")
    with pytest.raises(IdentityError, match=rf"{name} unreadable"):
        load_or_create_device_signer(paths)


def test_a_damaged_certificate_that_still_parses_is_refused(paths: NodePaths) -> None:
    """One byte of the signature changed: the certificate loads, its key is the device key's,
    but it is not the certificate the controller registered."""
    load_or_create_device_signer(paths)
    der = bytearray(pki.load_cert(paths.device_cert.read_bytes()).public_bytes(Encoding.DER))
    der[-3] ^= 0x01  # inside the ECDSA signature's last integer
    paths.device_cert.write_bytes(pki.cert_pem(x509.load_der_x509_certificate(bytes(der))))
    with pytest.raises(IdentityError, match=r"device.cert.pem is damaged"):
        load_or_create_device_signer(paths)


def test_a_certificate_of_another_key_is_refused(paths: NodePaths) -> None:
    load_or_create_device_signer(paths)
    cert_only(paths)  # a whole certificate, of another key
    with pytest.raises(IdentityError, match=r"device.cert.pem is damaged"):
        load_or_create_device_signer(paths)


def test_the_registration_record_is_idempotent(paths: NodePaths) -> None:
    signer = load_or_create_device_signer(paths)
    assert identity.registration_evidence(paths) is None
    identity.record_registration(paths, signer.certificate)
    first = identity.registration_record(paths).read_bytes()
    identity.record_registration(paths, signer.certificate)
    assert identity.registration_record(paths).read_bytes() == first
    assert identity.registration_evidence(paths) is not None


# ---------------------------------------------------------------- a real kill -9

_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from agent.link import identity
    from agent.settings import NodePaths

    kill_at = int(sys.argv[1])
    steps = [0]
    real_replace, real_fsync, real_rmdir = os.replace, os.fsync, os.rmdir

    def step(real):
        def wrapped(*args, **kwargs):
            steps[0] += 1
            if steps[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapped

    os.replace, os.fsync, os.rmdir = step(real_replace), step(real_fsync), step(real_rmdir)
    identity.load_or_create_device_signer(NodePaths.from_root(Path(sys.argv[2])))
    print("steps", steps[0])
    """
)


def _make_identity(root: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _KILLER.format(root=str(ROOT)), str(kill_at), str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_kill_at_any_step_of_first_boot_leaves_a_node_that_starts(tmp_path: Path) -> None:
    """Every fsync, rename and rmdir of the identity creation is a kill point; after each
    ``kill -9`` the next start has a whole identity (the one made, or a new one)."""
    done = _make_identity(tmp_path / "count", 0)
    assert done.returncode == 0, done.stderr
    assert "interrupted" not in done.stderr  # an uninterrupted creation says nothing of the kind
    total = int(done.stdout.split()[-1])
    assert total >= 6  # two atomic writes, the commit, the moves, the cleanup
    for kill_at in range(1, total + 1):
        root = tmp_path / f"kill-{kill_at}"
        killed = _make_identity(root, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        paths = NodePaths.from_root(root)
        before = paths.device_key.read_bytes() if paths.device_key.exists() else None
        signer = load_or_create_device_signer(paths)  # the next start: never refused
        assert_whole(paths)
        if before is not None and paths.device_cert.exists():
            # Once the key is in place the commit has happened: the same identity is kept.
            assert pki.key_pem(pki.load_key(before)) == paths.device_key.read_bytes()
        assert signer.certificate == pki.load_cert(paths.device_cert.read_bytes())


def test_an_interrupted_staging_directory_is_rolled_back(
    paths: NodePaths, caplog: pytest.LogCaptureFixture
) -> None:
    staging = paths.device_cert.parent / ".device-identity.new"
    staging.mkdir(parents=True)
    (staging / "key").write_bytes(pki.key_pem(pki.new_ec_key()))
    load_or_create_device_signer(paths)
    assert not staging.exists()
    assert_whole(paths)
    assert "interrupted before its commit" in caplog.text


def test_a_committed_identity_is_rolled_forward(paths: NodePaths) -> None:
    key = pki.new_ec_key()
    cert = pki.make_certificate(key, "eve-agent device")
    commit = paths.device_cert.parent / ".device-identity.commit"
    commit.mkdir(parents=True)
    (commit / "cert").write_bytes(pki.cert_pem(cert))
    paths.device_key.write_bytes(pki.key_pem(key))  # the key was moved already
    signer = load_or_create_device_signer(paths)
    assert signer.certificate == cert
    assert not commit.exists()
    assert_whole(paths)


# ---------------------------------------------------------------- onboarding records first


async def test_onboarding_records_the_registration_before_sending_it(tmp_path: Path) -> None:
    import asyncio

    from agent.link.checkpoint import CheckpointStore
    from agent.link.controllercerts import ControllerCertStore
    from agent.link.onboarding import onboard
    from agent.util.timing import Backoff
    from tests.unit.link_harness import live_controller

    paths = NodePaths.from_root(tmp_path / "node")
    device = load_or_create_device_signer(paths)
    async with live_controller(tmp_path) as ctl:
        client = ctl.client()
        certs = ControllerCertStore(CheckpointStore(tmp_path / "cp", "certs"), ctl.pki.root_pem)
        seen_at_record: list[list[str]] = []

        def record() -> None:
            seen_at_record.append([s.action for s in ctl.served])
            identity.record_registration(paths, device.certificate)

        try:
            result = await asyncio.wait_for(
                onboard(
                    client,
                    device=device,
                    onboard_signer=ctl.pki.onboard,
                    certs=certs,
                    serial="",
                    soft_serial="record-node",
                    stop=asyncio.Event(),
                    backoff=Backoff(initial=0.01, maximum=0.05),
                    record=record,
                ),
                10,
            )
        finally:
            await client.close()
    assert result is not None
    assert seen_at_record == [["certs"]]  # nothing that shows the device certificate yet
    assert identity.registration_evidence(paths) is not None


async def test_onboarding_sends_nothing_while_the_record_cannot_be_written(
    tmp_path: Path,
) -> None:
    import asyncio
    import errno

    from agent.link.checkpoint import CheckpointStore
    from agent.link.controllercerts import ControllerCertStore
    from agent.link.onboarding import onboard
    from agent.util.timing import Backoff
    from tests.unit.link_harness import live_controller, until

    paths = NodePaths.from_root(tmp_path / "node")
    device = load_or_create_device_signer(paths)
    attempts = [0]

    def full_disk() -> None:
        attempts[0] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    async with live_controller(tmp_path) as ctl:
        client = ctl.client()
        certs = ControllerCertStore(CheckpointStore(tmp_path / "cp", "certs"), ctl.pki.root_pem)
        stop = asyncio.Event()
        task = asyncio.create_task(
            onboard(
                client,
                device=device,
                onboard_signer=ctl.pki.onboard,
                certs=certs,
                serial="",
                soft_serial="full-node",
                stop=stop,
                backoff=Backoff(initial=0.01, maximum=0.02),
                record=full_disk,
            )
        )
        try:
            await until(lambda: attempts[0] >= 3, what="three attempts")
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 5) is None
            await client.close()
        assert ctl.count("register") == 0 and ctl.count("uuid") == 0


# ---------------------------------------------------------------- the TPM identity


def test_a_tpm_node_that_registered_keeps_refusing_a_lost_device_certificate(
    paths: NodePaths,
) -> None:
    from agent.drivers.tpm_fake import FakeTpm
    from agent.link.tpmidentity import load_tpm_identity

    state: dict[str, bytes] = {}
    first = load_tpm_identity(paths, FakeTpm(state))
    paths.device_cert.unlink()  # never registered: made again (the same TPM key)
    again = load_tpm_identity(paths, FakeTpm(state))
    assert again.signer.certificate.public_key() == first.signer.certificate.public_key()
    store_uuid(paths, UUID)
    paths.device_cert.unlink()
    with pytest.raises(IdentityError, match="controller knows by the old one"):
        load_tpm_identity(paths, FakeTpm(state))
    assert not os.path.exists(paths.device_cert)
