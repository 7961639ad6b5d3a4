# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures for the unit tests: keys and signers are made once per session (RSA is slow)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.wire import pki
from agent.wire.envelope import SoftwareSigner
from tests.loopwatch import loop_watch, pytest_runtest_call

__all__ = ["loop_watch", "pytest_runtest_call"]  # the event-loop stall watchdog (fixture, hook)


@pytest.fixture(scope="session")
def device_signer() -> SoftwareSigner:
    """A P-256 device key with a self-signed certificate, as the agent makes on first boot."""
    key = ec.generate_private_key(ec.SECP256R1())
    return SoftwareSigner(key, pki.make_certificate(key, "device-under-test"))


@pytest.fixture(scope="session")
def rsa_signer() -> SoftwareSigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SoftwareSigner(key, pki.make_certificate(key, "rsa-controller-signing"))
