"""POST /id/{uuid}/config: integrity token, 200 then 304 on the echoed hash, new versions."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.wire.pb.config import devconfig_pb2
from controller import configs
from tests.unit.test_controller_harness import T0, FakeDevice, Harness, controller_harness


@pytest.fixture
async def ctl(tmp_path: Path) -> AsyncIterator[Harness]:
    async with controller_harness(tmp_path) as harness:
        yield harness


@pytest.fixture
async def device(ctl: Harness) -> FakeDevice:
    return await ctl.onboarded()


def set_config(ctl: Harness, device: FakeDevice, document: dict[str, object]) -> None:
    config = configs.config_from_document(document)
    ctl.store.add_config(
        device.uuid,
        lambda version: configs.stamp(
            config,
            device_uuid=device.uuid,
            version=version,
            timestamp=configs.timestamp_from_unix(ctl.clock.now),
        ),
    )


async def test_config_needs_the_integrity_token(ctl: Harness, device: FakeDevice) -> None:
    answer, _ = await device.config()
    assert answer.status == 403
    assert answer.body == b"attestation failure: integrity token mismatch"

    await device.attest_without_tpm()
    answer, _ = await device.config(token=b"not-the-token")
    assert answer.status == 403
    answer, response = await device.config()
    assert answer.status == 200
    assert response is not None


async def test_default_config_then_304_then_new_version(ctl: Harness, device: FakeDevice) -> None:
    await device.attest_without_tpm()
    answer, first = await device.config()
    assert answer.status == 200
    assert answer.content_type == "application/x-proto-binary"
    assert first is not None
    # Version 0: only what the controller owns, stamped at registration time.
    assert first.config.id.uuid == device.uuid
    assert first.config.id.version == "0"
    assert first.config.config_timestamp.seconds == int(T0)
    assert not first.config.configItems
    expected = hashlib.sha256(first.config.SerializeToString(deterministic=True)).digest()
    assert first.configHash == base64.urlsafe_b64encode(expected).decode()

    unchanged, body = await device.config(first.configHash)
    assert unchanged.status == 304
    assert unchanged.body == b""
    assert unchanged.content_type is not None
    assert body is None

    ctl.clock.now += 10
    set_config(ctl, device, {"configItems": [{"key": "timer.config.interval", "value": "5"}]})
    answer, second = await device.config(first.configHash)
    assert answer.status == 200
    assert second is not None
    assert second.configHash != first.configHash
    assert second.config.id.version == "1"
    assert second.config.configItems[0].value == "5"
    assert second.config.config_timestamp.seconds == int(T0 + 10)
    assert (await device.config(second.configHash))[0].status == 304


async def test_token_is_not_needed_when_attestation_is_off(
    ctl: Harness, device: FakeDevice
) -> None:
    ctl.store.set_device_policy(device.uuid, require_attestation=False)
    answer, response = await device.config()
    assert answer.status == 200
    assert response is not None and response.config.id.uuid == device.uuid


async def test_a_failed_attestation_revokes_the_token(ctl: Harness, device: FakeDevice) -> None:
    await device.attest_without_tpm()
    assert (await device.config())[0].status == 200
    ctl.store.set_device_policy(device.uuid, allow_no_tpm=False)
    await device.nonce()
    await device.quote()  # empty quote, now refused
    assert (await device.config())[0].status == 403


async def test_path_must_name_the_signing_device(ctl: Harness, device: FakeDevice) -> None:
    await device.attest_without_tpm()
    other = ctl.device("serial-2")
    await other.onboard()
    request = devconfig_pb2.ConfigRequest(integrity_token=device.token)

    answer = await device.send(f"/id/{other.uuid}/config", request)
    assert answer.status == 403
    answer = await device.send("/id/00000000-0000-0000-0000-000000000000/config", request)
    assert answer.status == 404
    answer = await device.send("/id/not-a-uuid/config", request)
    assert answer.status == 404
    # Upper-case UUIDs are the same device.
    answer = await device.send(f"/id/{device.uuid.upper()}/config", request)
    assert answer.status == 200


async def test_project_default_config_seeds_new_devices(ctl: Harness) -> None:
    template = configs.config_from_document({"configItems": [{"key": "a", "value": "b"}]})
    ctl.store.set_default_config(template.SerializeToString())
    ctl.allow()
    device = ctl.device()
    await device.onboard()
    ctl.store.set_device_policy(device.uuid, require_attestation=False)
    _, response = await device.config()
    assert response is not None
    assert response.config.id.uuid == device.uuid
    assert response.config.id.version == "0"
    assert [(i.key, i.value) for i in response.config.configItems] == [("a", "b")]
