"""An in-memory :class:`~agent.drivers.docker.ContainerRuntime` for unit tests.

:class:`FakeContainerRuntime` keeps containers and images in dictionaries and follows the real
driver's rules (shared code from :mod:`agent.drivers.docker`: the name prefix, the labels, the
spec checks) and errors, situation for situation:

- a "registry" of images the test publishes (:meth:`FakeContainerRuntime.publish`, optionally
  with credentials); a pull of a ref without a digest, of a digest nobody published or with
  refused credentials is a :class:`PermanentError`; a pull from a registry host nothing was
  published on is a :class:`TemporaryError` (unreachable);
- create needs the image pulled (:class:`NotFoundError` otherwise), is idempotent for the same
  spec and refuses another spec under the same name;
- a started container "runs" the test image's program: its log gets the environment
  (``HOSTNAME``, ``HOME``, the image's ``PATH``, the spec's variables), then ``ready``; a stop
  ends it with exit code 137, as the test image (``exec sleep`` as PID 1 ignores SIGTERM);
- containers made "outside the agent" (:meth:`add_foreign`) carry no label: never listed, never
  touched;
- :attr:`FakeContainerRuntime.down` makes every call fail as when dockerd is unreachable.

Many runtimes (one per emulated node) can share one :class:`FakeDockerd`, as nodes share a host.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.drivers.containers import (
    LOG_MAX_BYTES,
    LOG_TAIL_LINES,
    NODE_LABEL,
    SPEC_LABEL,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    LogLine,
    bound_lines,
    container_prefix,
    not_ours,
    spec_labels,
    split_ref,
    state_from_labels,
    validate_spec,
)
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError

#: The fake host's memory: the limit stats report for a container without one.
HOST_MEMORY = 4 * 1024**3


@dataclass(frozen=True)
class FakeImage:
    """An image in the fake registry: its environment, and the credentials a pull needs."""

    env: tuple[tuple[str, str], ...] = (("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),)
    credentials: Mapping[str, str] | None = None


@dataclass
class _Container:
    id: str
    name: str
    image: str
    labels: dict[str, str]
    env: tuple[tuple[str, str], ...] = ()
    image_env: tuple[tuple[str, str], ...] = ()
    memory_bytes: int | None = None
    nano_cpus: int | None = None
    running: bool = False
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log: list[LogLine] = field(default_factory=list)
    cpu_ns: int = 0


@dataclass
class FakeDockerd:
    """The host side: containers by full name, the local images, the registry."""

    registry: dict[str, FakeImage] = field(default_factory=dict)  # "repo@digest"
    images: dict[str, str] = field(default_factory=dict)  # "repo@digest" -> image id
    containers: dict[str, _Container] = field(default_factory=dict)
    down: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return hashlib.sha256(f"fake-container-{next(self._ids)}".encode()).hexdigest()


class FakeContainerRuntime:
    """See the module docstring."""

    def __init__(self, node: str, dockerd: FakeDockerd | None = None) -> None:
        if not node:
            raise ValueError("empty node name")
        self._node = node
        self.dockerd = dockerd if dockerd is not None else FakeDockerd()
        self.prefix = container_prefix(node)

    @property
    def node(self) -> str:
        return self._node

    # -- test controls

    @property
    def down(self) -> bool:
        return self.dockerd.down

    @down.setter
    def down(self, value: bool) -> None:
        self.dockerd.down = value

    def publish(self, ref: str, image: FakeImage | None = None) -> None:
        """Put ``repo@sha256:...`` into the fake registry."""
        repo, digest = split_ref(ref)
        self.dockerd.registry[f"{repo}@{digest}"] = image or FakeImage()

    def add_foreign(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """A running container made by someone else, under the full ``name`` given."""
        self.dockerd.containers[name] = _Container(
            id=self.dockerd.new_id(),
            name=name,
            image="foreign",
            labels=dict(labels or {}),
            running=True,
            started_at=datetime.now(UTC),
        )

    # -- plumbing

    async def _enter(self, what: str) -> None:
        await asyncio.sleep(0)
        if self.dockerd.down:
            raise TemporaryError(f"{what}: dockerd unreachable: connection refused (fake)")

    def _full(self, name: str) -> str:
        return self.prefix + name

    def _owned(self, name: str) -> _Container:
        full = self._full(name)
        container = self.dockerd.containers.get(full)
        if container is None:
            raise NotFoundError(f"no container {full}")
        if container.labels.get(NODE_LABEL) != self._node:
            raise not_ours(full, self._node)
        return container

    def _state(self, name: str, c: _Container) -> ContainerState:
        owned, app, generation, spec_hash = state_from_labels(c.labels, self._node)
        digest = c.image.rpartition("@")[2] if "@" in c.image else None
        return ContainerState(
            name=name,
            exists=True,
            owned=owned,
            id=c.id,
            running=c.running,
            status="running" if c.running else ("exited" if c.started_at else "created"),
            exit_code=None if c.running else c.exit_code,
            started_at=c.started_at,
            finished_at=c.finished_at,
            labels=dict(c.labels),
            image=c.image,
            image_digest=digest,
            app=app,
            generation=generation,
            spec_hash=spec_hash,
            memory_bytes=c.memory_bytes,
            nano_cpus=c.nano_cpus,
            network_mode="none",
            restart_policy="no",
        )

    # -- images

    async def pull(self, ref: str, auth: Mapping[str, str] | None = None) -> str:
        repo, digest = split_ref(ref)
        key = f"{repo}@{digest}"
        what = f"pull {key}"
        await self._enter(what)
        host = repo.split("/", 1)[0]
        if not any(k.split("/", 1)[0] == host for k in self.dockerd.registry):
            raise TemporaryError(f"{what}: registry {host} unreachable (fake)")
        image = self.dockerd.registry.get(key)
        if image is None:
            raise PermanentError(f"{what}: manifest unknown")
        if image.credentials is not None and dict(auth or {}) != dict(image.credentials):
            raise PermanentError(f"{what}: unauthorized: authentication required")
        image_id = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        self.dockerd.images[key] = image_id
        return image_id

    async def has_image(self, ref: str) -> bool:
        repo, digest = split_ref(ref)
        await self._enter(f"inspect image {ref}")
        return f"{repo}@{digest}" in self.dockerd.images

    # -- containers

    async def create(self, spec: ContainerSpec) -> str:
        validate_spec(spec)
        full = self._full(spec.name)
        await self._enter(f"create {full}")
        labels = spec_labels(self._node, spec)
        found = self.dockerd.containers.get(full)
        if found is not None:
            if found.labels.get(NODE_LABEL) != self._node:
                raise not_ours(full, self._node)
            if found.labels.get(SPEC_LABEL) != labels[SPEC_LABEL]:
                raise PermanentError(
                    f"create {full}: container {full} exists, made from another spec: "
                    "remove it first"
                )
            return found.id
        repo, digest = split_ref(spec.image)
        key = f"{repo}@{digest}"
        if key not in self.dockerd.images:
            raise NotFoundError(f"create {full}: No such image: {spec.image}")
        image = self.dockerd.registry.get(key, FakeImage())
        container = _Container(
            id=self.dockerd.new_id(),
            name=full,
            image=spec.image,
            labels=labels,
            env=spec.env,
            image_env=image.env,
            memory_bytes=spec.memory_bytes,
            nano_cpus=spec.nano_cpus,
        )
        self.dockerd.containers[full] = container
        return container.id

    async def start(self, name: str) -> None:
        await self._enter(f"start {self._full(name)}")
        c = self._owned(name)
        if c.running:
            return
        now = datetime.now(UTC)
        c.running, c.exit_code, c.started_at, c.finished_at = True, None, now, None
        env = dict(c.image_env)
        env.update(c.env)
        lines = [f"HOSTNAME={c.id[:12]}", "HOME=/root"]
        lines += [f"{k}={v}" for k, v in env.items()]
        lines.append("ready")
        c.log.extend(LogLine(now, line) for line in lines)
        c.cpu_ns += 1_000_000

    async def stop(self, name: str, grace: float = 10.0) -> None:
        await self._enter(f"stop {self._full(name)}")
        c = self._owned(name)
        if c.running:
            c.running, c.exit_code, c.finished_at = False, 137, datetime.now(UTC)

    async def remove(self, name: str, force: bool = True) -> None:
        full = self._full(name)
        await self._enter(f"remove {full}")
        try:
            c = self._owned(name)
        except NotFoundError:
            return
        if c.running and not force:
            raise TemporaryError(
                f"remove {full}: You cannot remove a running container: stop it first"
            )
        del self.dockerd.containers[full]

    async def inspect(self, name: str) -> ContainerState:
        full = self._full(name)
        await self._enter(f"inspect {full}")
        c = self.dockerd.containers.get(full)
        if c is None:
            return ContainerState(name=name, exists=False)
        return self._state(name, c)

    async def list_owned(self) -> list[ContainerState]:
        await self._enter("list containers")
        states = [
            self._state(full[len(self.prefix) :], c)
            for full, c in self.dockerd.containers.items()
            if full.startswith(self.prefix) and c.labels.get(NODE_LABEL) == self._node
        ]
        states.sort(key=lambda s: s.name)
        return states

    async def logs(
        self,
        name: str,
        since: datetime | None = None,
        tail: int = LOG_TAIL_LINES,
        max_bytes: int = LOG_MAX_BYTES,
    ) -> list[LogLine]:
        await self._enter(f"logs {self._full(name)}")
        c = self._owned(name)
        lines = [line for line in c.log if since is None or line.time > since]
        return bound_lines(lines[-max(1, tail) :], max_bytes)

    async def stats(self, name: str) -> ContainerStats:
        await self._enter(f"stats {self._full(name)}")
        c = self._owned(name)
        if c.running:
            c.cpu_ns += 1_000_000
        return ContainerStats(
            cpu_ns=c.cpu_ns,
            memory_bytes=1024 * 1024 if c.running else 0,
            memory_limit_bytes=c.memory_bytes or HOST_MEMORY,
            online_cpus=2,
        )

    async def close(self) -> None:
        await asyncio.sleep(0)
