"""Inputs the parser fuzzing (tests/fuzz, tools/fuzz.py) found to break a parser's contract,
kept as plain tests: each failed before its parser was fixed."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.drivers.dhcpclient import parse_lease
from agent.drivers.kubeapi import KubeConfig, KubeConfigError
from agent.drivers.tpm import DEFAULT_SEAL_PCRS
from agent.link.attestation import AttestationRejected, quote_outcome
from agent.link.deviceops import DeviceOps
from agent.reconcile.portselect import Selection
from agent.reconcile.records import RecordBook
from agent.reconcile.userdata import UserDataError, for_container
from agent.util import bootreason
from agent.vault.keys import SealedKey, SealedKeyError
from agent.vault.manager import VaultManager, VaultPaths
from agent.wire import pki
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.info import info_pb2
from controller.attestation import VerdictCode, verify_quote
from controller.clustermanifest import parse_status
from controller.deviceops import reported_power
from controller.records import DeviceCert, NonceRecord

#: Deeper than the interpreter's recursion limit, and within every parser's size cap.
DEEP_JSON = b"[" * 3000
DEEP_YAML = "[" * 3000


def test_deeply_nested_lease_file_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested"):
        parse_lease(DEEP_JSON, 0.0)


def test_deeply_nested_kubeconfig_is_a_kubeconfig_error() -> None:
    with pytest.raises(KubeConfigError):
        KubeConfig.parse(DEEP_YAML.encode())


def test_deeply_nested_cloud_config_is_a_user_data_error() -> None:
    with pytest.raises(UserDataError, match="nested"):
        for_container("#cloud-config\n" + DEEP_YAML)


def test_deeply_nested_app_custom_status_is_no_status() -> None:
    assert parse_status(DEEP_JSON) is None


def test_quote_answer_with_an_unknown_response_code_is_rejected_not_a_value_error() -> None:
    # Before: ZAttestResponseCode.Name(99) raised ValueError, which the attestation loop does
    # not catch (proto3 enums are open, so any number decodes).
    resp = attest_pb2.ZAttestResponse(respType=attest_pb2.ATTEST_RESP_QUOTE_RESP)
    resp.quoteResp.response = 99  # type: ignore[assignment]
    with pytest.raises(AttestationRejected, match=r"UNKNOWN\(99\)"):
        quote_outcome(resp)


def test_quote_answer_carries_token_and_vault_keys() -> None:
    resp = attest_pb2.ZAttestResponse(respType=attest_pb2.ATTEST_RESP_QUOTE_RESP)
    resp.quoteResp.response = attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
    resp.quoteResp.integrity_token = b"token"
    key = resp.quoteResp.keys.add(key_type=attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK, key=b"k")
    key.policy_pcr_list.pcr_indices.extend([0, 7])
    key.has_policy_pcr_list = True
    outcome = quote_outcome(resp)
    assert (outcome.token, outcome.escrowed_keys, outcome.policy_pcrs) == (b"token", [b"k"], [0, 7])


def test_device_info_with_unknown_state_and_absurd_reboot_time_still_summarises() -> None:
    # Before: ZDeviceState.Name(77) raised ValueError and a reboot time past year 9999 an
    # OSError, so `device show` failed on what one device had sent.
    dinfo = info_pb2.ZInfoDevice(state=77, last_boot_reason=1234)  # type: ignore[arg-type]
    dinfo.lastRebootTime.seconds = 10**15
    reported = reported_power(1.0e9, dinfo)
    assert reported["state"] == "UNKNOWN(77)"
    assert reported["last_boot_reason"] == "UNKNOWN(1234)"
    assert reported["last_reboot_time"] is None


def _cert_der() -> bytes:
    return pki.make_certificate(pki.new_ec_key(), "device").public_bytes(Encoding.DER)


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


P256 = bytes.fromhex("06082a8648ce3d030107")
NO_CURVE = bytes.fromhex("06082a8648ce3d030109")


def test_certificate_of_an_impossible_version_is_a_value_error() -> None:
    # Before: cryptography's InvalidVersion (not a ValueError) came out of pki.load_cert, so
    # /register answered 500 for a pemCert whose version byte was 6.
    der = _cert_der()
    bad = der.replace(bytes.fromhex("a003020102"), bytes.fromhex("a003020106"), 1)
    assert bad != der
    with pytest.raises(ValueError, match="unusable certificate"):
        pki.load_cert(_pem(bad))


def test_certificate_on_an_unknown_curve_is_a_value_error() -> None:
    der = _cert_der()
    bad = der.replace(P256, NO_CURVE, 1)
    assert bad != der
    with pytest.raises(ValueError, match="unusable certificate"):
        pki.load_cert(_pem(bad))


def test_quote_with_an_unusable_attestation_key_certificate_is_a_verdict() -> None:
    # Before: UnsupportedAlgorithm from the AK certificate's public key left verify_quote
    # (/attest answered 500) instead of becoming a NO_CERT_FOUND verdict.
    pem = _pem(_cert_der().replace(P256, NO_CURVE, 1))
    ak_type = certs_pb2.CERT_TYPE_DEVICE_RESTRICTED_SIGNING
    certs = [DeviceCert(ak_type, 0, b"", pem, True, True, b"")]
    now = time.time()
    quote = attest_pb2.ZAttestQuote(attestData=b"a", signature=b"s")
    nonce = NonceRecord(nonce=b"N" * 32, issued_at=now, expires_at=now + 60)
    verdict = verify_quote(certs=certs, nonce=nonce, quote=quote, now=now)
    assert verdict.code is VerdictCode.NO_CERT_FOUND


def test_deeply_nested_sealed_key_record_is_a_sealed_key_error() -> None:
    with pytest.raises(SealedKeyError, match="malformed"):
        SealedKey.from_bytes(DEEP_JSON)


def test_deeply_nested_device_operation_counters_count_as_none(tmp_path: Path) -> None:
    # Before: the RecursionError left DeviceOps.load, which promises an unreadable file counts
    # as none (so the agent could not start on such a file).
    ops = DeviceOps(
        tmp_path,
        cast(Any, None),
        announce=cast(Any, None),
        halt_apps=cast(Any, None),
        stopped=cast(Any, None),
    )
    ops.file.parent.mkdir(parents=True)
    ops.file.write_bytes(b'{"a":' * 3000)
    ops.load()
    assert ops.facts() == DeviceOps(
        tmp_path / "other", cast(Any, None), announce=cast(Any, None),
        halt_apps=cast(Any, None), stopped=cast(Any, None),
    ).facts()  # fmt: skip


def test_deeply_nested_agent_state_files_are_unreadable_not_a_recursion_error(
    tmp_path: Path,
) -> None:
    # Before: RecursionError out of each of these loaders, which promise None, ValueError,
    # a skipped record or the default.
    deep = b'{"a":' * 3000
    boot = tmp_path / "boot.json"
    boot.write_bytes(deep)
    assert bootreason._json(boot) is None
    with pytest.raises(ValueError, match="nested"):
        Selection.from_bytes(deep)
    book = RecordBook(tmp_path / "records")
    (book.root / "apps").mkdir(parents=True)
    (book.root / "apps" / "a1.json").write_bytes(deep)
    (book.root / "apps" / "a2.json").write_bytes(b'{"ok": 1}')
    assert book._load("apps") == {"a2": {"ok": 1}}
    vault = VaultManager(VaultPaths(tmp_path / "persist"), None)
    vault.paths.policy_pcrs.parent.mkdir(parents=True, exist_ok=True)
    vault.paths.policy_pcrs.write_bytes(b"[" * 3000)
    assert vault._policy_pcrs() == DEFAULT_SEAL_PCRS


def test_kubeconfig_whose_server_is_no_url_is_a_kubeconfig_error() -> None:
    # Found by `make fuzz` (the first million-input run): urlsplit's ValueError for an
    # unbalanced "]" left KubeConfig.parse.
    text = (
        "clusters:\n- name: c\n  cluster:\n    server: https://10.1.0.]3]843\n"
        "users:\n- name: u\n  user: {token: t}\n"
        "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n"
    )
    with pytest.raises(KubeConfigError, match="not a URL"):
        KubeConfig.parse(text.encode())


def test_certificate_with_a_bit_string_common_name_is_a_value_error() -> None:
    # Found by a longer fuzzing run of controller.register (1 crash in 2.4 million inputs):
    # cryptography raises TypeError for a name attribute of a type its OID does not allow,
    # so /register answered 500.
    der = _cert_der()
    bad = der.replace(b"\x0c\x06device", b"\x03\x06\x00evice")
    assert bad != der
    with pytest.raises(ValueError, match="unusable certificate"):
        pki.load_cert(_pem(bad))
