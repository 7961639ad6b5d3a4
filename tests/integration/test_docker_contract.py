"""One contract for both container runtimes: FakeContainerRuntime and DockerRuntime on dockerd.

Every test runs twice, against the in-memory fake and against the real driver on
``/run/docker.sock`` with the test image from ``images/container/build.sh`` (built or found once
per session, pulled from the local registry by digest).  Each test gets a node name of its own
(``evetest-<random>``), so its containers carry a prefix and labels nothing else uses; teardown
removes every container with that prefix or node label, also when the test fails.  Without
root, dockerd or the registry the real half fails when services are required (CI, ``make
test``) and skips otherwise; the fake half always runs.

The image load tests pull the test image into a blob store of their own with the agent's
registry client (the fake half makes a small image of its own instead), then load an image
derived from it: the same layers plus one small layer and a label unique to the test, so that
its ID is the test's alone (dockerd shares images between everyone by ID, and skips reading a
layer it already has).  Teardown removes the test's containers, then the images it loaded and
its tag, also when the test fails; the shared test image is never removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.drivers import download as dl
from agent.drivers import oci
from agent.drivers.blobstore import BlobStore
from agent.drivers.containers import (
    APP_LABEL,
    GENERATION_LABEL,
    NODE_LABEL,
    SPEC_LABEL,
    BindMount,
    ContainerRuntime,
    ContainerSpec,
    DockerSettings,
    LocalImage,
    LogLine,
)
from agent.drivers.docker import DockerRuntime
from agent.drivers.docker_fake import FakeContainerRuntime, FakeDockerd
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError
from tests.integration.conftest import service_missing
from tests.integration.images import container_image

ROOT = Path(__file__).resolve().parents[2]
DOCKER_SOCK = "/run/docker.sock"
FAKE_IMAGE = "127.0.0.1:5000/eve-agent/test-busybox@sha256:" + "ab" * 32
UNKNOWN_DIGEST = "sha256:" + "0" * 64
APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


@dataclass
class Env:
    """A runtime under test, the test image's ref, and host-side helpers."""

    kind: str
    image: str
    new_runtime: Callable[[str], ContainerRuntime]
    runtime: ContainerRuntime
    make_foreign: Callable[[str], None]  # an unlabelled container, by full name
    registry: str
    sdk: Any = None  # docker.DockerClient for the real half

    def spec(self, name: str = "app", **kw: Any) -> ContainerSpec:
        kw.setdefault("image", self.image)
        kw.setdefault("app", APP)
        return ContainerSpec(name=name, **kw)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_image() -> str:
    """The test image's ``repo@sha256:...`` from images/build.sh, or the reason there is none
    (starting with "!")."""
    if os.geteuid() == 0 and not os.path.exists(DOCKER_SOCK):
        return f"!no {DOCKER_SOCK} (tools/services.sh start)"
    return container_image()


def _real_env(image: str, node: str) -> Iterator[Env]:
    import docker

    if image.startswith("!"):
        service_missing("dockerd + registry", image[1:])
    try:
        sdk = docker.DockerClient(base_url=f"unix://{DOCKER_SOCK}", version="auto", timeout=30)
        sdk.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable dockerd
        service_missing("dockerd", f"no answer on {DOCKER_SOCK}: {exc}")
    runtimes: list[DockerRuntime] = []

    def new_runtime(name: str) -> DockerRuntime:
        runtime = DockerRuntime(name, DockerSettings(base_url=f"unix://{DOCKER_SOCK}"))
        runtimes.append(runtime)
        return runtime

    def make_foreign(full: str) -> None:
        sdk.containers.create(image, name=full, network_mode="none")

    runtime = new_runtime(node)
    try:
        yield Env("real", image, new_runtime, runtime, make_foreign, "127.0.0.1:5000", sdk)
    finally:
        for container in sdk.containers.list(all=True):
            labels = container.labels or {}
            if container.name.startswith(f"eve-{node}") or labels.get(NODE_LABEL, "").startswith(
                node
            ):
                container.remove(force=True)
        for r in runtimes:
            r._drop_client()
        sdk.close()


