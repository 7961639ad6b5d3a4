"""The container driver's shared rules (prefix, refs, spec checks, times) and what only the fake
can show (credentials, dockerd down, log bounds, nodes sharing a host).  What both drivers must
do alike is tests/integration/test_docker_contract.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.drivers.containers import (
    BindMount,
    ContainerSpec,
    LogLine,
    bound_lines,
    container_prefix,
    parse_time,
    split_ref,
    validate_spec,
)
from agent.drivers.docker_fake import FakeContainerRuntime, FakeDockerd, FakeImage
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5000/eve-agent/test-busybox@{DIGEST}"
APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


def spec(**kw: object) -> ContainerSpec:
    args: dict[str, object] = {"name": "app", "image": IMAGE, "app": APP}
    args.update(kw)
    return ContainerSpec(**args)  # type: ignore[arg-type]


def test_prefix_is_plain_for_plain_names_and_hashed_otherwise() -> None:
    assert container_prefix("node1") == "eve-node1_"
    odd = container_prefix("my node/1")
    assert odd.startswith("eve-my-node-1-") and odd.endswith("_")
    # names that sanitise alike still differ
    assert container_prefix("a_b") != container_prefix("a-b")
    assert container_prefix("a b") != container_prefix("a-b")
    long = "n" * 80
    assert container_prefix(long) != container_prefix(long + "x")
    # "_" never occurs inside a prefix: node "a" + name "b_x" cannot be node "a_b" + "x"
    assert "_" not in container_prefix("a_b")[:-1]


def test_split_ref() -> None:
    assert split_ref(IMAGE) == ("127.0.0.1:5000/eve-agent/test-busybox", DIGEST)
    assert split_ref(f"127.0.0.1:5000/x:v1@{DIGEST}") == ("127.0.0.1:5000/x", DIGEST)
    for bad in ("busybox", "busybox:latest", "x@sha256:12", f"@{DIGEST}", "x@" + "a" * 64):
        with pytest.raises(PermanentError):
            split_ref(bad)


def test_spec_hash_is_stable_and_sensitive() -> None:
    assert spec().spec_hash() == spec().spec_hash()
    assert spec().spec_hash() != spec(generation=1).spec_hash()
    assert spec().spec_hash() != spec(env=(("A", "1"),)).spec_hash()
    assert spec().spec_hash() != spec(mounts=(BindMount("/a", "/b"),)).spec_hash()
    assert spec(mounts=(BindMount("/a", "/b"),)).spec_hash() != (
        spec(mounts=(BindMount("/a", "/b", read_only=True),)).spec_hash()
    )
    assert hash(spec()) == hash(spec())  # an item's value


def test_validate_spec() -> None:
    validate_spec(spec(memory_bytes=6 * 1024 * 1024, nano_cpus=1))
    with pytest.raises(PermanentError, match="below"):
        validate_spec(spec(memory_bytes=6 * 1024 * 1024 - 1))
    with pytest.raises(PermanentError, match="reserved"):
        validate_spec(spec(labels=(("org.lfedge.eve-agent.app", "x"),)))
    with pytest.raises(PermanentError, match="negative"):
        validate_spec(spec(generation=-1))


def test_parse_time() -> None:
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("") is None and parse_time("garbage") is None
    assert parse_time("2024-05-01T10:11:12.123456789Z") == datetime(
        2024, 5, 1, 10, 11, 12, 123456, tzinfo=UTC
    )
    assert parse_time("2024-05-01T10:11:12.5+02:00") == datetime(
        2024, 5, 1, 8, 11, 12, 500000, tzinfo=UTC
    )


def test_bound_lines_keeps_the_end() -> None:
    now = datetime.now(UTC)
    lines = [LogLine(now, "x" * 9) for _ in range(10)]  # 10 bytes each with the newline
    assert len(bound_lines(lines, 35)) == 3
    assert bound_lines(lines, 5) == []


async def test_credentials_are_checked() -> None:
    rt = FakeContainerRuntime("n1")
    rt.publish(IMAGE, FakeImage(credentials={"username": "u", "password": "p"}))
    with pytest.raises(PermanentError, match="unauthorized"):
        await rt.pull(IMAGE)
    with pytest.raises(PermanentError, match="unauthorized"):
        await rt.pull(IMAGE, {"username": "u", "password": "wrong"})
    assert (await rt.pull(IMAGE, {"username": "u", "password": "p"})).startswith("sha256:")


async def test_down_fails_every_call_as_temporary() -> None:
    rt = FakeContainerRuntime("n1")
    rt.publish(IMAGE)
    await rt.pull(IMAGE)
    await rt.create(spec())
    rt.down = True
    for call in (
        rt.pull(IMAGE),
        rt.has_image(IMAGE),
        rt.create(spec()),
        rt.start("app"),
        rt.stop("app"),
        rt.remove("app"),
        rt.inspect("app"),
        rt.list_owned(),
        rt.logs("app"),
        rt.stats("app"),
    ):
        with pytest.raises(TemporaryError, match="unreachable"):
            await call
    rt.down = False
    assert [s.name for s in await rt.list_owned()] == ["app"]


async def test_logs_since_tail_and_bytes() -> None:
    rt = FakeContainerRuntime("n1")
    rt.publish(IMAGE, FakeImage(env=(("PATH", "/bin"),)))
    await rt.pull(IMAGE)
    await rt.create(spec(env=(("A", "1"),)))
    await rt.start("app")
    lines = await rt.logs("app")
    assert [x.text for x in lines][1:] == ["HOME=/root", "PATH=/bin", "A=1", "ready"]
    assert [x.text for x in await rt.logs("app", tail=2)] == ["A=1", "ready"]
    assert [x.text for x in await rt.logs("app", max_bytes=6)] == ["ready"]
    assert await rt.logs("app", since=lines[-1].time) == []
    assert len(await rt.logs("app", since=lines[-1].time - timedelta(seconds=1))) == 5


async def test_nodes_share_one_host() -> None:
    dockerd = FakeDockerd()
    a, b = FakeContainerRuntime("a", dockerd), FakeContainerRuntime("b", dockerd)
    a.publish(IMAGE)
    await a.pull(IMAGE)
    assert await b.has_image(IMAGE)  # images are the host's
    await a.create(spec())
    await b.create(spec())
    assert sorted(dockerd.containers) == ["eve-a_app", "eve-b_app"]
    await a.remove("app")
    assert [s.name for s in await b.list_owned()] == ["app"]
    with pytest.raises(NotFoundError):
        await a.start("app")


async def test_stats_follow_the_limit() -> None:
    rt = FakeContainerRuntime("n1")
    rt.publish(IMAGE)
    await rt.pull(IMAGE)
    await rt.create(spec(memory_bytes=64 * 1024 * 1024))
    await rt.start("app")
    first = await rt.stats("app")
    assert first.memory_limit_bytes == 64 * 1024 * 1024
    assert (await rt.stats("app")).cpu_ns > first.cpu_ns
