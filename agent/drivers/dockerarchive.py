"""A :class:`~agent.drivers.containers.LocalImage` as a docker-archive (``docker save``) tar,
made as a stream of bytes from the blob files, for dockerd's image load (``POST /images/load``).

The archive holds ``manifest.json``::

    [{"Config": "<config hex>.json", "RepoTags": ["repo:tag"] or null,
      "Layers": ["0/layer.tar", "1/layer.tar", ...]}]

then the config and the layer files as they are stored: dockerd's loader decompresses a gzip'd
layer itself and checks every layer against the config's ``rootfs.diff_ids``, so the chain of
trust is the config's digest (checked here, on the very bytes sent) and dockerd's diff ID check.
Layer members are named by position; a file listed twice is sent once and named twice.

Nothing is copied: :meth:`ArchivePlan.stream` yields the tar a chunk at a time, reading each
layer file as it goes, so memory stays at one chunk whatever the layers' size, and no tar of
the image is ever written to disk.  The plan (:meth:`ArchivePlan.of`) does the checks that can
fail before a byte is sent: the config's size and digest, each layer a regular file.  A layer
that changes under the stream (shorter than planned, unreadable) stops it with a
:class:`PermanentError` (never an ``OSError``: the HTTP client would take that for a broken
connection), and the loader, getting a cut archive, loads nothing.

All of this is file I/O: call it in a worker thread, never on the event loop.
"""

from __future__ import annotations

import hashlib
import json
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.drivers.containers import LocalImage, validate_local_image
from agent.drivers.errors import PermanentError

#: Bytes read from a layer file (and yielded) at a time.
CHUNK = 1024 * 1024
#: The largest config read: configs are JSON of a few KiB (history makes them grow, slowly).
MAX_CONFIG = 8 * 1024 * 1024
MANIFEST_NAME = "manifest.json"
_BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class LayerMember:
    """One layer file in the archive: its member name and the size it is sent with."""

    name: str
    path: Path
    size: int


@dataclass(frozen=True)
class ArchivePlan:
    """What the archive of one image holds; :meth:`of` checks, :meth:`stream` sends."""

    image: LocalImage
    config: bytes
    manifest: bytes
    layers: tuple[LayerMember, ...]  # each distinct file once, in first-use order

    @classmethod
    def of(cls, image: LocalImage) -> ArchivePlan:
        """Read and check the config, stat the layers.  PermanentError for an invalid image,
        a missing, unreadable or oversized config or one whose SHA-256 is not
        ``config_digest``, or a layer that is not a readable regular file."""
        validate_local_image(image)
        what = f"image {image.config_digest}"
        config = _read_config(image.config, what)
        actual = "sha256:" + hashlib.sha256(config).hexdigest()
        if actual != image.config_digest:
            raise PermanentError(
                f"{what}: config {image.config} has digest {actual}, not {image.config_digest}"
            )
        members: dict[Path, LayerMember] = {}
        for path in image.layers:
            if path not in members:
                size = _regular_size(path, f"{what}: layer")
                members[path] = LayerMember(f"{len(members)}/layer.tar", path, size)
        manifest = [
            {
                "Config": _config_name(image),
                "RepoTags": [image.tag] if image.tag is not None else None,
                "Layers": [members[path].name for path in image.layers],
            }
        ]
        body = json.dumps(manifest, separators=(",", ":")).encode()
        return cls(image, config, body, tuple(members.values()))

    @property
    def size(self) -> int:
        """The archive's length in bytes, exactly what :meth:`stream` yields."""
        total = 2 * _BLOCK  # the end-of-archive blocks
        for length in (len(self.manifest), len(self.config), *(m.size for m in self.layers)):
            total += _BLOCK + _padded(length)
        return total

    def stream(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """The tar, lazily: nothing is opened before the generator is iterated, and a layer is
        read ``chunk`` bytes at a time as the consumer asks.  PermanentError when a layer file
        is gone, unreadable, or shorter than when planned."""
        yield _header(MANIFEST_NAME, len(self.manifest)) + _pad(self.manifest)
        yield _header(_config_name(self.image), len(self.config)) + _pad(self.config)
        what = f"image {self.image.config_digest}"
        for member in self.layers:
            yield _header(member.name, member.size)
            yield from _file_chunks(member, chunk, what)
            if member.size % _BLOCK:
                yield bytes(_BLOCK - member.size % _BLOCK)
        yield bytes(2 * _BLOCK)


def _config_name(image: LocalImage) -> str:
    return image.config_digest.removeprefix("sha256:") + ".json"


def _read_config(path: Path, what: str) -> bytes:
    size = _regular_size(path, f"{what}: config")
    if size > MAX_CONFIG:
        raise PermanentError(f"{what}: config {path} is {size} bytes, above {MAX_CONFIG}")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG + 1)
    except OSError as exc:
        raise PermanentError(f"{what}: config {path}: {exc}") from exc
    if len(data) > MAX_CONFIG:
        raise PermanentError(f"{what}: config {path} grew above {MAX_CONFIG} bytes")
    return data


def _regular_size(path: Path, what: str) -> int:
    try:
        st = path.stat()
    except OSError as exc:
        raise PermanentError(f"{what} {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise PermanentError(f"{what} {path}: not a regular file")
    return st.st_size


def _file_chunks(member: LayerMember, chunk: int, what: str) -> Iterator[bytes]:
    left = member.size
    try:
        with member.path.open("rb") as f:
            while left > 0:
                data = f.read(min(chunk, left))
                if not data:
                    raise PermanentError(
                        f"{what}: layer {member.path} ended {left} bytes short of the "
                        f"{member.size} planned: changed while loading"
                    )
                left -= len(data)
                yield data
    except OSError as exc:
        raise PermanentError(f"{what}: layer {member.path}: {exc}") from exc


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    # GNU format: a layer above 8 GiB gets a base-256 size field instead of failing.
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _padded(length: int) -> int:
    return -(-length // _BLOCK) * _BLOCK


def _pad(data: bytes) -> bytes:
    return data + bytes(_padded(len(data)) - len(data))
