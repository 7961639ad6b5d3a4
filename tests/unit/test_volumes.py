# SPDX-License-Identifier: Apache-2.0
"""agent.drivers.volumes against the real qemu-img (no root): blank disks, overlays, copies,
directories; idempotence, crash leftovers, hostile sources, typed errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.drivers import volumes
from agent.drivers.domainxml import DiskFormat
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError
from agent.drivers.volumes import VolumeKind, VolumeSpec, VolumeStore
from tests.loopwatch import LoopWatch

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")

MIB = 1 << 20
VID = "6f1b6a4c-2d3e-4f50-8a9b-0c1d2e3f4a5b"
VID2 = "0a0b0c0d-1111-4222-8333-444455556666"
PATTERN = bytes(range(256)) * 4096  # 1 MiB that is not zeros
#: For a fake qemu-img: write something to the store's temporary name among the arguments.
HALF_OUTPUT = 'for a; do case "$a" in */.tmp-*) out="$a";; esac; done\necho half > "$out"\n'


def qemu_img(*args: str | Path) -> str:
    done = subprocess.run(
        ["qemu-img", *map(str, args)], check=True, capture_output=True, text=True, timeout=30
    )
    return done.stdout


def qemu_io(command: str, path: Path) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, str(path)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def image_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(qemu_img("info", "--output=json", "-U", path))
    return info


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blob(path: Path) -> Path:
    """Read-only, as the blob store publishes its verified blobs."""
    os.chmod(path, 0o444)
    return path


@pytest.fixture
def raw_source(tmp_path: Path) -> Path:
    path = tmp_path / "blobs" / "raw-src"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(PATTERN)
    return blob(path)


@pytest.fixture
def qcow2_source(tmp_path: Path, raw_source: Path) -> Path:
    path = tmp_path / "blobs" / "qcow2-src"
    qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", raw_source, path)
    return blob(path)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[VolumeStore]:
    s = VolumeStore(tmp_path / "volumes")
    await s.open()
    yield s


def disk(size: int = 0, **kw: Any) -> VolumeSpec:
    return VolumeSpec(VID, 0, VolumeKind.DISK, size=size, **kw)


# --- making volumes ------------------------------------------------------------------------------


async def test_blank_disk_has_the_size_asked(store: VolumeStore) -> None:
    info = await store.create(disk(64 * MIB))
    assert info.path == store.root / f"{VID}#0.qcow2" == store.path(VID, 0, VolumeKind.DISK)
    assert (info.format, info.virtual_size, info.backing) == ("qcow2", 64 * MIB, None)
    actual = image_info(info.path)
    assert (actual["format"], actual["virtual-size"]) == ("qcow2", 64 * MIB)
    assert "backing-filename" not in actual
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert await store.usage(VID, 0) == (64 * MIB, info.path.stat().st_blocks * 512)


@pytest.mark.parametrize(
    ("kind", "fmt"),
    [("raw", DiskFormat.RAW), ("raw", None), ("qcow2", DiskFormat.QCOW2), ("qcow2", None)],
)
async def test_overlay_pins_its_absolute_backing_and_leaves_the_source_alone(
    store: VolumeStore, raw_source: Path, qcow2_source: Path, kind: str, fmt: DiskFormat | None
) -> None:
    source = raw_source if kind == "raw" else qcow2_source
    before = sha256(source)
    info = await store.create(disk(8 * MIB, source=source, source_format=fmt))
    assert info.backing == source and source.is_absolute()
    actual = image_info(info.path)
    assert actual["backing-filename"] == str(source)
    assert actual["backing-filename-format"] == kind  # pinned (detected when not given)
    assert actual["virtual-size"] == info.virtual_size == 8 * MIB  # grown from the source's 1 MiB
    # The guest's writes go to the overlay; the source, and what reads through, stay as they were.
    qemu_io("write -P 0xab 0 64k", info.path)
    assert sha256(source) == before
    flat = store.root.parent / "flat.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", info.path, flat)
    data = flat.read_bytes()
    assert data[: 64 * 1024] == b"\xab" * 64 * 1024
    assert data[64 * 1024 : MIB] == PATTERN[64 * 1024 :]
    assert len(data) == 8 * MIB


async def test_overlay_is_never_shrunk_below_its_source(
    store: VolumeStore, raw_source: Path
) -> None:
    info = await store.create(disk(4096, source=raw_source))
    assert info.virtual_size == MIB


async def test_full_copy_has_no_backing_and_the_same_content(
    store: VolumeStore, raw_source: Path, qcow2_source: Path, loop_watch: LoopWatch
) -> None:
    info = await store.create(disk(2 * MIB, source=raw_source, copy=True))
    assert (info.backing, info.virtual_size) == (None, 2 * MIB)
    other = await store.create(VolumeSpec(VID2, 0, VolumeKind.DISK, source=qcow2_source, copy=True))
    assert (other.backing, other.virtual_size) == (None, MIB)
    await store.delete(VID, 0)  # the copy stands alone: its source may go
    assert [v.volume_id for v in await store.list()] == [VID2]


async def test_copy_content_matches_the_source(store: VolumeStore, qcow2_source: Path) -> None:
    info = await store.create(disk(source=qcow2_source, copy=True))
    assert "backing-filename" not in image_info(info.path)
    qemu_img("compare", "-f", "qcow2", "-F", "qcow2", qcow2_source, info.path)  # exit 0: same


async def test_dir_volume_is_an_empty_private_directory(store: VolumeStore) -> None:
    info = await store.create(VolumeSpec(VID, 3, VolumeKind.DIR))
    assert info.path == store.root / f"{VID}#3.dir"
    assert (info.format, info.kind, info.virtual_size, info.backing) == ("dir", "dir", 0, None)
    assert info.path.is_dir() and list(info.path.iterdir()) == []
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o700
    (info.path / "data").write_bytes(b"x" * 100_000)
    maximum, used = await store.usage(VID, 3)
    assert maximum == 0 and used >= 100_000
    assert (await store.info(VID, 3)).actual_size == used


# --- idempotence, generations, deletion, listing --------------------------------------------------


async def test_create_again_returns_the_volume_as_is(store: VolumeStore, raw_source: Path) -> None:
    first = await store.create(disk(4 * MIB, source=raw_source))
    before = first.path.stat()
    again = await store.create(disk(4 * MIB, source=raw_source))
    after = first.path.stat()
    assert again == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    d1 = await store.create(VolumeSpec(VID2, 0, VolumeKind.DIR))
    assert await store.create(VolumeSpec(VID2, 0, VolumeKind.DIR)) == d1


async def test_the_other_kind_under_the_same_key_is_refused(store: VolumeStore) -> None:
    await store.create(disk(MIB))
    with pytest.raises(PermanentError, match=f"{VID}#0 exists as a disk volume"):
        await store.create(VolumeSpec(VID, 0, VolumeKind.DIR))


async def test_a_generation_is_a_volume_of_its_own(store: VolumeStore) -> None:
    g0 = await store.create(disk(MIB))
    g1 = await store.create(VolumeSpec(VID, 1, VolumeKind.DISK, size=2 * MIB))
    assert g0.path != g1.path and g1.virtual_size == 2 * MIB
    await store.delete(VID, 0)
    assert [(v.volume_id, v.generation) for v in await store.list()] == [(VID, 1)]
    with pytest.raises(NotFoundError):
        await store.info(VID, 0)


async def test_delete_removes_trees_and_absent_is_success(store: VolumeStore) -> None:
    await store.delete(VID, 0)
    info = await store.create(VolumeSpec(VID, 0, VolumeKind.DIR))
    (info.path / "a" / "b").mkdir(parents=True)
    (info.path / "a" / "b" / "f").write_text("x")
    outside = store.root.parent / "outside"
    outside.write_text("kept")
    os.symlink(outside, info.path / "link")
    os.chmod(info.path / "a", 0o500)  # read-only, as a container may leave it
    await store.delete(VID, 0)
    await store.delete(VID, 0)
    assert list(store.root.iterdir()) == []
    assert outside.read_text() == "kept"  # a link is removed, never followed


async def test_list_ignores_foreign_and_temporary_entries(store: VolumeStore) -> None:
    made = [await store.create(disk(MIB)), await store.create(VolumeSpec(VID2, 2, VolumeKind.DIR))]
    (store.root / "README").write_text("not a volume")
    (store.root / f"{VID}#0.raw").write_bytes(b"")  # a format we never make
    (store.root / f"{VID}#7.qcow2").mkdir()  # a disk name on a directory
    (store.root / f"{VID.upper()}#0.dir").mkdir()  # not canonical
    (store.root / f".tmp-{VID}#9.qcow2").write_bytes(b"half")
    (store.root / f".tmp-{VID2}#9.dir").mkdir()
    assert await store.list() == sorted(made, key=lambda v: v.volume_id)


async def test_open_removes_what_interrupted_creates_and_deletes_left(tmp_path: Path) -> None:
    root = tmp_path / "volumes"
    root.mkdir()
    (root / f".tmp-{VID}#0.qcow2").write_bytes(b"half a disk")
    (root / f".tmp-rm-{VID}#1.dir" / "sub").mkdir(parents=True)
    (root / "foreign").write_text("kept")
    store = VolumeStore(root)
    await store.open()
    assert sorted(p.name for p in root.iterdir()) == ["foreign"]
    assert await store.list() == []


# --- refused input and typed failures -------------------------------------------------------------


async def test_a_source_that_refers_to_other_files_is_refused(
    store: VolumeStore, tmp_path: Path, raw_source: Path
) -> None:
    hostile = tmp_path / "blobs" / "hostile"
    qemu_img("create", "-q", "-u", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", hostile, "1M")
    for fmt in (None, DiskFormat.QCOW2):
        for copy in (False, True):
            with pytest.raises(PermanentError, match=f"{VID}#0.*has a backing file"):
                await store.create(disk(source=blob(hostile), source_format=fmt, copy=copy))
    data_file = tmp_path / "blobs" / "data-file"
    qemu_img(
        "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'x.raw'}", data_file, "1M"
    )
    with pytest.raises(PermanentError, match="has a data file"):
        await store.create(disk(source=blob(data_file)))
    assert list(store.root.iterdir()) == []


async def test_source_format_is_detected_and_others_are_refused(
    store: VolumeStore, tmp_path: Path
) -> None:
    vdi = tmp_path / "blobs" / "image.vdi"
    vdi.parent.mkdir(exist_ok=True)
    qemu_img("create", "-q", "-f", "vdi", vdi, "1M")
    with pytest.raises(PermanentError, match="is a vdi image, not qcow2 or raw"):
        await store.create(disk(source=blob(vdi)))
    # Pinned as raw, the same bytes are only data: accepted, and QEMU never parses them.
    info = await store.create(disk(source=vdi, source_format=DiskFormat.RAW))
    assert image_info(info.path)["backing-filename-format"] == "raw"


async def test_a_source_format_that_is_wrong_fails_with_qemu_imgs_words(
    store: VolumeStore, raw_source: Path
) -> None:
    with pytest.raises(
        PermanentError, match=f"{VID}#0: qemu-img info exited with status 1: .*not in qcow2 format"
    ):
        await store.create(disk(source=raw_source, source_format=DiskFormat.QCOW2))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (VolumeSpec("../x", 0, VolumeKind.DISK, size=MIB), "not a canonical UUID"),
        (VolumeSpec(VID.upper(), 0, VolumeKind.DISK, size=MIB), "not a canonical UUID"),
        (VolumeSpec(VID, -1, VolumeKind.DISK, size=MIB), "invalid generation"),
        (VolumeSpec(VID, 0, VolumeKind.DISK), "blank disk needs a size"),
        (VolumeSpec(VID, 0, VolumeKind.DISK, size=-1), "negative size"),
        (VolumeSpec(VID, 0, VolumeKind.DISK, source=Path("/nonexistent/blob")), "cannot read"),
        (VolumeSpec(VID, 0, VolumeKind.DISK, source=Path("/")), "cannot read|not a regular"),
        (VolumeSpec(VID, 0, VolumeKind.DIR, source=Path("/etc/hostname")), "cannot have a source"),
    ],
)
async def test_bad_specs_are_permanent_errors(
    store: VolumeStore, spec: VolumeSpec, message: str
) -> None:
    with pytest.raises(PermanentError, match=message):
        await store.create(spec)
    assert list(store.root.iterdir()) == []
    assert store.root.parent.joinpath("x").exists() is False


async def test_queries_name_the_missing_volume(store: VolumeStore) -> None:
    with pytest.raises(NotFoundError, match=f"{VID}#4 not found"):
        await store.info(VID, 4)
    with pytest.raises(NotFoundError):
        await store.usage(VID, 4)
    with pytest.raises(PermanentError):
        await store.info("../../etc", 0)


async def test_a_copy_without_room_is_refused_early(
    store: VolumeStore, raw_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(volumes, "_free_bytes", lambda directory: 4096)
    with pytest.raises(TemporaryError, match=r"not enough space: need \d+, have 4096"):
        await store.create(disk(source=raw_source, copy=True))
    assert list(store.root.iterdir()) == []
    await store.create(disk(source=raw_source))  # an overlay needs no room up front


async def test_a_full_file_system_is_temporary_and_leaves_nothing(tmp_path: Path) -> None:
    # qemu-img as it fails on a full disk: the half-written output exists, then the error.
    fake = tmp_path / "qemu-img"
    fake.write_text(
        f"#!/bin/sh\n{HALF_OUTPUT}"
        'echo "qemu-img: $out: error while writing: No space left on device" >&2\nexit 1\n'
    )
    fake.chmod(0o755)
    store = VolumeStore(tmp_path / "volumes", qemu_img=str(fake))
    await store.open()
    with pytest.raises(TemporaryError, match=f"{VID}#0: no space left"):
        await store.create(disk(MIB))
    assert list(store.root.iterdir()) == []


async def test_a_missing_qemu_img_is_permanent(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "volumes", qemu_img=str(tmp_path / "no-qemu-img"))
    await store.open()
    with pytest.raises(PermanentError, match="cannot run"):
        await store.create(disk(MIB))


async def test_create_before_open_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="open"):
        await VolumeStore(tmp_path).create(disk(MIB))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
async def test_an_unreadable_source_is_permanent(store: VolumeStore, raw_source: Path) -> None:
    os.chmod(raw_source, 0)
    with pytest.raises(PermanentError, match="cannot read the source"):
        await store.create(disk(source=raw_source))


async def test_a_cancelled_create_leaves_nothing(tmp_path: Path) -> None:
    # qemu-img stuck after it started writing its output: cancelling kills it, and the
    # half-made volume goes with it.
    fake = tmp_path / "qemu-img"
    fake.write_text(f"#!/bin/sh\n{HALF_OUTPUT}exec sleep 30\n")
    fake.chmod(0o755)
    store = VolumeStore(tmp_path / "volumes", qemu_img=str(fake))
    await store.open()
    task = asyncio.create_task(store.create(disk(MIB)))
    tmp = store.root / f".tmp-{VID}#0.qcow2"
    for _ in range(1000):
        if await asyncio.to_thread(tmp.exists):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the fake qemu-img never wrote the temporary volume")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(lambda: list(store.root.iterdir())) == []
