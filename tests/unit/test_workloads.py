"""Content trees, volumes and apps through the engine: real blob and volume stores, a local
HTTPS datastore and registry, the container and hypervisor fakes (the real runtimes are in
tests/integration/test_workloads_real.py)."""

from __future__ import annotations

import asyncio
import copy
import uuid

import pytest

from agent.drivers import download as dl
from agent.drivers.domainxml import parse as parse_domain
from agent.reconcile.node import VAULT_READY
from tests.unit.blob_server import Blob
from tests.unit.workload_env import (
    APP_CT,
    APP_VM,
    TREE_DISK,
    TREE_IMAGE,
    VOL_DATA,
    VOL_DISK,
    VOL_ROOT,
    Env,
    env,
    sha,
)

__all__ = ["env"]


def container(e: Env, app_id: str):  # type: ignore[no-untyped-def]
    name = e.containers.prefix + app_id
    return e.containers.dockerd.containers.get(name)


async def test_vm_and_container_apps_run_side_by_side(env: Env) -> None:
    assert await env.apply()
    phases = env.phases()
    assert phases[("app", APP_VM)] == "RUNNING"
    assert phases[("app", APP_CT)] == "RUNNING"
    assert phases[("contenttree", TREE_DISK)] == "DELIVERED"
    assert phases[("volume", VOL_ROOT)] == "CREATED_VOLUME"

    # The VM: a qcow2 overlay on the verified blob, in the vault, with a cloud-init seed.
    info = await env.hypervisor.state(uuid.UUID(APP_VM))
    assert info.state.active
    dom = env.hypervisor.domains[info.name]
    disks = parse_domain(dom.xml).disks
    assert disks[0].path.parent == env.vault / "volumes"
    assert disks[0].path.name == f"{VOL_DISK}#0.qcow2"

    # The container: the image loaded by config digest, env from the user data, data volume.
    ct = container(env, APP_CT)
    assert ct is not None and ct.running
    assert ("GREETING", "hello world") in ct.env and ("FOO", "bar") in ct.env
    assert ct.memory_bytes == 65536 * 1024
    assert ct.image_id.startswith("sha256:")
    report = {o.id: o for o in env.reconciler.owners()}  # type: ignore[union-attr]
    assert report[APP_CT].boot_time > 0
    assert not env.reconciler.report.item_errors  # type: ignore[union-attr]


async def test_nothing_starts_while_the_vault_is_locked(env: Env) -> None:
    env.vault_open = False
    env.new_reconciler()
    await env.apply()
    phases = env.phases()
    assert phases[("app", APP_CT)] == "INITIAL"
    assert not env.containers.dockerd.containers
    assert not env.hypervisor.domains
    assert not (env.vault / "downloads").exists()
    pending = {o.id: o.pending for o in env.reconciler.owners()}  # type: ignore[union-attr]
    assert any("vault locked" in p for p in pending[TREE_IMAGE])

    env.vault_open = True
    env.reconciler.set_condition(VAULT_READY, None)  # type: ignore[union-attr]
    await env.reconciler.engine.settle(20)  # type: ignore[union-attr]
    assert env.phases()[("app", APP_CT)] == "RUNNING"


async def test_wrong_digest_is_an_error_on_its_tree_and_app_only(env: Env) -> None:
    env.server.blobs["disk.raw"] = Blob(env.disk, wrong=b"not the disk" * 100)
    assert not await env.apply()
    phases = env.phases()
    assert phases[("app", APP_VM)] == "ERROR"
    assert phases[("contenttree", TREE_DISK)] == "ERROR"
    assert phases[("app", APP_CT)] == "RUNNING"
    owners = {o.id: o for o in env.reconciler.owners()}  # type: ignore[union-attr]
    text = " ".join(m for m, _ in owners[APP_VM].errors)
    assert "content tree disk" in text and "SHA-256 mismatch" in text
    assert not env.hypervisor.domains
    stored = {p.name for p in (env.vault / "downloads" / "blobs" / "sha256").iterdir()}
    assert sha(env.disk) not in stored


