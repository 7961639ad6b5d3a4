"""POST /id/{uuid}/attest: certs, single-use nonces, empty quotes, the verifier, key escrow."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from controller.attestation import Verdict, VerdictCode, quote_is_empty
from controller.records import AttestState, DeviceCert, NonceRecord
from tests.unit.test_controller_harness import FakeDevice, Harness, controller_harness

SUCCESS = attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
NONCE_MISMATCH = attest_pb2.Z_ATTEST_RESPONSE_CODE_NONCE_MISMATCH
QUOTE_FAILED = attest_pb2.Z_ATTEST_RESPONSE_CODE_QUOTE_FAILED


def tpm_quote(nonce: bytes = b"n") -> attest_pb2.ZAttestQuote:
    quote = attest_pb2.ZAttestQuote(attestData=b"TPMS_ATTEST" + nonce, signature=b"sig")
    quote.pcr_values.add(index=0, hash_algo=attest_pb2.TPM_HASH_ALGO_SHA256, value=b"\x00" * 32)
    return quote


@pytest.fixture
async def ctl(tmp_path: Path) -> AsyncIterator[Harness]:
    async with controller_harness(tmp_path) as harness:
        yield harness


@pytest.fixture
async def device(ctl: Harness) -> FakeDevice:
    return await ctl.onboarded()


async def test_empty_quote_gives_a_token_and_records_the_state(
    ctl: Harness, device: FakeDevice
) -> None:
    nonce = await device.nonce()
    assert len(nonce) == 32
    assert ctl.store.require_device(device.uuid).attest_state is AttestState.NONCE_ISSUED
    result = await device.quote()
    assert result.response == SUCCESS
    assert result.integrity_token
    assert not result.keys
    stored = ctl.store.require_device(device.uuid)
    assert stored.attest_state is AttestState.ATTESTED_NO_TPM
    assert stored.integrity_token == result.integrity_token

    # Every successful attestation issues a new token.
    first = device.token
    await device.attest_without_tpm()
    assert device.token != first


async def test_nonce_is_single_use(ctl: Harness, device: FakeDevice) -> None:
    assert (await device.quote()).response == NONCE_MISMATCH  # none issued yet
    await device.nonce()
    assert (await device.quote()).response == SUCCESS
    token = device.token
    again = await device.quote()
    assert again.response == NONCE_MISMATCH
    assert not again.integrity_token
    stored = ctl.store.require_device(device.uuid)
    assert stored.attest_state is AttestState.FAILED
    assert "single use" in stored.attest_reason
    assert stored.integrity_token is None  # the failure revoked the token
    assert token


async def test_nonce_expires(ctl: Harness, device: FakeDevice) -> None:
    await device.nonce()
    ctl.clock.now += 301
    result = await device.quote()
    assert result.response == NONCE_MISMATCH
    assert ctl.store.require_device(device.uuid).attest_reason == "nonce expired"


async def test_a_new_nonce_replaces_the_old_one(ctl: Harness, device: FakeDevice) -> None:
    await device.nonce()
    await device.nonce()
    assert (await device.quote()).response == SUCCESS
    assert (await device.quote()).response == NONCE_MISMATCH


async def test_device_that_must_have_a_tpm_fails_with_an_empty_quote(
    ctl: Harness, device: FakeDevice
) -> None:
    ctl.store.set_device_policy(device.uuid, allow_no_tpm=False)
    await device.nonce()
    result = await device.quote()
    assert result.response == QUOTE_FAILED
    assert not result.integrity_token
    assert "requires a TPM" in ctl.store.require_device(device.uuid).attest_reason


async def test_real_quote_without_an_attestation_key_certificate(
    ctl: Harness, device: FakeDevice
) -> None:
    await device.nonce()
    result = await device.quote(tpm_quote())
    assert result.response == attest_pb2.Z_ATTEST_RESPONSE_CODE_NO_CERT_FOUND
    stored = ctl.store.require_device(device.uuid)
    assert stored.attest_state is AttestState.FAILED
    assert "CERT_TYPE_DEVICE_RESTRICTED_SIGNING" in stored.attest_reason


def test_quote_is_empty() -> None:
    assert quote_is_empty(attest_pb2.ZAttestQuote())
    assert not quote_is_empty(tpm_quote())
    assert not quote_is_empty(attest_pb2.ZAttestQuote(signature=b"s"))


async def test_store_keys_needs_the_current_token(ctl: Harness, device: FakeDevice) -> None:
    request = attest_pb2.ZAttestReq(reqType=attest_pb2.Z_ATTEST_REQ_TYPE_STORE_KEYS)
    request.storage_keys.integrity_token = b"guess"
    request.storage_keys.keys.add(key_type=attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK, key=b"K")
    response = await device.attest(request)
    assert response.respType == attest_pb2.Z_ATTEST_RESP_TYPE_STORE_KEYS
    mismatch = attest_pb2.ATTEST_STORAGE_KEYS_RESPONSE_CODE_ITOKEN_MISMATCH
    assert response.storage_keys_resp.response == mismatch
    assert ctl.store.storage_keys(device.uuid) == []

    await device.attest_without_tpm()
    request.storage_keys.integrity_token = b"stale-" + device.token
    assert (await device.attest(request)).storage_keys_resp.response == mismatch

    request.storage_keys.integrity_token = device.token
    response = await device.attest(request)
    success = attest_pb2.ATTEST_STORAGE_KEYS_RESPONSE_CODE_SUCCESS
    assert response.storage_keys_resp.response == success
    assert len(ctl.store.storage_keys(device.uuid)) == 1


class RecordingVerifier:
    """Stands in for the real TPM verifier: records what it was given, returns a set verdict."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.calls: list[tuple[Sequence[DeviceCert], NonceRecord, attest_pb2.ZAttestQuote]] = []

    def __call__(
        self,
        *,
        certs: Sequence[DeviceCert],
        nonce: NonceRecord,
        quote: attest_pb2.ZAttestQuote,
        now: float,
    ) -> Verdict:
        self.calls.append((certs, nonce, quote))
        return self.verdict


