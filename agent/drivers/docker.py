"""Containers through dockerd: a small typed interface, :class:`ContainerRuntime`, and its real
implementation over the Docker SDK, :class:`DockerRuntime` (the fake is
:class:`agent.drivers.docker_fake.FakeContainerRuntime`; one contract suite,
``tests/integration/test_docker_contract.py``, runs against both).

One runtime serves one node.  Everything it makes is marked as that node's own:

- the container's name is ``<prefix><name>``, the prefix derived from the node name
  (:func:`container_prefix`), so several emulated nodes on one host never collide;
- labels ``org.lfedge.eve-agent.node=<node>``, ``...app=<uuid>``, ``...generation=<n>`` and
  ``...spec=<hash of the spec>`` (so an observer can tell whether a container is still the one
  a spec asks for without rebuilding the spec from ``docker inspect``).

It never acts on a container without the node label: start, stop, remove, logs and stats of such
a container raise :class:`PermanentError` before anything is done; :meth:`list_owned` does not
list it; :meth:`inspect` reports it with ``owned=False``.

Containers are made the way the agent owns them: restart policy ``no`` (the agent restarts
apps), network mode ``none`` (the network reconciler plumbs interfaces), the json-file log
driver with a bounded size, images only by digest.

Every SDK call runs in a worker thread (``asyncio.to_thread``); the event loop never waits on
dockerd.  The driver keeps one ``DockerClient``, made on first use; a connection failure (dockerd
restarting) drops it, retries the call once on a new client, and then raises
:class:`TemporaryError`.

Errors, translated here and nowhere else:

- :class:`NotFoundError`: no such container (or no such local image on create); remove of a
  container that is already gone is success, not an error;
- :class:`PermanentError`: an invalid spec (validated before dockerd sees it, and dockerd's own
  400s), a ref without a digest, a manifest the registry does not have, refused credentials, a
  container that is not ours, a name taken by a container made from another spec;
- :class:`TemporaryError`: dockerd unreachable, timeouts, 5xx, conflicts that pass (409), a
  registry that cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from agent.drivers.errors import DriverError, NotFoundError, PermanentError, TemporaryError

LABEL_PREFIX = "org.lfedge.eve-agent."
NODE_LABEL = LABEL_PREFIX + "node"
APP_LABEL = LABEL_PREFIX + "app"
GENERATION_LABEL = LABEL_PREFIX + "generation"
SPEC_LABEL = LABEL_PREFIX + "spec"
_OUR_LABELS = (NODE_LABEL, APP_LABEL, GENERATION_LABEL, SPEC_LABEL)

#: dockerd refuses memory limits below 6 MiB; the spec check refuses them first.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
#: Bounds of what :meth:`ContainerRuntime.logs` returns by default.
LOG_TAIL_LINES = 1000
LOG_MAX_BYTES = 256 * 1024

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]{0,99}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ENV_KEY_RE = re.compile(r"^[^=\x00]+$")
_SLUG_RE = re.compile(r"[^a-zA-Z0-9.-]")

_T = TypeVar("_T")


# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BindMount:
    """A host directory or file bound into the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """What one container should be.  ``name`` is the node-local name (the runtime adds the
    node's prefix); ``image`` is a ref with a digest (``repo@sha256:...``); ``env`` and ``labels``
    are ordered pairs so that the spec is hashable and compares by value.  ``labels`` may not use
    the ``org.lfedge.eve-agent.`` prefix: those are the runtime's."""

    name: str
    image: str
    app: str
    generation: int = 0
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[BindMount, ...] = ()
    memory_bytes: int | None = None
    nano_cpus: int | None = None
    labels: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] | None = None

    def spec_hash(self) -> str:
        """A short stable hash of the whole spec: the ``...spec`` label."""
        data = json.dumps(
            [
                self.name,
                self.image,
                self.app,
                self.generation,
                list(self.env),
                [[m.source, m.target, m.read_only] for m in self.mounts],
                self.memory_bytes,
                self.nano_cpus,
                list(self.labels),
                None if self.command is None else list(self.command),
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(data.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ContainerState:
    """What dockerd says about one container (``exists=False`` and defaults when there is
    none).  ``owned`` is whether it carries this node's label; ``image`` is the ref it was made
    from and ``image_digest`` the ``sha256:`` digest in that ref."""

    name: str
    exists: bool
    owned: bool = False
    id: str = ""
    running: bool = False
    status: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    image: str = ""
    image_digest: str | None = None
    app: str | None = None
    generation: int | None = None
    spec_hash: str | None = None
    memory_bytes: int | None = None
    nano_cpus: int | None = None
    network_mode: str = ""
    restart_policy: str = ""


@dataclass(frozen=True)
class LogLine:
    time: datetime
    text: str


@dataclass(frozen=True)
class ContainerStats:
    """One sample: cumulative CPU time (ns, rates are the caller's), memory in use and limit."""

    cpu_ns: int
    memory_bytes: int
    memory_limit_bytes: int | None
    online_cpus: int | None = None


@dataclass(frozen=True)
class DockerSettings:
    """How to reach dockerd and how containers log.  ``api_version="auto"`` asks dockerd;
    ``timeout`` bounds each API call but a pull (whose stream may be slow but alive)."""

    base_url: str = "unix:///run/docker.sock"
    api_version: str = "auto"
    timeout: float = 60.0
    log_max_size: str = "10m"
    log_max_files: int = 2


class ContainerRuntime(Protocol):
    """Containers of one node.  Names are node-local (without the prefix)."""

    @property
    def node(self) -> str: ...

    async def pull(self, ref: str, auth: Mapping[str, str] | None = None) -> str:
        """Pull ``repo@sha256:...``; returns the local image id.  Idempotent."""

    async def has_image(self, ref: str) -> bool:
        """Whether the image (by digest) is present locally."""

    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) the container; returns its id.  Idempotent for the same spec."""

    async def start(self, name: str) -> None:
        """Start it; a running container stays as it is."""

    async def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; a stopped container stays as is."""

    async def remove(self, name: str, force: bool = True) -> None:
        """Remove it (``force`` kills it first when running); already gone is success."""

    async def inspect(self, name: str) -> ContainerState:
        """Its state; ``exists=False`` when there is none."""

    async def list_owned(self) -> list[ContainerState]:
        """Every container of this node (our label and our prefix), running or not."""

    async def logs(
        self,
        name: str,
        since: datetime | None = None,
        tail: int = LOG_TAIL_LINES,
        max_bytes: int = LOG_MAX_BYTES,
    ) -> list[LogLine]:
        """stdout and stderr lines after ``since``: at most ``tail`` lines, ``max_bytes``."""

    async def stats(self, name: str) -> ContainerStats:
        """One sample of CPU and memory (a single cheap API call)."""

    async def close(self) -> None:
        """Let go of the connection (the runtime reconnects if used again)."""


# --- shared rules (the fake uses them too) -----------------------------------------------------


def container_prefix(node: str) -> str:
    """``eve-<node>_``: node names that are not plain ``[a-zA-Z0-9.-]`` (or are long) get a hash
    so that two nodes never share a prefix.  The ``_`` ends the prefix: it never occurs in one."""
    slug = _SLUG_RE.sub("-", node)[:40]
    if slug != node or not slug:
        slug = f"{slug}-{hashlib.sha256(node.encode()).hexdigest()[:8]}"
    return f"eve-{slug}_"


def split_ref(ref: str) -> tuple[str, str]:
    """``repo[:tag]@sha256:<hex>`` -> (repo, digest); PermanentError without a digest."""
    repo, sep, digest = ref.rpartition("@")
    if not sep or not repo or not _DIGEST_RE.match(digest):
        raise PermanentError(f"image ref {ref!r} has no sha256 digest: images are pulled by digest")
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:  # a tag beside the digest: the digest decides
        repo = repo[: len(repo) - len(last)] + last.split(":", 1)[0]
    return repo, digest


def validate_spec(spec: ContainerSpec) -> None:
    """PermanentError naming what is wrong with ``spec``."""
    if not _NAME_RE.match(spec.name):
        raise PermanentError(f"container name {spec.name!r}: want [a-zA-Z0-9][a-zA-Z0-9.-]*")
    split_ref(spec.image)
    if not spec.app:
        raise PermanentError(f"container {spec.name}: no app")
    if spec.generation < 0:
        raise PermanentError(f"container {spec.name}: negative generation")
    for key, _ in spec.env:
        if not _ENV_KEY_RE.match(key):
            raise PermanentError(f"container {spec.name}: bad environment variable {key!r}")
    targets: set[str] = set()
    for mount in spec.mounts:
        if not mount.source.startswith("/") or not mount.target.startswith("/"):
            raise PermanentError(
                f"container {spec.name}: mount {mount.source} -> {mount.target}: paths must be "
                "absolute"
            )
        if mount.target in targets:
            raise PermanentError(f"container {spec.name}: two mounts on {mount.target}")
        targets.add(mount.target)
    if spec.memory_bytes is not None and spec.memory_bytes < MIN_MEMORY_BYTES:
        raise PermanentError(
            f"container {spec.name}: memory limit {spec.memory_bytes} below "
            f"{MIN_MEMORY_BYTES} bytes"
        )
    if spec.nano_cpus is not None and spec.nano_cpus <= 0:
        raise PermanentError(f"container {spec.name}: CPU limit must be positive")
    for key, _ in spec.labels:
        if key.startswith(LABEL_PREFIX):
            raise PermanentError(f"container {spec.name}: label {key} is reserved")


def spec_labels(node: str, spec: ContainerSpec) -> dict[str, str]:
    labels = dict(spec.labels)
    labels[NODE_LABEL] = node
    labels[APP_LABEL] = spec.app
    labels[GENERATION_LABEL] = str(spec.generation)
    labels[SPEC_LABEL] = spec.spec_hash()
    return labels


def not_ours(name: str, node: str) -> PermanentError:
    return PermanentError(
        f"container {name} does not carry {NODE_LABEL}={node}: not touching what is not ours"
    )


def parse_time(value: str | None) -> datetime | None:
    """dockerd's RFC 3339 times (nanoseconds, ``Z``); None for the zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        offset = ""
        for sign in ("+", "-"):
            if sign in frac:
                frac, rest = frac.split(sign, 1)
                offset = sign + rest
        text = f"{head}.{frac[:6]}{offset}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def state_from_labels(
    labels: Mapping[str, str], node: str
) -> tuple[bool, str | None, int | None, str | None]:
    """(owned, app, generation, spec hash) from a container's labels."""
    owned = labels.get(NODE_LABEL) == node
    generation: int | None
    try:
        generation = int(labels[GENERATION_LABEL])
    except (KeyError, ValueError):
        generation = None
    return owned, labels.get(APP_LABEL), generation, labels.get(SPEC_LABEL)


def bound_lines(lines: list[LogLine], max_bytes: int) -> list[LogLine]:
    """The last lines whose text fits in ``max_bytes``."""
    total = 0
    kept: list[LogLine] = []
    for line in reversed(lines):
        total += len(line.text.encode()) + 1
        if total > max_bytes:
            break
        kept.append(line)
    kept.reverse()
    return kept


# --- the real thing ------------------------------------------------------------------------------

_PERMANENT_WORDS = (
    "manifest unknown",
    "unauthorized",
    "authentication required",
    "access denied",
    "denied:",
    "not found",
    "no such image",
    "invalid reference",
    "repository name must",
)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _explanation(exc: Exception) -> str:
    text = getattr(exc, "explanation", None)
    return str(text) if text else str(exc)


class _Connection(TemporaryError):
    """dockerd could not be reached: the client is dropped and the call retried once."""


class DockerRuntime:
    """:class:`ContainerRuntime` over dockerd; see the module docstring."""

    def __init__(self, node: str, settings: DockerSettings | None = None) -> None:
        if not node:
            raise ValueError("empty node name")
        self._node = node
        self._settings = settings or DockerSettings()
        self.prefix = container_prefix(node)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def node(self) -> str:
        return self._node

    # -- plumbing

    def _api(self) -> Any:
        with self._lock:
            if self._client is None:
                import docker

                try:
                    self._client = docker.DockerClient(
                        base_url=self._settings.base_url,
                        version=self._settings.api_version,
                        timeout=self._settings.timeout,
                    )
                except Exception as exc:  # the SDK wraps connection errors freely
                    raise _Connection(f"dockerd at {self._settings.base_url}: {exc}") from exc
            return self._client.api

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken client may fail any way
                client.close()

    def _translate(self, exc: Exception, what: str, *, pulling: bool = False) -> DriverError:
        import docker.errors
        import requests.exceptions

        if isinstance(exc, DriverError):
            return exc
        if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
            return _Connection(f"{what}: dockerd unreachable: {exc}")
        if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
            return TemporaryError(f"{what}: dockerd did not answer in time: {exc}")
        if isinstance(exc, docker.errors.APIError):
            code = _status(exc)
            text = _explanation(exc)
            message = f"{what}: {text}"
            if pulling:
                return self._classify_pull(message, code)
            if code == 404:
                return NotFoundError(message)
            if code in (400, 401, 403):
                return PermanentError(message)
            return TemporaryError(message)
        if isinstance(exc, docker.errors.InvalidArgument | docker.errors.InvalidVersion):
            return PermanentError(f"{what}: {exc}")
        return TemporaryError(f"{what}: {exc}")

    @staticmethod
    def _classify_pull(message: str, code: int | None) -> DriverError:
        lowered = message.lower()
        if code in (400, 401, 403, 404):
            return PermanentError(message)
        if any(word in lowered for word in _PERMANENT_WORDS):
            return PermanentError(message)
        return TemporaryError(message)

    def _sync(self, what: str, fn: Callable[[Any], _T], *, pulling: bool = False) -> _T:
        """Run ``fn(api)`` with errors translated; once more on a new client after a dropped
        connection."""
        for attempt in (1, 2):
            try:
                return fn(self._api())
            except Exception as exc:  # translated below
                error = self._translate(exc, what, pulling=pulling)
                if isinstance(error, _Connection):
                    self._drop_client()
                    if attempt == 1:
                        continue
                    raise TemporaryError(str(error)) from exc
                if error is exc:
                    raise
                raise error from exc
        raise AssertionError("unreachable")

    async def _call(self, what: str, fn: Callable[[Any], _T], *, pulling: bool = False) -> _T:
        return await asyncio.to_thread(self._sync, what, fn, pulling=pulling)

    def _full(self, name: str) -> str:
        return self.prefix + name

    def _owned_id(self, api: Any, name: str) -> str:
        """The id of our container ``name``; NotFoundError, or PermanentError when not ours."""
        import docker.errors

        try:
            data = api.inspect_container(self._full(name))
        except docker.errors.NotFound as exc:
            raise NotFoundError(f"no container {self._full(name)}") from exc
        labels = (data.get("Config") or {}).get("Labels") or {}
        if labels.get(NODE_LABEL) != self._node:
            raise not_ours(self._full(name), self._node)
        return str(data["Id"])

    def _state(self, name: str, data: Mapping[str, Any]) -> ContainerState:
        config = data.get("Config") or {}
        host = data.get("HostConfig") or {}
        state = data.get("State") or {}
        labels = dict(config.get("Labels") or {})
        owned, app, generation, spec_hash = state_from_labels(labels, self._node)
        image = str(config.get("Image") or "")
        digest = image.rpartition("@")[2] if _DIGEST_RE.match(image.rpartition("@")[2]) else None
        running = bool(state.get("Running"))
        exit_code = state.get("ExitCode")
        return ContainerState(
            name=name,
            exists=True,
            owned=owned,
            id=str(data.get("Id", "")),
            running=running,
            status=str(state.get("Status", "")),
            exit_code=None if running or exit_code is None else int(exit_code),
            started_at=parse_time(state.get("StartedAt")),
            finished_at=parse_time(state.get("FinishedAt")),
            labels=labels,
            image=image,
            image_digest=digest,
            app=app,
            generation=generation,
            spec_hash=spec_hash,
            memory_bytes=host.get("Memory") or None,
            nano_cpus=host.get("NanoCpus") or None,
            network_mode=str(host.get("NetworkMode", "")),
            restart_policy=str((host.get("RestartPolicy") or {}).get("Name", "")),
        )

    # -- images

    async def pull(self, ref: str, auth: Mapping[str, str] | None = None) -> str:
        repo, digest = split_ref(ref)
        what = f"pull {repo}@{digest}"

        def run(api: Any) -> str:
            stream = api.pull(
                repo,
                tag=digest,
                stream=True,
                decode=True,
                auth_config=dict(auth) if auth is not None else None,
            )
            for event in stream:
                if isinstance(event, dict) and event.get("error"):
                    detail = event.get("errorDetail") or {}
                    raise self._classify_pull(f"{what}: {event['error']}", detail.get("code"))
            image_id: str = api.inspect_image(f"{repo}@{digest}")["Id"]
            return image_id

        return await self._call(what, run, pulling=True)

    async def has_image(self, ref: str) -> bool:
        repo, digest = split_ref(ref)

        def run(api: Any) -> bool:
            import docker.errors

            try:
                api.inspect_image(f"{repo}@{digest}")
            except docker.errors.NotFound:
                return False
            return True

        return await self._call(f"inspect image {ref}", run)

    # -- containers

    async def create(self, spec: ContainerSpec) -> str:
        validate_spec(spec)
        full = self._full(spec.name)
        labels = spec_labels(self._node, spec)

        def existing(api: Any) -> str | None:
            import docker.errors

            try:
                data = api.inspect_container(full)
            except docker.errors.NotFound:
                return None
            got = (data.get("Config") or {}).get("Labels") or {}
            if got.get(NODE_LABEL) != self._node:
                raise not_ours(full, self._node)
            if got.get(SPEC_LABEL) != labels[SPEC_LABEL]:
                raise PermanentError(
                    f"container {full} exists, made from another spec: remove it first"
                )
            return str(data["Id"])

        def run(api: Any) -> str:
            import docker.errors
            from docker.types import LogConfig, Mount

            found = existing(api)
            if found is not None:
                return found
            host_config = api.create_host_config(
                mounts=[
                    Mount(m.target, m.source, type="bind", read_only=m.read_only)
                    for m in spec.mounts
                ],
                mem_limit=spec.memory_bytes,
                memswap_limit=spec.memory_bytes,
                nano_cpus=spec.nano_cpus,
                network_mode="none",
                restart_policy={"Name": "no"},
                log_config=LogConfig(
                    type="json-file",
                    config={
                        "max-size": self._settings.log_max_size,
                        "max-file": str(self._settings.log_max_files),
                    },
                ),
            )
            try:
                created = api.create_container(
                    image=spec.image,
                    command=list(spec.command) if spec.command is not None else None,
                    name=full,
                    environment=[f"{k}={v}" for k, v in spec.env],
                    labels=labels,
                    host_config=host_config,
                )
            except docker.errors.APIError as exc:
                if _status(exc) == 409:  # made meanwhile (a retried call, a racing caller)
                    found = existing(api)
                    if found is not None:
                        return found
                raise
            return str(created["Id"])

        return await self._call(f"create {full}", run)

    async def start(self, name: str) -> None:
        def run(api: Any) -> None:
            api.start(self._owned_id(api, name))

        await self._call(f"start {self._full(name)}", run)

    async def stop(self, name: str, grace: float = 10.0) -> None:
        def run(api: Any) -> None:
            api.stop(self._owned_id(api, name), timeout=max(0, round(grace)))

        await self._call(f"stop {self._full(name)}", run)

    async def remove(self, name: str, force: bool = True) -> None:
        def run(api: Any) -> None:
            import docker.errors

            try:
                cid = self._owned_id(api, name)
                api.remove_container(cid, v=True, force=force)
            except (NotFoundError, docker.errors.NotFound):
                return  # already gone

        await self._call(f"remove {self._full(name)}", run)

    async def inspect(self, name: str) -> ContainerState:
        def run(api: Any) -> ContainerState:
            import docker.errors

            try:
                data = api.inspect_container(self._full(name))
            except docker.errors.NotFound:
                return ContainerState(name=name, exists=False)
            return self._state(name, data)

        return await self._call(f"inspect {self._full(name)}", run)

    async def list_owned(self) -> list[ContainerState]:
        def run(api: Any) -> list[ContainerState]:
            import docker.errors

            found = api.containers(all=True, filters={"label": f"{NODE_LABEL}={self._node}"})
            states: list[ContainerState] = []
            for summary in found:
                names = [str(n).lstrip("/") for n in summary.get("Names") or ()]
                full = next((n for n in names if n.startswith(self.prefix)), None)
                if full is None:
                    continue
                try:
                    data = api.inspect_container(summary["Id"])
                except docker.errors.NotFound:
                    continue  # removed meanwhile
                state = self._state(full[len(self.prefix) :], data)
                if state.owned:
                    states.append(state)
            states.sort(key=lambda s: s.name)
            return states

        return await self._call("list containers", run)

    async def logs(
        self,
        name: str,
        since: datetime | None = None,
        tail: int = LOG_TAIL_LINES,
        max_bytes: int = LOG_MAX_BYTES,
    ) -> list[LogLine]:
        def run(api: Any) -> list[LogLine]:
            raw: bytes = api.logs(
                self._owned_id(api, name),
                stdout=True,
                stderr=True,
                timestamps=True,
                tail=max(1, tail),
                since=since,
            )
            lines: list[LogLine] = []
            for row in raw.decode("utf-8", "replace").splitlines():
                stamp, _, text = row.partition(" ")
                when = parse_time(stamp)
                if when is None:
                    continue
                if since is not None and when <= since:
                    continue
                lines.append(LogLine(when, text))
            return bound_lines(lines, max_bytes)

        return await self._call(f"logs {self._full(name)}", run)

    async def stats(self, name: str) -> ContainerStats:
        def run(api: Any) -> ContainerStats:
            data = api.stats(self._owned_id(api, name), stream=False, one_shot=True)
            cpu = (data.get("cpu_stats") or {}).get("cpu_usage") or {}
            mem = data.get("memory_stats") or {}
            usage = int(mem.get("usage") or 0)
            # As `docker stats` does on cgroup v2 (inactive_file) and v1 (total_inactive_file).
            details = mem.get("stats") or {}
            inactive = details.get("inactive_file", details.get("total_inactive_file", 0))
            limit = mem.get("limit")
            online = (data.get("cpu_stats") or {}).get("online_cpus")
            return ContainerStats(
                cpu_ns=int(cpu.get("total_usage") or 0),
                memory_bytes=max(0, usage - int(inactive or 0)),
                memory_limit_bytes=int(limit) if limit else None,
                online_cpus=int(online) if online else None,
            )

        return await self._call(f"stats {self._full(name)}", run)

    async def close(self) -> None:
        await asyncio.to_thread(self._drop_client)
