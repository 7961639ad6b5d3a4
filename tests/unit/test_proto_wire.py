# SPDX-License-Identifier: Apache-2.0
"""Wire-compatibility pins for the generated EVE API modules (agent/wire/pb).

The byte strings below were worked out by hand from the field numbers and types of
lf-edge/eve-api (tag = field_number << 3 | wire_type; varints little-endian base 128), so a
renumbered or retyped field in proto/ makes these tests fail.
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.auth import auth_pb2
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import (
    appconfig_pb2,
    devcommon_pb2,
    devconfig_pb2,
    edge_node_cluster_pb2,
    netinst_pb2,
    storage_pb2,
)
from agent.wire.pb.evecommon import acipherinfo_pb2, evecommon_pb2
from agent.wire.pb.eveuuid import eveuuid_pb2
from agent.wire.pb.info import info_pb2
from agent.wire.pb.metrics import metrics_pb2
from agent.wire.pb.register import register_pb2


def h(text: str) -> bytes:
    """Hex bytes written with spaces for readability."""
    return bytes.fromhex(text)


def assert_wire(msg: Message, expected: bytes) -> None:
    """msg serializes to exactly ``expected`` and ``expected`` parses back to msg."""
    assert msg.SerializeToString(deterministic=True) == expected
    back = type(msg)()
    back.ParseFromString(expected)
    assert back == msg
    assert len(UnknownFieldSet(back)) == 0


def test_auth_container_field_numbers() -> None:
    msg = auth_pb2.AuthContainer(
        protectedPayload=auth_pb2.AuthBody(payload=b"\x01\x02"),
        algo=evecommon_pb2.HASH_ALGORITHM_SHA256_32BYTES,
        senderCertHash=b"\xaa",
        signatureHash=b"\xbb",
        senderCert=b"C",
        cipherContext=acipherinfo_pb2.CipherContext(contextId="x"),
        cipherData=acipherinfo_pb2.CipherBlock(cipherContextId="x"),
    )
    assert_wire(
        msg,
        h(
            "0a 04 0a 02 01 02"  # 1 protectedPayload { 1 payload }
            " 10 02"  # 2 algo = HASH_ALGORITHM_SHA256_32BYTES
            " 1a 01 aa"  # 3 senderCertHash
            " 22 01 bb"  # 4 signatureHash
            " 2a 01 43"  # 5 senderCert
            " 32 03 0a 01 78"  # 6 cipherContext { 1 contextId }
            " 3a 03 0a 01 78"  # 7 cipherData { 1 cipherContextId }
        ),
    )
    assert evecommon_pb2.HASH_ALGORITHM_SHA256_16BYTES == 1


def test_cipher_block_and_encryption_block() -> None:
    block = acipherinfo_pb2.CipherBlock(
        cipherContextId="c", initialValue=b"\x01", cipherData=b"\x02", clearTextSha256=b"\x03"
    )
    assert_wire(block, h("0a 01 63 12 01 01 1a 01 02 22 01 03"))
    plain = acipherinfo_pb2.EncryptionBlock(dsPassword="p", cluster_token="t")
    assert_wire(plain, h("12 01 70 42 01 74"))  # 2 dsPassword, 8 cluster_token


def test_controller_certs() -> None:
    msg = certs_pb2.ZControllerCert(
        certs=[
            certs_pb2.ZCert(
                hashAlgo=evecommon_pb2.HASH_ALGORITHM_SHA256_16BYTES,
                certHash=b"\x03",
                type=certs_pb2.CERT_TYPE_CONTROLLER_ECDH_EXCHANGE,
                cert=b"P",
                attributes=certs_pb2.ZCertAttr(is_mutable=True, is_tpm=True),
                meta_data_items=[
                    certs_pb2.ZCertMetaData(
                        type=certs_pb2.Z_CERT_META_DATA_TYPE_TPM2_PUBLIC, meta_data=b"m"
                    )
                ],
            )
        ]
    )
    zcert = "08 01 12 01 03 18 03 22 01 50 2a 04 08 01 10 01 32 05 08 01 12 01 6d"
    assert_wire(msg, h("0a 17 " + zcert))
    assert certs_pb2.CERT_TYPE_DEVICE_ONBOARDING == 10
    assert certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE == 13


def test_register_and_uuid() -> None:
    reg = register_pb2.ZRegisterMsg(pemCert=b"Q", serial="s", softSerial="t")
    assert_wire(reg, h("12 01 51 1a 01 73 22 01 74"))
    assert eveuuid_pb2.UuidRequest().SerializeToString() == b""
    resp = eveuuid_pb2.UuidResponse(uuid="u", manufacturer="m", product_name="p")
    assert_wire(resp, h("0a 01 75 12 01 6d 1a 01 70"))


def test_config_request_and_response() -> None:
    req = devconfig_pb2.ConfigRequest(configHash="h", integrity_token=b"\x01")
    assert_wire(req, h("0a 01 68 12 01 01"))
    resp = devconfig_pb2.ConfigResponse(
        config=devconfig_pb2.EdgeDevConfig(id=devcommon_pb2.UUIDandVersion(uuid="u")),
        configHash="h",
    )
    assert_wire(resp, h("0a 05 0a 03 0a 01 75 12 01 68"))


def test_edge_dev_config_high_field_numbers() -> None:
    cfg = devconfig_pb2.EdgeDevConfig()
    cfg.id.uuid = "u"
    cfg.id.version = "7"
    cfg.maintenance_mode = True
    cfg.controller_epoch = 5
    cfg.config_timestamp.seconds = 1
    cfg.cluster.cluster_name = "c"
    cfg.pnacs.add(logicallabel="e")
    cfg.scep_profiles.add(profile_name="p")
    assert_wire(
        cfg,
        h(
            "0a 06 0a 01 75 12 01 37"  # 1 id { 1 uuid, 2 version }
            " c0 01 01"  # 24 maintenance_mode (tag 192)
            " c8 01 05"  # 25 controller_epoch (tag 200)
            " c2 02 02 08 01"  # 40 config_timestamp { 1 seconds } (tag 322)
            " da 02 03 0a 01 63"  # 43 cluster { 1 cluster_name } (tag 346)
            " 92 03 03 0a 01 65"  # 50 pnacs { 1 logicallabel } (tag 402)
            " 9a 03 03 0a 01 70"  # 51 scep_profiles { 1 profile_name } (tag 410)
        ),
    )


def test_config_sub_messages() -> None:
    # DatastoreConfig.id is field 100 (tag 802), dType is 1.
    ds = storage_pb2.DatastoreConfig(id="d", dType=storage_pb2.DsHttps)
    assert_wire(ds, h("08 02 a2 06 01 64"))
    # Fields newer than the eve-api snapshot, taken from EVE's vendored API.
    cluster = edge_node_cluster_pb2.EdgeNodeCluster(
        master_node_uuids=["m"], enable_native_k8s_orchestration=True
    )
    assert_wire(cluster, h("6a 01 6d 70 01"))
    ni = netinst_pb2.NetworkInstanceConfig(
        instType=netinst_pb2.ZnetInstLocal, forward_lldp=True, cluster_wide=True
    )
    assert_wire(ni, h("20 02 a0 03 01 a8 03 01"))  # 4, 52 (tag 416), 53 (tag 424)
    app = appconfig_pb2.AppInstanceConfig(
        activate=True,
        restart=appconfig_pb2.InstanceOpsCmd(counter=3),
        affinity=appconfig_pb2.AFFINITY_TYPE_REQUIRED,
    )
    assert_wire(app, h("28 01 4a 02 10 03 e8 01 01"))  # 5, 9 { 2 counter }, 29 (tag 232)


def test_attest_request_and_response() -> None:
    req = attest_pb2.ZAttestReq(
        reqType=attest_pb2.ATTEST_REQ_QUOTE,
        quote=attest_pb2.ZAttestQuote(attestData=b"\x01", signature=b"\x02"),
        certs=[
            certs_pb2.ZCert(
                hashAlgo=evecommon_pb2.HASH_ALGORITHM_SHA256_16BYTES,
                certHash=b"\x03",
                type=certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE,
                cert=b"P",
            )
        ],
        storage_keys=attest_pb2.AttestStorageKeys(integrity_token=b"\x04"),
    )
    assert_wire(
        req,
        h(
            "08 03"  # 1 reqType = ATTEST_REQ_QUOTE
            " 12 06 0a 01 01 12 01 02"  # 2 quote { 1 attestData, 2 signature }
            " 1a 0a 08 01 12 01 03 18 0d 22 01 50"  # 3 certs
            " 22 03 0a 01 04"  # 4 storage_keys { 1 integrity_token }
        ),
    )
    resp = attest_pb2.ZAttestResponse(
        respType=attest_pb2.ATTEST_RESP_QUOTE_RESP,
        quoteResp=attest_pb2.ZAttestQuoteResp(
            response=attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS,
            integrity_token=b"t",
            keys=[
                attest_pb2.AttestVolumeKey(key_type=attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK, key=b"k")
            ],
        ),
    )
    assert_wire(resp, h("08 03 1a 0c 08 01 12 01 74 1a 05 08 01 12 01 6b"))
    nonce = attest_pb2.ZAttestResponse(
        respType=attest_pb2.ATTEST_RESP_NONCE, nonce=attest_pb2.ZAttestNonceResp(nonce=b"n")
    )
    assert_wire(nonce, h("08 02 12 03 0a 01 6e"))
    key_data = attest_pb2.AttestVolumeKeyData(
        encrypted_key=b"e", digest_sha256=b"d", version=attest_pb2.ATTEST_VOLUME_KEY_VERSION_V1
    )
    assert_wire(key_data, h("0a 01 65 12 01 64 28 01"))
    assert attest_pb2.Z_ATTEST_REQ_TYPE_STORE_KEYS == 4


def test_info_msg_oneof_and_storage() -> None:
    msg = info_pb2.ZInfoMsg(ztype=info_pb2.ZiDevice, devId="d")
    msg.dinfo.storageList.add(partitionLabel="P", partitionUuid="U")
    msg.atTimeStamp.seconds = 2
    assert msg.WhichOneof("InfoContent") == "dinfo"
    # 1 ztype, 2 devId, 3 dinfo { 17 storageList { 5 partitionLabel, 7 partitionUuid } },
    # 6 atTimeStamp { 1 seconds }
    assert_wire(msg, h("08 01 12 01 64 1a 09 8a 01 06 2a 01 50 3a 01 55 32 02 08 02"))
    app = info_pb2.ZInfoMsg(ztype=info_pb2.ZiApp)
    app.ainfo.AppID = "a"
    app.ainfo.state = info_pb2.RUNNING
    assert_wire(app, h("08 03 2a 05 0a 01 61 78 07"))  # 5 ainfo { 1 AppID, 15 state }
    assert info_pb2.ZiNetworkInstance == 6
    assert info_pb2.ZInfoMsg.DESCRIPTOR.fields_by_name["niinfo"].number == 12
    assert info_pb2.ZInfoMsg.DESCRIPTOR.fields_by_name["vinfo"].number == 13


def test_metric_msg() -> None:
    msg = metrics_pb2.ZMetricMsg(devID="d")
    msg.dm.deviceMemory.memoryMB = 4
    msg.am.add(AppID="a")
    assert_wire(msg, h("0a 01 64 22 05 8a 01 02 08 04 2a 03 0a 01 61"))  # 1, 4 {17 {1}}, 5 {1}


def test_unknown_fields_survive_round_trip() -> None:
    # Field 99 is not defined in EdgeDevConfig; a parse/serialize cycle must keep it.
    data = h("0a 03 0a 01 75 9a 06 01 7a")
    cfg = devconfig_pb2.EdgeDevConfig()
    cfg.ParseFromString(data)
    assert cfg.id.uuid == "u"
    unknown = UnknownFieldSet(cfg)
    assert len(unknown) == 1
    assert unknown[0].field_number == 99
    assert cfg.SerializeToString() == data


CONFIG_JSON = {
    "id": {"uuid": "8f1c6a3e-0000-4000-8000-000000000001", "version": "12"},
    "configTimestamp": "2026-01-02T03:04:05Z",
    "controllerEpoch": "3",
    "configItems": [{"key": "timer.config.interval", "value": "60"}],
    "datastores": [{"id": "ds-1", "dType": "DsHttps", "fqdn": "https://example.net"}],
    "contentInfo": [{"uuid": "ct-1", "dsIdsList": ["ds-1"], "iformat": "QCOW2"}],
    "volumes": [
        {
            "uuid": "vol-1",
            "origin": {"type": "VCOT_DOWNLOAD", "downloadContentTreeID": "ct-1"},
            "maxsizebytes": "1073741824",
        }
    ],
    "networkInstances": [
        {
            "uuidandversion": {"uuid": "ni-1", "version": "1"},
            "instType": "ZnetInstLocal",
            "activate": True,
            "port": {"type": "PhyIoNetEth", "name": "uplink"},
            "ip": {"dhcp": "DHCPNone", "subnet": "10.1.0.0/24", "dns": ["10.1.0.1"]},
            "clusterWide": True,
        }
    ],
    "apps": [
        {
            "uuidandversion": {"uuid": "app-1", "version": "1"},
            "displayname": "web",
            "activate": True,
            "fixedresources": {"memory": 262144, "vcpus": 1, "virtualizationMode": "HVM"},
            "volumeRefList": [{"uuid": "vol-1", "generationCount": "2"}],
            "interfaces": [
                {
                    "name": "eth0",
                    "networkId": "ni-1",
                    "acls": [
                        {
                            "matches": [{"type": "protocol", "value": "tcp"}],
                            "actions": [{"portmap": True, "appPort": 80}],
                            "id": 1,
                        }
                    ],
                }
            ],
        }
    ],
    "cluster": {"clusterId": "c-1", "masterNodeUuids": ["n-1"]},
}


def test_edge_dev_config_json_round_trip() -> None:
    cfg = devconfig_pb2.EdgeDevConfig()
    json_format.Parse(json.dumps(CONFIG_JSON), cfg)
    assert cfg.config_timestamp.seconds == 1767323045
    assert cfg.controller_epoch == 3
    assert cfg.datastores[0].dType == storage_pb2.DsHttps
    assert cfg.volumes[0].origin.downloadContentTreeID == "ct-1"
    ni = cfg.networkInstances[0]
    assert ni.instType == netinst_pb2.ZnetInstLocal
    assert ni.cluster_wide
    assert ni.ip.subnet == "10.1.0.0/24"
    ace = cfg.apps[0].interfaces[0].acls[0]
    assert ace.actions[0].appPort == 80
    assert ace.matches[0].value == "tcp"
    assert list(cfg.cluster.master_node_uuids) == ["n-1"]
    # Binary round trip, then back to the very same JSON document.
    again = devconfig_pb2.EdgeDevConfig.FromString(cfg.SerializeToString())
    assert again == cfg
    assert json_format.MessageToDict(again) == CONFIG_JSON


def test_json_rejects_unknown_field_names() -> None:
    with pytest.raises(json_format.ParseError):
        json_format.Parse('{"config_timestamp_typo": 1}', devconfig_pb2.EdgeDevConfig())