async def test_deactivate_activate_restart_purge(env: Env) -> None:
    doc = env.document()
    assert await env.apply(doc)
    first = container(env, APP_CT)
    assert first is not None
    data = env.vault / "volumes" / f"{VOL_DATA}#0.dir"
    (data / "state").write_text("kept")

    off = copy.deepcopy(doc)
    env.app(off, APP_CT)["activate"] = False
    env.app(off, APP_VM)["activate"] = False
    assert await env.apply(off)
    assert env.phases()[("app", APP_CT)] == "HALTED"
    assert env.phases()[("app", APP_VM)] == "HALTED"
    assert container(env, APP_CT) is None and not env.hypervisor.domains
    assert (data / "state").read_text() == "kept"  # volumes stay

    assert await env.apply(doc)
    second = container(env, APP_CT)
    assert second is not None and second.running and second.id != first.id
    assert (data / "state").read_text() == "kept"

    restart = copy.deepcopy(doc)
    env.app(restart, APP_CT)["restart"] = {"counter": 1}
    assert await env.apply(restart)
    third = container(env, APP_CT)
    assert third is not None and third.id != second.id
    assert (data / "state").read_text() == "kept"

    purge = copy.deepcopy(restart)
    env.app(purge, APP_CT)["purge"] = {"counter": 1}
    assert await env.apply(purge)
    assert container(env, APP_CT) is not None
    assert not (data / "state").exists()  # a purge makes fresh volumes
    assert env.phases()[("app", APP_CT)] == "RUNNING"


async def test_delete_leaves_nothing_behind(env: Env) -> None:
    assert await env.apply()
    empty = env.document(contentInfo=[], volumes=[], apps=[], datastores=[])
    assert await env.apply(empty)
    assert not env.containers.dockerd.containers
    assert not env.hypervisor.domains
    assert not env.containers.dockerd.image_ids
    assert not [p for p in (env.vault / "volumes").iterdir()]
    records = env.vault / "records"
    assert not [p for p in records.rglob("*.json")]
    blobs = await env.workloads.ws.blobs()  # type: ignore[union-attr]
    assert await blobs.gc(0.0)  # unreferenced: collected (after timer.gc.download)
    assert not blobs.blobs()


async def test_restart_adopts_running_apps(env: Env) -> None:
    assert await env.apply()
    before = container(env, APP_CT)
    domain_before = dict(env.hypervisor.domains)
    env.new_reconciler()
    assert await env.apply()
    after = container(env, APP_CT)
    assert after is not None and before is not None and after.id == before.id
    assert env.hypervisor.domains.keys() == domain_before.keys()
    assert env.phases()[("app", APP_VM)] == "RUNNING"
    assert env.reconciler.engine.started_ops < 8  # type: ignore[union-attr]


async def test_an_app_that_stopped_is_started_again(env: Env) -> None:
    assert await env.apply()
    env.hypervisor.power_off(uuid.UUID(APP_VM))
    ct = container(env, APP_CT)
    assert ct is not None
    ct.running = False
    rec = env.reconciler
    assert rec is not None
    await rec.engine.resync(["container", "domain"])
    assert env.phases()[("app", APP_CT)] == "HALTED"
    await rec.engine.settle(10)
    assert container(env, APP_CT).running
    assert (await env.hypervisor.state(uuid.UUID(APP_VM))).state.active
    assert env.phases()[("app", APP_VM)] == "RUNNING"


async def test_start_delay_and_maintenance_mode(env: Env) -> None:
    doc = env.document()
    env.app(doc, APP_CT)["startDelayInSeconds"] = 1
    rec = env.new_reconciler()
    await rec.apply(env.config(doc), 10)
    assert env.phases()[("app", APP_CT)] == "START_DELAYED"
    assert container(env, APP_CT) is None
    assert env.phases()[("app", APP_VM)] == "RUNNING"
    await asyncio.sleep(1.1)
    await rec.engine.settle(10)
    assert env.phases()[("app", APP_CT)] == "RUNNING"

    doc["maintenanceMode"] = True
    await rec.apply(env.config(doc), 10)
    assert container(env, APP_CT) is None and not env.hypervisor.domains
    assert env.phases()[("app", APP_CT)] == "HALTED"


async def test_bad_user_data_is_an_error_on_that_app(env: Env) -> None:
    doc = env.document()
    import base64

    env.app(doc, APP_CT)["userData"] = base64.b64encode(b"#cloud-config\nruncmd:\n - rm -rf /\n")
    env.app(doc, APP_CT)["userData"] = env.app(doc, APP_CT)["userData"].decode()
    assert not await env.apply(doc)
    owners = {o.id: o for o in env.reconciler.owners()}  # type: ignore[union-attr]
    assert owners[APP_CT].phase == "ERROR"
    assert any("not KEY=VALUE" in m for m, _ in owners[APP_CT].errors)
    assert owners[APP_VM].phase == "RUNNING"


async def test_content_failures_are_errors_of_their_app_while_others_run(env: Env) -> None:
    doc = env.document()
    # A missing image, then a too-large disk: each an error on its own tree and app.
    trees = {t["uuid"]: t for t in doc["contentInfo"]}
    trees[TREE_IMAGE]["sha256"] = "0" * 64
    trees[TREE_DISK]["maxSizeBytes"] = 1024
    assert not await env.apply(doc)
    owners = {o.id: o for o in env.reconciler.owners()}  # type: ignore[union-attr]
    assert owners[APP_CT].phase == "ERROR"
    assert any("content tree image" in m or "manifest" in m for m, _ in owners[APP_CT].errors)
    assert owners[APP_VM].phase == "ERROR"
    assert any("maximum size" in m for m, _ in owners[APP_VM].errors)