@pytest.fixture(params=["fake", "real"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    node = f"evetest-{uuid.uuid4().hex[:8]}"
    if request.param == "real":
        yield from _real_env(request.getfixturevalue("real_image"), node)
        return
    dockerd = FakeDockerd()

    def new_runtime(name: str) -> FakeContainerRuntime:
        runtime = FakeContainerRuntime(name, dockerd)
        runtime.publish(FAKE_IMAGE)
        return runtime

    runtime = new_runtime(node)

    def make_foreign(full: str) -> None:
        runtime.add_foreign(full)

    yield Env("fake", FAKE_IMAGE, new_runtime, runtime, make_foreign, "127.0.0.1:5000")


async def _wait_logs(rt: ContainerRuntime, name: str, text: str) -> list[LogLine]:
    """The container's log once a line reads ``text`` (10 s at most)."""
    lines: list[LogLine] = []
    for _ in range(200):
        lines = await rt.logs(name)
        if any(line.text == text for line in lines):
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {text!r} in the log of {name}: {[x.text for x in lines]}")


# --- images ------------------------------------------------------------------------------------


async def test_pull_by_digest(env: Env) -> None:
    rt = env.runtime
    if env.sdk is not None:  # make the pull a real one when nothing else uses the image
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):
            env.sdk.images.remove(env.image)
    image_id = await rt.pull(env.image)
    assert image_id.startswith("sha256:")
    assert await rt.has_image(env.image)
    assert await rt.pull(env.image) == image_id  # idempotent
    repo = env.image.rpartition("@")[0]
    assert not await rt.has_image(f"{repo}@{UNKNOWN_DIGEST}")


async def test_refs_without_digest_are_refused(env: Env) -> None:
    repo = env.image.rpartition("@")[0]
    bad_refs = (
        repo,
        f"{repo}:latest",
        f"{repo}@sha256:abc",
        f"{repo}@md5:" + "0" * 32,
        "sha256:abc",  # not a whole image ID
    )
    for ref in bad_refs:
        with pytest.raises(PermanentError, match="digest"):
            await env.runtime.pull(ref)
        with pytest.raises(PermanentError, match="digest"):
            await env.runtime.create(env.spec(image=ref))
    assert await env.runtime.list_owned() == []


async def test_pull_of_unknown_manifest_is_permanent(env: Env) -> None:
    repo = env.image.rpartition("@")[0]
    with pytest.raises(PermanentError):
        await env.runtime.pull(f"{repo}@{UNKNOWN_DIGEST}")
    with pytest.raises(PermanentError):
        await env.runtime.pull(f"{env.registry}/eve-agent/no-such-repo@{UNKNOWN_DIGEST}")


async def test_pull_from_unreachable_registry_is_temporary(env: Env) -> None:
    with pytest.raises(TemporaryError):
        await env.runtime.pull(f"127.0.0.1:1/eve-agent/x@{UNKNOWN_DIGEST}")


async def test_create_without_the_image_is_not_found(env: Env) -> None:
    repo = env.image.rpartition("@")[0]
    for image in (f"{repo}@{UNKNOWN_DIGEST}", UNKNOWN_DIGEST):
        with pytest.raises(NotFoundError):
            await env.runtime.create(env.spec(image=image))
    assert not (await env.runtime.inspect("app")).exists


# --- images loaded from the blob store ---------------------------------------------------------


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Blobs:
    """A blob store holding the test image (as the agent's registry client pulled it, or a
    small stand-in for the fake), and the IDs of the images a test loaded, for teardown."""

    store: BlobStore
    base: LocalImage
    node: str
    loaded: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"eve-agent-test/{self.node}:loaded"

    async def derive(self, *, tag: bool = True) -> LocalImage:
        """The base image plus a gzip'd layer with ``/etc/eve-agent-test`` and a label, both
        unique to this call, put into the store: an image ID nobody else has."""
        marker = f"{self.node} {uuid.uuid4().hex}".encode()
        tar = _layer_tar({"etc/eve-agent-test": marker + b"\n"})
        layer = gzip.compress(tar, mtime=0)
        config = json.loads(self.base.config.read_bytes())
        config["rootfs"]["diff_ids"].append(_sha(tar))
        config.setdefault("history", []).append({"created_by": "test_docker_contract"})
        labels = config.setdefault("config", {}).get("Labels") or {}
        config["config"]["Labels"] = {**labels, "org.lfedge.eve-agent.test": marker.decode()}
        body = json.dumps(config).encode()
        layer_path = await self.store.put_bytes(_sha(layer), layer, what="test layer")
        config_path = await self.store.put_bytes(_sha(body), body, what="test config")
        self.loaded.append(_sha(body))
        return LocalImage(
            config_digest=_sha(body),
            config=config_path,
            layers=(*self.base.layers, layer_path),
            tag=self.tag if tag else None,
        )


def local_image(pulled: oci.PulledImage, store: BlobStore) -> LocalImage:
    """The :class:`LocalImage` of an image the registry client pulled into ``store``."""
    return LocalImage(
        config_digest=pulled.config.digest,
        config=store.path(pulled.config.digest),
        layers=tuple(store.path(layer.digest) for layer in pulled.layers),
    )


async def _stand_in_image(store: BlobStore) -> LocalImage:
    """For the fake: a one-layer image with the test image's environment and command."""
    tar = _layer_tar({"etc/os-release": b"ID=test\n"})
    layer = gzip.compress(tar, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh", "-c", "env; echo ready; exec sleep 1000000"],
        },
        "rootfs": {"type": "layers", "diff_ids": [_sha(tar)]},
    }
    body = json.dumps(config).encode()
    return LocalImage(
        config_digest=_sha(body),
        config=await store.put_bytes(_sha(body), body, what="test config"),
        layers=(await store.put_bytes(_sha(layer), layer, what="test layer"),),
    )


