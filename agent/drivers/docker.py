"""Containers through dockerd: a small typed interface, :class:`ContainerRuntime`, and its real
implementation over the Docker SDK, :class:`DockerRuntime` (the fake is
:class:`agent.drivers.docker_fake.FakeContainerRuntime`; the interface and the shared rules are
in :mod:`agent.drivers.containers`; one contract suite,
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
driver with a bounded size, images only by digest or by image ID.

Images come in two ways: :meth:`DockerRuntime.pull` has dockerd download ``repo@sha256:...``
itself; :meth:`DockerRuntime.load_image` loads an image the agent downloaded and verified into
its blob store (EVE's downloader and verifier), without a second download: the blob files are
streamed to dockerd's image load as a docker-archive (:mod:`agent.drivers.dockerarchive`), one
chunk at a time from a worker thread, never whole in memory nor copied to disk.  Images are
content-addressed and shared by every node on the host: :meth:`DockerRuntime.remove_image`
removes one by ID and is refused (temporarily) while any container uses it.

Every SDK call runs in a worker thread (``asyncio.to_thread``); the event loop never waits on
dockerd.  The driver keeps one ``DockerClient``, made on first use; a connection failure (dockerd
restarting) drops it, retries the call once on a new client, and then raises
:class:`TemporaryError`.

Errors, translated here and nowhere else:

- :class:`NotFoundError`: no such container (or no such local image on create); remove of a
  container that is already gone is success, not an error;
- :class:`PermanentError`: an invalid spec (validated before dockerd sees it, and dockerd's own
  400s), a ref without a digest, a manifest the registry does not have, refused credentials, a
  container that is not ours, a name taken by a container made from another spec; an image to
  load whose files are missing or do not match (dockerd's load errors, but a full disk);
- :class:`TemporaryError`: dockerd unreachable, timeouts, 5xx, conflicts that pass (409: also
  an image still in use), a registry that cannot be reached, a load that ran out of disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from agent.drivers.containers import (
    LOG_MAX_BYTES,
    LOG_TAIL_LINES,
    NODE_LABEL,
    SPEC_LABEL,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    DockerSettings,
    LocalImage,
    LogLine,
    bound_lines,
    container_prefix,
    image_key,
    not_ours,
    parse_time,
    ref_digest,
    spec_labels,
    split_ref,
    state_from_labels,
    validate_image_id,
    validate_local_image,
    validate_spec,
)
from agent.drivers.dockerarchive import ArchivePlan
from agent.drivers.errors import DriverError, NotFoundError, PermanentError, TemporaryError

_T = TypeVar("_T")


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
#: Load errors that pass: the rest (a cut or corrupt layer, a diff ID mismatch) are the files'.
_TEMPORARY_LOAD_WORDS = (
    "no space left",
    "timeout",
    "temporarily unavailable",
    "too many open files",
    "connection reset",
)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _explanation(exc: Exception) -> str:
    text = getattr(exc, "explanation", None)
    return str(text) if text else str(exc)


def _load_error(message: str) -> DriverError:
    """An error event in dockerd's load stream: the files' fault, but for a full disk."""
    lowered = message.lower()
    if any(word in lowered for word in _TEMPORARY_LOAD_WORDS):
        return TemporaryError(message)
    return PermanentError(message)


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
            image_digest=ref_digest(image),
            app=app,
            generation=generation,
            spec_hash=spec_hash,
            memory_bytes=host.get("Memory") or None,
            nano_cpus=host.get("NanoCpus") or None,
            network_mode=str(host.get("NetworkMode", "")),
            restart_policy=str((host.get("RestartPolicy") or {}).get("Name", "")),
            pid=int(state["Pid"]) if running and state.get("Pid") else None,
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
        key = image_key(ref)

        def run(api: Any) -> bool:
            import docker.errors

            try:
                api.inspect_image(key)
            except docker.errors.NotFound:
                return False
            return True

        return await self._call(f"inspect image {ref}", run)

    async def load_image(self, image: LocalImage) -> str:
        validate_local_image(image)
        image_id = image.config_digest
        what = f"load image {image_id}"

        def present(api: Any) -> bool:
            import docker.errors

            try:
                data = api.inspect_image(image_id)
            except docker.errors.NotFound:
                return False
            if image.tag is not None and image.tag not in (data.get("RepoTags") or ()):
                repo, _, tag = image.tag.rpartition(":")
                api.tag(image_id, repo, tag)
            return True

        def run(api: Any) -> str:
            import docker.errors

            if present(api):
                return image_id
            # Made here, inside the retried call: a retry after a dropped connection sends
            # the archive again from its start.
            plan = ArchivePlan.of(image)
            loaded: list[str] = []
            for event in api.load_image(data=plan.stream(), quiet=False):
                if not isinstance(event, dict):
                    continue
                if event.get("errorDetail") or event.get("error"):
                    detail = event.get("errorDetail") or {}
                    raise _load_error(f"{what}: {detail.get('message') or event.get('error')}")
                text = str(event.get("stream") or "")
                if text.startswith("Loaded image ID: "):
                    loaded.append(text.removeprefix("Loaded image ID: ").strip())
            # dockerd names the image by the SHA-256 of the config bytes it got, which are the
            # bytes the plan checked: a different ID means the archive was not what was planned.
            named = image.tag if image.tag is not None else image_id
            try:
                found = str(api.inspect_image(named)["Id"])
            except docker.errors.NotFound as exc:
                raise PermanentError(f"{what}: {named} not in dockerd after the load") from exc
            if found != image_id or any(i != image_id for i in loaded):
                raise PermanentError(
                    f"{what}: dockerd loaded {', '.join(loaded) or found}, not {image_id}"
                )
            return image_id

        return await self._call(what, run)

    async def remove_image(self, image_id: str) -> None:
        validate_image_id(image_id)

        def run(api: Any) -> None:
            import docker.errors

            try:
                # Not forced: dockerd refuses (409) while a container uses the image, or when
                # it has two tags or names in two repositories (someone else's names, maybe).
                api.remove_image(image_id, force=False)
            except docker.errors.NotFound:
                return  # already gone

        await self._call(f"remove image {image_id}", run)

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
