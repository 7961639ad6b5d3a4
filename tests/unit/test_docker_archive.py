"""agent.drivers.dockerarchive: the docker-archive stream made from blob files.

The archive's members and manifest are checked by reading the stream back with ``tarfile`` in
its sequential mode (as dockerd's loader reads a request body); laziness by what the stream
has opened and allocated while it is consumed.  That dockerd loads what this makes is the
contract suite's part (tests/integration/test_docker_contract.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.drivers.containers import LocalImage
from agent.drivers.dockerarchive import CHUNK, ArchivePlan
from agent.drivers.errors import PermanentError


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Reader(io.RawIOBase):
    """A file over a generator of chunks, for ``tarfile.open(mode="r|")``."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.left:
            self.left = next(self.chunks, b"")
            if not self.left:
                return 0
        n = min(len(buffer), len(self.left))
        buffer[:n] = self.left[:n]
        self.left = self.left[n:]
        return n


def read_back(chunks: Iterator[bytes]) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=_Reader(chunks), mode="r|") as tar:
        found: list[tuple[str, bytes]] = []
        for info in tar:
            f = tar.extractfile(info)
            assert f is not None and info.isreg()
            found.append((info.name, f.read()))
        return found


def make_image(tmp_path: Path, tag: str | None = "eve/app:1") -> LocalImage:
    """A config and three layer entries: gzip'd, plain, and the gzip'd one again."""
    gz = tmp_path / "gz-layer"
    gz.write_bytes(gzip.compress(b"a tar, say" * 1000))
    plain = tmp_path / "plain-layer"
    plain.write_bytes(b"x" * 1234)  # not a multiple of the tar block: padded
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode()
    path = tmp_path / "config"
    path.write_bytes(config)
    return LocalImage(sha(config), path, (gz, plain, gz), tag)


def test_members_and_manifest(tmp_path: Path) -> None:
    image = make_image(tmp_path)
    plan = ArchivePlan.of(image)
    members = read_back(plan.stream())
    hexd = image.config_digest.removeprefix("sha256:")
    assert [name for name, _ in members] == [
        "manifest.json",
        f"{hexd}.json",
        "0/layer.tar",
        "1/layer.tar",
    ]
    contents = dict(members)
    assert json.loads(contents["manifest.json"]) == [
        {
            "Config": f"{hexd}.json",
            "RepoTags": ["eve/app:1"],
            "Layers": ["0/layer.tar", "1/layer.tar", "0/layer.tar"],  # the file once, named twice
        }
    ]
    assert contents[f"{hexd}.json"] == image.config.read_bytes()
    assert contents["0/layer.tar"] == image.layers[0].read_bytes()  # as stored: still gzip'd
    assert contents["1/layer.tar"] == image.layers[1].read_bytes()
    assert plan.size == sum(len(c) for c in plan.stream())


def test_no_tag_is_null(tmp_path: Path) -> None:
    plan = ArchivePlan.of(make_image(tmp_path, tag=None))
    assert json.loads(plan.manifest)[0]["RepoTags"] is None


def test_the_stream_is_lazy_and_bounded(tmp_path: Path) -> None:
    image = make_image(tmp_path)
    big = tmp_path / "big-layer"
    with big.open("wb") as f:  # sparse: 64 MiB on no disk
        f.truncate(64 * 1024 * 1024)
    image = LocalImage(image.config_digest, image.config, (big, *image.layers), image.tag)
    plan = ArchivePlan.of(image)

    tracemalloc.start()
    try:
        total = largest = 0
        for chunk in plan.stream(chunk=CHUNK):
            total += len(chunk)
            largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == plan.size > 64 * 1024 * 1024
    assert largest <= CHUNK
    assert peak < 4 * CHUNK  # a chunk or two in flight, not the layer


def test_a_layer_that_changes_under_the_stream_stops_it(tmp_path: Path) -> None:
    """Layers are read as the stream is consumed: a change after the start is seen."""
    image = make_image(tmp_path)
    plan = ArchivePlan.of(image)
    chunks = plan.stream()
    assert next(chunks).startswith(b"manifest.json")
    image.layers[1].write_bytes(b"x" * 100)  # shorter than planned
    with pytest.raises(PermanentError, match="short"):
        list(chunks)

    chunks = ArchivePlan.of(image).stream()
    image.layers[0].unlink()
    with pytest.raises(PermanentError, match="No such file") as info:
        list(chunks)
    assert not isinstance(info.value, OSError)  # an OSError would read as a broken connection


def test_the_plan_checks_the_files(tmp_path: Path) -> None:
    image = make_image(tmp_path)
    with pytest.raises(PermanentError, match="has digest"):
        ArchivePlan.of(LocalImage(sha(b"other"), image.config, image.layers))
    with pytest.raises(PermanentError, match=r"config .*No such file"):
        ArchivePlan.of(LocalImage(image.config_digest, tmp_path / "none", image.layers))
    with pytest.raises(PermanentError, match="not a regular file"):
        ArchivePlan.of(LocalImage(image.config_digest, image.config, (tmp_path,)))
    with pytest.raises(PermanentError, match=r"layer .*No such file"):
        ArchivePlan.of(LocalImage(image.config_digest, image.config, (tmp_path / "none",)))
    with pytest.raises(PermanentError, match="tag"):
        ArchivePlan.of(LocalImage(image.config_digest, image.config, (), tag="no tag"))
    with pytest.raises(PermanentError, match="config digest"):
        ArchivePlan.of(LocalImage("sha256:12", image.config, ()))