def _remove_loaded(env: Env, blobs: Blobs) -> None:
    """Real half: the test's containers first (they hold its images), then the images it
    loaded and its tag; nothing else."""
    import docker.errors

    for container in env.sdk.containers.list(all=True):
        if container.name.startswith(f"eve-{blobs.node}"):
            container.remove(force=True)
    for ref in (*blobs.loaded, blobs.tag):
        with contextlib.suppress(docker.errors.NotFound):
            env.sdk.api.remove_image(ref, force=True)


@pytest.fixture
async def blobs(env: Env, tmp_path: Path) -> AsyncIterator[Blobs]:
    store = BlobStore(tmp_path / "blobs")
    await store.open()
    found: Blobs | None = None
    try:
        if env.sdk is not None:
            ref = oci.ImageRef.parse(env.image)
            async with dl.new_session() as session:
                pulled = await oci.RegistryClient(session, ref.registry).pull(ref, store)
            base = local_image(pulled, store)
        else:
            base = await _stand_in_image(store)
        found = Blobs(store, base, env.runtime.node)
        yield found
    finally:
        if env.sdk is not None and found is not None:
            _remove_loaded(env, found)
        await store.close()


async def _tag_names(env: Env, tag: str, image_id: str) -> bool:
    """Whether ``tag`` names ``image_id`` (real half: asked of dockerd; the fake's table)."""
    if env.sdk is None:
        dockerd: FakeDockerd = env.runtime.dockerd  # type: ignore[attr-defined]
        return dockerd.images.get(tag) == image_id
    import docker.errors

    try:
        data = await asyncio.to_thread(env.sdk.api.inspect_image, tag)
    except docker.errors.NotFound:
        return False
    return bool(data["Id"] == image_id)


async def test_load_image_from_the_blob_store(env: Env, blobs: Blobs, loop_watch: None) -> None:
    rt = env.runtime
    # The image as pulled: its ID is its config's digest (dockerd may have it already).
    assert await rt.load_image(blobs.base) == blobs.base.config_digest
    assert await rt.has_image(blobs.base.config_digest)

    image = await blobs.derive()
    assert not await rt.has_image(image.config_digest)
    image_id = await rt.load_image(image)
    assert image_id == image.config_digest
    assert await rt.has_image(image_id)
    assert await _tag_names(env, blobs.tag, image_id)

    # Loaded again: at once, the files not even looked at.
    gone = blobs.store.root / "gone"
    assert await rt.load_image(dataclasses.replace(image, config=gone, layers=(gone,))) == image_id

    # A container from the image ID, through the usual spec.
    spec = env.spec(
        image=image_id,
        command=("sh", "-c", "cat /etc/eve-agent-test; env; echo ready; exec sleep 1000000"),
    )
    await rt.create(spec)
    state = await rt.inspect("app")
    assert state.image == image_id and state.image_digest == image_id
    await rt.start("app")
    lines = await _wait_logs(rt, "app", "ready")
    if env.sdk is not None:  # the layer the test added is in the container's file system
        assert any(line.text.startswith(blobs.node) for line in lines)
    assert "PATH=/usr/sbin:/usr/bin:/sbin:/bin" in [line.text for line in lines]

    # In use by a running, then a stopped container: refused for now, with dockerd's reason.
    with pytest.raises(TemporaryError, match="conflict"):
        await rt.remove_image(image_id)
    await rt.stop("app", grace=0)
    with pytest.raises(TemporaryError, match="conflict"):
        await rt.remove_image(image_id)
    assert await rt.has_image(image_id)

    await rt.remove("app")
    await rt.remove_image(image_id)
    assert not await rt.has_image(image_id)
    assert not await _tag_names(env, blobs.tag, image_id)
    await rt.remove_image(image_id)  # already gone: success


