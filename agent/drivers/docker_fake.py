"""An in-memory :class:`~agent.drivers.docker.ContainerRuntime` for unit tests.

:class:`FakeContainerRuntime` keeps containers and images in dictionaries and follows the real
driver's rules (shared code from :mod:`agent.drivers.docker`: the name prefix, the labels, the
spec checks) and errors, situation for situation:

- a "registry" of images the test publishes (:meth:`FakeContainerRuntime.publish`, optionally
  with credentials); a pull of a ref without a digest, of a digest nobody published or with
  refused credentials is a :class:`PermanentError`; a pull from a registry host nothing was
  published on is a :class:`TemporaryError` (unreachable);
- create needs the image pulled or loaded (:class:`NotFoundError` otherwise), is idempotent for
  the same spec and refuses another spec under the same name;
- :meth:`FakeContainerRuntime.load_image` reads the files as dockerd's loader would, with the
  same checks (:class:`~agent.drivers.dockerarchive.ArchivePlan`: the config's digest, the layer
  files there), then each layer, decompressed, against the config's ``rootfs.diff_ids``; the
  image's environment comes from its config.  Images are the host's, keyed by ID: removing one
  that a container uses, or that has two tags or names in two repositories, is a
  :class:`TemporaryError`, as dockerd's 409;
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
import gzip
import hashlib
import itertools
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agent.drivers.containers import (
    LOG_MAX_BYTES,
    LOG_TAIL_LINES,
    NODE_LABEL,
    SPEC_LABEL,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    LocalImage,
    LogLine,
    bound_lines,
    container_prefix,
    image_key,
    is_image_id,
    not_ours,
    ref_digest,
    spec_labels,
    split_ref,
    state_from_labels,
    validate_image_id,
    validate_local_image,
    validate_spec,
)
from agent.drivers.dockerarchive import ArchivePlan
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
    image_id: str = ""
    env: tuple[tuple[str, str], ...] = ()
    image_env: tuple[tuple[str, str], ...] = ()
    memory_bytes: int | None = None
    nano_cpus: int | None = None
    running: bool = False
    #: A made-up PID while running (the fake has no processes).
    pid: int | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log: list[LogLine] = field(default_factory=list)
    cpu_ns: int = 0


@dataclass
class FakeDockerd:
    """The host side: containers by full name, the local images, the registry."""

    registry: dict[str, FakeImage] = field(default_factory=dict)  # "repo@digest"
    images: dict[str, str] = field(default_factory=dict)  # "repo@digest" or "repo:tag" -> id
    image_ids: dict[str, FakeImage] = field(default_factory=dict)  # id -> the image
    containers: dict[str, _Container] = field(default_factory=dict)
    down: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return hashlib.sha256(f"fake-container-{next(self._ids)}".encode()).hexdigest()

    def image_id(self, ref: str) -> str | None:
        """The ID of the local image ``ref`` (``repo@digest``, ``repo:tag`` or an ID) names."""
        found = ref if is_image_id(ref) else self.images.get(ref)
        return found if found in self.image_ids else None


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
            image_digest=ref_digest(c.image),
            app=app,
            generation=generation,
            spec_hash=spec_hash,
            memory_bytes=c.memory_bytes,
            nano_cpus=c.nano_cpus,
            network_mode="none",
            restart_policy="no",
            pid=c.pid if c.running else None,
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
        self.dockerd.image_ids[image_id] = image
        return image_id

    async def has_image(self, ref: str) -> bool:
        key = image_key(ref)
        await self._enter(f"inspect image {ref}")
        return self.dockerd.image_id(key) is not None

    async def load_image(self, image: LocalImage) -> str:
        validate_local_image(image)
        image_id = image.config_digest
        what = f"load image {image_id}"
        await self._enter(what)
        if image_id not in self.dockerd.image_ids:
            env = await asyncio.to_thread(_check_files, image, what)
            self.dockerd.image_ids[image_id] = FakeImage(env=env)
        if image.tag is not None:
            self.dockerd.images[image.tag] = image_id
        return image_id

    async def remove_image(self, image_id: str) -> None:
        validate_image_id(image_id)
        what = f"remove image {image_id}"
        await self._enter(what)
        if image_id not in self.dockerd.image_ids:
            return
        short = image_id.removeprefix("sha256:")[:12]
        for c in self.dockerd.containers.values():
            if c.image_id == image_id:
                how = "cannot be forced" if c.running else "must be forced"
                state = "running" if c.running else "stopped"
                raise TemporaryError(
                    f"{what}: conflict: unable to delete {short} ({how}) - image is being used "
                    f"by {state} container {c.id[:12]}"
                )
        refs = [ref for ref, found in self.dockerd.images.items() if found == image_id]
        tags = [ref for ref in refs if "@" not in ref]
        # dockerd removes every name with the image only when there is at most one tag and
        # every name is in that one repository; two tags in one repository are refused too.
        if len(tags) > 1 or len({_repository(ref) for ref in refs}) > 1:
            raise TemporaryError(
                f"{what}: conflict: unable to delete {short} (must be forced) - image is "
                "referenced in multiple repositories"
            )
        for ref in refs:
            del self.dockerd.images[ref]
        del self.dockerd.image_ids[image_id]

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
        image_id = self.dockerd.image_id(image_key(spec.image))
        if image_id is None:
            raise NotFoundError(f"create {full}: No such image: {spec.image}")
        image = self.dockerd.image_ids[image_id]
        container = _Container(
            id=self.dockerd.new_id(),
            name=full,
            image=spec.image,
            labels=labels,
            image_id=image_id,
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
        c.pid = 100_000 + next(self.dockerd._ids)  # made up: a new one for each start
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


# --- what dockerd's loader checks ---------------------------------------------------------------


def _check_files(image: LocalImage, what: str) -> tuple[tuple[str, str], ...]:
    """Check the files as dockerd's loader does (in a worker thread); the image's environment.
    PermanentError with dockerd's words for a layer that does not match the config."""
    plan = ArchivePlan.of(image)
    try:
        config = json.loads(plan.config)
        diff_ids = list(config["rootfs"]["diff_ids"])
        env_list = (config.get("config") or {}).get("Env") or []
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"{what}: invalid image config: {exc}") from exc
    if len(diff_ids) != len(image.layers):  # dockerd's words: the manifest's count "expected"
        raise PermanentError(
            f"{what}: invalid manifest, layers length mismatch: expected {len(image.layers)}, "
            f"got {len(diff_ids)}"
        )
    for index, (path, want) in enumerate(zip(image.layers, diff_ids, strict=True)):
        got = _diff_id(path, what)
        if got != want:
            raise PermanentError(
                f'{what}: invalid diffID for layer {index}: expected "{want}", got "{got}"'
            )
    env = (str(item).partition("=") for item in env_list)
    return tuple((key, value) for key, _, value in env)


def _diff_id(path: Path, what: str) -> str:
    """The SHA-256 of the layer's tar, decompressed when it is gzip'd."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise PermanentError(f"{what}: Error processing tar file({exc}): ") from exc
    return "sha256:" + digest.hexdigest()


def _repository(ref: str) -> str:
    """``repo`` of ``repo@digest`` or ``repo:tag``."""
    return ref.rpartition("@")[0] if "@" in ref else ref.rpartition(":")[0]