async def test_verified_quote_returns_escrowed_keys(tmp_path: Path) -> None:
    verifier = RecordingVerifier(Verdict(VerdictCode.SUCCESS, "quote verified"))
    async with controller_harness(tmp_path, verifier=verifier) as ctl:
        ctl.allow()
        device = ctl.device()
        await device.onboard()
        certs = attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_CERT)
        certs.certs.add(type=certs_pb2.CERT_TYPE_DEVICE_RESTRICTED_SIGNING, cert=b"AK PEM")
        await device.attest(certs)

        nonce = await device.nonce()
        assert (await device.quote(tpm_quote(nonce))).response == SUCCESS
        store_keys = attest_pb2.ZAttestReq(reqType=attest_pb2.Z_ATTEST_REQ_TYPE_STORE_KEYS)
        store_keys.storage_keys.integrity_token = device.token
        store_keys.storage_keys.keys.add(key_type=attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK, key=b"K")
        await device.attest(store_keys)

        await device.nonce()
        result = await device.quote(tpm_quote(nonce))
        assert [(k.key_type, k.key) for k in result.keys] == [
            (attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK, b"K")
        ]
        assert ctl.store.require_device(device.uuid).attest_state is AttestState.ATTESTED
        # The verifier got the stored certs, the nonce it issued and the quote as sent.
        given_certs, given_nonce, given_quote = verifier.calls[0]
        assert [c.pem for c in given_certs] == [b"AK PEM"]
        assert given_nonce.nonce == nonce
        assert given_quote.attestData.endswith(nonce)

        # A TPM-less success never releases keys escrowed under a TPM.
        await device.nonce()
        assert not (await device.quote()).keys


async def test_verifier_failure_reports_differing_pcrs(tmp_path: Path) -> None:
    verdict = Verdict(VerdictCode.QUOTE_FAILED, "PCRs differ", mismatched_pcrs=(4, 7))
    async with controller_harness(tmp_path, verifier=RecordingVerifier(verdict)) as ctl:
        ctl.allow()
        device = ctl.device()
        await device.onboard()
        await device.nonce()
        assert (await device.quote(tpm_quote())).response == QUOTE_FAILED
        reason = ctl.store.require_device(device.uuid).attest_reason
        assert reason == "PCRs differ (PCRs differing: 4, 7)"


async def test_certs_are_replaced_except_immutable_ones(ctl: Harness, device: FakeDevice) -> None:
    def upload(*certs: tuple[int, bytes, bool]) -> attest_pb2.ZAttestReq:
        request = attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_CERT)
        for cert_type, pem, mutable in certs:
            zcert = request.certs.add(type=cert_type, cert=pem)
            zcert.attributes.is_mutable = mutable
        return request

    ecdh = certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE
    ek = certs_pb2.CERT_TYPE_DEVICE_ENDORSEMENT_RSA
    response = await device.attest(upload((ecdh, b"ecdh-1", True), (ek, b"ek-1", False)))
    assert response.respType == attest_pb2.ATTEST_RESP_CERT
    stored = {c.cert_type: c.pem for c in ctl.store.device_certs(device.uuid)}
    assert stored == {ecdh: b"ecdh-1", ek: b"ek-1"}

    response = await device.attest(upload((ecdh, b"ecdh-2", True), (ek, b"ek-2", False)))
    assert response.respType == attest_pb2.ATTEST_RESP_CERT  # answered as usual
    stored = {c.cert_type: c.pem for c in ctl.store.device_certs(device.uuid)}
    assert stored == {ecdh: b"ecdh-2", ek: b"ek-1"}  # the immutable EK stays
    assert "CERT_TYPE_DEVICE_ENDORSEMENT_RSA" in ctl.store.require_device(device.uuid).attest_reason

    # Leaving the immutable cert out does not delete it either.
    await device.attest(upload((ecdh, b"ecdh-3", True)))
    stored = {c.cert_type: c.pem for c in ctl.store.device_certs(device.uuid)}
    assert stored == {ecdh: b"ecdh-3", ek: b"ek-1"}


async def test_unknown_request_type_is_400(ctl: Harness, device: FakeDevice) -> None:
    request = attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_NONE)
    answer = await device.send(f"/id/{device.uuid}/attest", request)
    assert answer.status == 400