async def test_load_image_refuses_files_that_do_not_match(env: Env, blobs: Blobs) -> None:
    rt = env.runtime
    image = await blobs.derive()
    ours = image.layers[-1]
    cut = blobs.store.root / "cut-layer"
    cut.write_bytes(ours.read_bytes()[:-100])
    bad_config = blobs.store.root / "bad-config"
    bad_config.write_bytes(image.config.read_bytes() + b" ")
    bad = {
        "swapped layers": dataclasses.replace(image, layers=image.layers[::-1]),
        "cut layer": dataclasses.replace(image, layers=(*image.layers[:-1], cut)),
        "layer missing": dataclasses.replace(
            image, layers=(*image.layers[:-1], cut.with_name("x"))
        ),
        "layers missing": dataclasses.replace(image, layers=image.layers[:-1]),
        "config of another digest": dataclasses.replace(image, config=bad_config),
    }
    for what, local in bad.items():
        with pytest.raises(PermanentError):
            await rt.load_image(local)
            pytest.fail(f"{what}: loaded")
        assert not await rt.has_image(image.config_digest), what
        assert not await _tag_names(env, blobs.tag, image.config_digest), what

    # Nothing of the failures is in the way: the right files load.
    assert await rt.load_image(image) == image.config_digest


async def test_load_image_adds_a_missing_tag(env: Env, blobs: Blobs) -> None:
    """Loaded again under another tag: the files are not read, the tag is added; an image with
    two tags is not removed by ID (it is someone's name too)."""
    rt = env.runtime
    image = await blobs.derive()
    image_id = await rt.load_image(image)
    second = f"eve-agent-test/{blobs.node}:second"
    gone = blobs.store.root / "gone"
    again = dataclasses.replace(image, config=gone, layers=(), tag=second)
    assert await rt.load_image(again) == image_id
    assert await _tag_names(env, blobs.tag, image_id)
    assert await _tag_names(env, second, image_id)
    with pytest.raises(TemporaryError, match="conflict"):
        await rt.remove_image(image_id)
    assert await rt.has_image(image_id)


async def test_image_ids_and_local_images_are_checked(env: Env, blobs: Blobs) -> None:
    rt = env.runtime
    await rt.remove_image(UNKNOWN_DIGEST)  # not there: success
    for image_id in ("busybox", "sha256:abc", env.image):
        with pytest.raises(PermanentError, match="image ID"):
            await rt.remove_image(image_id)
    for local in (
        dataclasses.replace(blobs.base, config_digest="sha256:abc"),
        dataclasses.replace(blobs.base, tag="Not A Tag"),
        dataclasses.replace(blobs.base, tag="repo@" + UNKNOWN_DIGEST),
    ):
        with pytest.raises(PermanentError):
            await rt.load_image(local)
    assert not await rt.has_image(UNKNOWN_DIGEST)


# --- lifecycle ---------------------------------------------------------------------------------


async def test_lifecycle(env: Env, loop_watch: None) -> None:
    rt = env.runtime
    await rt.pull(env.image)
    spec = env.spec(env=(("EVE_GREETING", "hello world"), ("APP_MODE", "test")), generation=3)
    cid = await rt.create(spec)
    assert await rt.create(spec) == cid  # idempotent

    state = await rt.inspect("app")
    assert state.exists and state.owned and not state.running
    assert state.id == cid
    assert state.image == env.image
    assert state.image_digest == env.image.rpartition("@")[2]
    assert state.app == APP and state.generation == 3
    assert state.spec_hash == spec.spec_hash()

    await rt.start("app")
    await rt.start("app")  # already running: nothing to do
    lines = await _wait_logs(rt, "app", "ready")
    texts = [line.text for line in lines]
    assert "EVE_GREETING=hello world" in texts
    assert "APP_MODE=test" in texts
    assert all(line.time.tzinfo is not None for line in lines)
    assert await rt.logs("app", since=lines[-1].time) == []
    assert [x.text for x in await rt.logs("app", tail=1)] == ["ready"]

    state = await rt.inspect("app")
    assert state.running and state.exit_code is None and state.started_at is not None
    assert state.pid is not None and state.pid > 0
    if env.kind == "real":  # the network reconciler moves interfaces into this namespace
        assert await asyncio.to_thread(os.path.exists, f"/proc/{state.pid}/ns/net")
    first_pid = state.pid
    stats = await rt.stats("app")
    assert stats.cpu_ns >= 0 and stats.memory_bytes >= 0

    await rt.stop("app", grace=1)
    await rt.stop("app", grace=1)  # already stopped
    state = await rt.inspect("app")
    assert state.exists and not state.running
    assert state.exit_code == 137  # PID 1 `sleep` ignores SIGTERM: killed after the grace
    assert state.finished_at is not None and state.pid is None

    await rt.start("app")  # a stopped container starts again
    state = await rt.inspect("app")
    assert state.running and state.pid is not None and state.pid != first_pid

    await rt.remove("app")  # force: running is fine
    assert not (await rt.inspect("app")).exists
    await rt.remove("app")  # already gone: success
    assert await rt.list_owned() == []