async def test_dead_datastore_and_full_disk_fail_only_their_app(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = env.document()
    doc["datastores"][0]["fqdn"] = "https://127.0.0.1:9"  # nothing listens there
    assert not await env.apply(doc)
    owners = {o.id: o for o in env.reconciler.owners()}  # type: ignore[union-attr]
    assert owners[APP_VM].phase == "ERROR"
    assert any("127.0.0.1:9" in m for m, _ in owners[APP_VM].errors)
    assert owners[APP_CT].phase == "RUNNING"

    # A disk too full for the download: a clear temporary error, retried when space returns.
    env.new_reconciler()
    assert env.workloads is not None
    # The disk (128 KiB) fits the file system but not the space left on it.
    monkeypatch.setattr(dl, "_free_space", lambda directory: (50_000, 1 << 40))
    assert not await env.apply(env.document())
    owners = {o.id: o for o in env.reconciler.owners()}  # type: ignore[union-attr]
    assert owners[APP_VM].phase == "ERROR"
    assert any("space" in m for m, _ in owners[APP_VM].errors), owners[APP_VM].errors
    monkeypatch.undo()
    rec = env.reconciler
    assert rec is not None
    for _ in range(100):  # the retry comes after its backoff (about a second)
        await asyncio.sleep(0.1)
        await rec.engine.settle(10)
        if env.phases()[("app", APP_VM)] == "RUNNING":
            break
    assert env.phases()[("app", APP_VM)] == "RUNNING"


async def test_object_info_carries_eve_states_and_facts(env: Env) -> None:
    from agent.link.objectinfo import ObjectDetails, object_info
    from agent.wire.pb.info import info_pb2

    assert await env.apply()
    owners = {o.id: o for o in env.reconciler.owners()}  # type: ignore[union-attr]
    app = owners[APP_CT]
    msg = object_info("dev", "app", APP_CT, app.state, name=app.name,
                      details=ObjectDetails.of(app))  # fmt: skip
    assert msg.ainfo.state == info_pb2.RUNNING
    assert msg.ainfo.appVersion == "1"
    assert list(msg.ainfo.volumeRefs) == [VOL_ROOT, VOL_DATA]
    assert msg.ainfo.bootTime.seconds > 0
    tree = owners[TREE_DISK]
    msg = object_info("dev", "contenttree", TREE_DISK, tree.state, details=ObjectDetails.of(tree))
    assert msg.cinfo.state == info_pb2.DELIVERED
    assert msg.cinfo.sha256 == sha(env.disk)


async def test_hostile_fields_are_errors_of_their_object(env: Env) -> None:
    doc = env.document()
    doc["datastores"][0]["fqdn"] = "file:///etc"
    env.app(doc, APP_CT)["fixedresources"]["vcpus"] = 100000
    assert not await env.apply(doc)
    errors = {(e.kind, e.id): e.message for e in env.reconciler.report.object_errors}  # type: ignore[union-attr]
    assert "not an http(s) address" in errors[("contenttree", TREE_DISK)]
    assert "vcpus 100000" in errors[("app", APP_CT)]
    assert ("app", APP_VM) in errors  # its disk's tree cannot be downloaded
    assert not env.containers.dockerd.containers and not env.hypervisor.domains

    doc = env.document()
    env.app(doc, APP_CT)["volumeRefList"][1]["mountDir"] = "../../etc"
    assert not await env.apply(doc)
    errors = {(e.kind, e.id): e.message for e in env.reconciler.report.object_errors}  # type: ignore[union-attr]
    assert "not an absolute path" in errors[("app", APP_CT)]
    assert env.phases()[("app", APP_VM)] == "RUNNING"


async def test_an_image_dockerd_had_before_is_never_removed(env: Env) -> None:
    from agent.drivers.docker_fake import FakeImage

    config_digest = next(d for d, (body, _) in env.registry.objects.items() if b'"rootfs"' in body)
    env.containers.dockerd.image_ids[config_digest] = FakeImage()  # pulled by someone else
    assert await env.apply()
    assert await env.apply(env.document(contentInfo=[], volumes=[], apps=[], datastores=[]))
    assert config_digest in env.containers.dockerd.image_ids


async def test_an_app_being_deleted_is_halting(env: Env) -> None:
    assert await env.apply()
    rec = env.reconciler
    assert rec is not None
    await rec.accept(env.config(env.document(apps=[])))
    owners = {o.id: o for o in rec.owners()}
    assert owners[APP_CT].phase == "HALTING"
    await rec.engine.settle(10)
    assert APP_CT not in {o.id for o in rec.owners()}
