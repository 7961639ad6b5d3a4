"""The container runtime interface: :class:`ContainerRuntime`, the values it takes and returns,
and the rules every implementation shares (names, ownership labels, spec validation), so the real
driver (:mod:`agent.drivers.docker`) and the fake (:mod:`agent.drivers.docker_fake`) cannot
drift apart.  See :mod:`agent.drivers.docker` for the ownership and error contract.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from agent.drivers.errors import PermanentError

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
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ENV_KEY_RE = re.compile(r"^[^=\x00]+$")
_SLUG_RE = re.compile(r"[^a-zA-Z0-9.-]")
_REPO_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
#: ``[host[:port]/]repo/path:tag``: what dockerd's loader takes as a tag.
_TAG_RE = re.compile(
    rf"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_REPO_PART}(?:/{_REPO_PART})*"
    r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
)


# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BindMount:
    """A host directory or file bound into the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class LocalImage:
    """An image whose blobs are already on this host, verified (the blob store's files), to be
    loaded into the runtime without a download.

    ``config_digest`` is the ``sha256:<hex>`` of the config blob: the image ID the runtime gives
    the image (Docker's image ID is the config's digest).  ``config`` is that blob's file,
    ``layers`` the layer blobs' files in manifest order, as stored (gzip-compressed tar or plain
    tar).  ``tag``, a ``repo:tag``, names the image in the runtime when given."""

    config_digest: str
    config: Path
    layers: tuple[Path, ...]
    tag: str | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """What one container should be.  ``name`` is the node-local name (the runtime adds the
    node's prefix); ``image`` is a ref with a digest (``repo@sha256:...``) or an image ID
    (``sha256:<hex>``, as :meth:`ContainerRuntime.load_image` returns); ``env`` and ``labels``
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
    from and ``image_digest`` the ``sha256:`` digest in that ref (the image ID itself when the
    container was made from an image ID)."""

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
    #: The init process's PID while it runs (its network namespace is /proc/<pid>/ns/net,
    #: where the network reconciler moves the app's interfaces); None when not running.
    pid: int | None = None


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
        """Whether the image is present locally: ``ref`` is ``repo@sha256:...`` (by manifest
        digest) or an image ID ``sha256:<hex>``."""

    async def load_image(self, image: LocalImage) -> str:
        """Load ``image`` from its files; returns the image ID, ``image.config_digest``.

        Idempotent: when the runtime has an image with that ID already, it returns at once
        without reading the files (only adding ``image.tag`` when that is missing).  Raises
        :class:`PermanentError` for an invalid ``image``, a missing or unreadable file, a
        config whose digest is not ``config_digest`` (checked before the runtime is asked),
        layers that do not match the config (the runtime refuses them: no image is made and
        nothing is named ``tag``), or a loaded image whose ID is not ``config_digest``; a
        :class:`TemporaryError` when the runtime is unreachable or out of disk."""

    async def remove_image(self, image_id: str) -> None:
        """Remove the image ``sha256:<hex>`` with every name it has.  An image that is not
        there is success; one that a container (running or not) still uses, or that has two tags
        or names in two repositories, is a :class:`TemporaryError` with the runtime's reason."""

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
    if not sep or not repo or not DIGEST_RE.match(digest):
        raise PermanentError(f"image ref {ref!r} has no sha256 digest: images are pulled by digest")
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:  # a tag beside the digest: the digest decides
        repo = repo[: len(repo) - len(last)] + last.split(":", 1)[0]
    return repo, digest


def is_image_id(ref: str) -> bool:
    """Whether ``ref`` is an image ID (``sha256:<64 hex>``) rather than a ``repo@...`` ref."""
    return DIGEST_RE.match(ref) is not None


def image_key(ref: str) -> str:
    """What the runtime knows the image by: an image ID as it is, ``repo@sha256:...`` for a
    ref (a tag beside the digest dropped); PermanentError for a ref without a digest."""
    if is_image_id(ref):
        return ref
    repo, digest = split_ref(ref)
    return f"{repo}@{digest}"


def ref_digest(image: str) -> str | None:
    """The ``sha256:`` digest in a container's image ref, or the image ID; None otherwise."""
    digest = image.rpartition("@")[2]
    return digest if DIGEST_RE.match(digest) else None


def validate_image_id(image_id: str) -> None:
    """PermanentError unless ``image_id`` is ``sha256:<64 hex>``: images are removed by ID."""
    if not is_image_id(image_id):
        raise PermanentError(f"image ID {image_id!r}: want sha256:<64 hex digits>")


def validate_local_image(image: LocalImage) -> None:
    """PermanentError naming what is wrong with ``image`` (its files are checked on load)."""
    if not is_image_id(image.config_digest):
        raise PermanentError(
            f"local image: config digest {image.config_digest!r}: want sha256:<64 hex digits>"
        )
    if image.tag is not None and not _TAG_RE.match(image.tag):
        raise PermanentError(f"local image {image.config_digest}: tag {image.tag!r}: want repo:tag")


def validate_spec(spec: ContainerSpec) -> None:
    """PermanentError naming what is wrong with ``spec``."""
    if not _NAME_RE.match(spec.name):
        raise PermanentError(f"container name {spec.name!r}: want [a-zA-Z0-9][a-zA-Z0-9.-]*")
    image_key(spec.image)
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