async def test_operations_on_missing_container(env: Env) -> None:
    rt = env.runtime
    state = await rt.inspect("nothing")
    assert not state.exists and not state.owned
    for op in (rt.start, rt.stop, rt.logs, rt.stats):
        with pytest.raises(NotFoundError):
            await op("nothing")
    await rt.remove("nothing")


async def test_remove_without_force_of_a_running_container_is_temporary(env: Env) -> None:
    rt = env.runtime
    await rt.pull(env.image)
    await rt.create(env.spec())
    await rt.start("app")
    with pytest.raises(TemporaryError):
        await rt.remove("app", force=False)
    assert (await rt.inspect("app")).running
    await rt.stop("app", grace=0)
    await rt.remove("app", force=False)
    assert not (await rt.inspect("app")).exists


async def test_create_refuses_another_spec_under_the_same_name(env: Env) -> None:
    rt = env.runtime
    await rt.pull(env.image)
    await rt.create(env.spec(generation=1))
    with pytest.raises(PermanentError, match="another spec"):
        await rt.create(env.spec(generation=2))
    assert (await rt.inspect("app")).generation == 1


# --- how containers are made -------------------------------------------------------------------


async def test_limits_mounts_network_and_restart_policy(env: Env, tmp_path: Path) -> None:
    rt = env.runtime
    await rt.pull(env.image)
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("from the host\n")
    spec = env.spec(
        memory_bytes=64 * 1024 * 1024,
        nano_cpus=500_000_000,
        mounts=(BindMount(str(data), "/data", read_only=True),),
        command=("sh", "-c", "cat /data/hello.txt; touch /data/x || echo read-only; sleep 30"),
    )
    await rt.create(spec)
    state = await rt.inspect("app")
    assert state.memory_bytes == 64 * 1024 * 1024
    assert state.nano_cpus == 500_000_000
    assert state.network_mode == "none"
    assert state.restart_policy == "no"
    await rt.start("app")
    if env.sdk is not None:
        raw = env.sdk.api.inspect_container(state.id)
        host = raw["HostConfig"]
        assert host["Memory"] == 64 * 1024 * 1024
        assert host["MemorySwap"] == 64 * 1024 * 1024
        assert host["NanoCpus"] == 500_000_000
        assert host["NetworkMode"] == "none"
        assert host["RestartPolicy"]["Name"] == "no"
        assert host["LogConfig"]["Type"] == "json-file"
        assert host["LogConfig"]["Config"]["max-size"]
        assert [(m["Source"], m["Destination"], m["RW"]) for m in raw["Mounts"]] == [
            (str(data), "/data", False)
        ]
        lines = await _wait_logs(rt, "app", "read-only")
        assert "from the host" in [x.text for x in lines]
        assert not (data / "x").exists()
        stats = await rt.stats("app")
        assert stats.memory_limit_bytes == 64 * 1024 * 1024


async def test_invalid_specs_are_permanent(env: Env) -> None:
    rt = env.runtime
    await rt.pull(env.image)
    bad = [
        env.spec(name="bad name"),
        env.spec(name="bad_name"),  # "_" ends the node prefix
        env.spec(app=""),
        env.spec(mounts=(BindMount("relative", "/data"),)),
        env.spec(mounts=(BindMount("/tmp", "/d"), BindMount("/var", "/d"))),
        env.spec(memory_bytes=1024),
        env.spec(nano_cpus=0),
        env.spec(labels=((NODE_LABEL, "other"),)),
        env.spec(env=(("A=B", "c"),)),
    ]
    for spec in bad:
        with pytest.raises(PermanentError):
            await rt.create(spec)
    assert await rt.list_owned() == []


# --- ownership ---------------------------------------------------------------------------------


async def test_labels_and_ownership(env: Env) -> None:
    rt = env.runtime
    await rt.pull(env.image)
    await rt.create(env.spec("one", generation=1, labels=(("purpose", "test"),)))
    await rt.create(env.spec("two", app="1b4e28ba-2fa1-11d2-883f-0016d3cca427"))

    # A container made outside the agent under a name with our prefix: no label.
    foreign = rt.prefix + "foreign"  # type: ignore[attr-defined]
    env.make_foreign(foreign)
    # Another node on the same host, with the same node-local name.
    other = env.new_runtime(rt.node + "-other")
    await other.pull(env.image)
    await other.create(env.spec("one"))

    owned = await rt.list_owned()
    assert [s.name for s in owned] == ["one", "two"]
    one = owned[0]
    assert one.owned and one.app == APP and one.generation == 1
    assert one.labels[NODE_LABEL] == rt.node
    assert one.labels[APP_LABEL] == APP
    assert one.labels[GENERATION_LABEL] == "1"
    assert one.labels[SPEC_LABEL] == one.spec_hash
    assert one.labels["purpose"] == "test"
    assert [s.name for s in await other.list_owned()] == ["one"]
    assert (await other.inspect("one")).id != one.id

    state = await rt.inspect("foreign")
    assert state.exists and not state.owned
    for op in (rt.start, rt.stop, rt.remove, rt.logs, rt.stats):
        with pytest.raises(PermanentError, match="not ours"):
            await op("foreign")
    with pytest.raises(PermanentError, match="not ours"):
        await rt.create(env.spec("foreign"))
    assert (await rt.inspect("foreign")).exists

    await rt.remove("one")
    assert [s.name for s in await rt.list_owned()] == ["two"]
    assert [s.name for s in await other.list_owned()] == ["one"]


async def test_dockerd_unreachable_is_temporary(env: Env, tmp_path: Path) -> None:
    if isinstance(env.runtime, FakeContainerRuntime):
        env.runtime.down = True
        rt: ContainerRuntime = env.runtime
    else:
        rt = DockerRuntime(
            env.runtime.node, DockerSettings(base_url=f"unix://{tmp_path}/no-docker.sock")
        )
    with pytest.raises(TemporaryError):
        await rt.list_owned()
    with pytest.raises(TemporaryError):
        await rt.inspect("app")
    with pytest.raises(TemporaryError):
        await rt.pull(env.image)
    if isinstance(env.runtime, FakeContainerRuntime):
        env.runtime.down = False
    await env.runtime.list_owned()  # and it works again once dockerd answers


class _SocketProxy:
    """A stand-in for dockerd's socket that can "restart": a Unix socket proxied to the real
    one, closed (with every open connection) and opened again at the same path."""

    def __init__(self, path: Path, upstream: str) -> None:
        self.path = path
        self.upstream = upstream
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._handle, path=str(self.path))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        await self.server.wait_closed()
        self.path.unlink(missing_ok=True)


async def test_dockerd_restart_is_survived(env: Env, tmp_path: Path) -> None:
    """dockerd goes away under a running container and comes back: calls fail as temporary
    meanwhile, and the same runtime works again afterwards (a new connection)."""
    proxy: _SocketProxy | None = None
    if isinstance(env.runtime, FakeContainerRuntime):
        rt: ContainerRuntime = env.runtime
    else:
        proxy = _SocketProxy(tmp_path / "docker.sock", DOCKER_SOCK)
        await proxy.start()
        rt = DockerRuntime(
            env.runtime.node, DockerSettings(base_url=f"unix://{proxy.path}", timeout=10)
        )
    try:
        await rt.pull(env.image)
        await rt.create(env.spec())
        await rt.start("app")
        assert [s.name for s in await rt.list_owned()] == ["app"]

        if proxy is not None:
            await proxy.stop()
        else:
            env.runtime.down = True  # type: ignore[attr-defined]
        with pytest.raises(TemporaryError):
            await rt.list_owned()
        with pytest.raises(TemporaryError):
            await rt.stop("app")

        if proxy is not None:
            await proxy.start()
        else:
            env.runtime.down = False  # type: ignore[attr-defined]
        owned = await rt.list_owned()
        assert [(s.name, s.running) for s in owned] == [("app", True)]
        await rt.remove("app")
        assert await rt.list_owned() == []
    finally:
        await rt.close()
        if proxy is not None and proxy.server is not None and proxy.server.is_serving():
            await proxy.stop()
