"""Volumes (EVE's volumemgr): one item per volume the config names.

A volume is made from what its apps need:

- ``image``: a volume from a container image (an OCI content tree) is the container's root: the
  verified image is loaded into dockerd from the blob store (no second download);
- ``disk``: a VM disk, a qcow2 overlay on the verified blob of its content tree (or a blank
  qcow2 of ``maxsizebytes``), grown to the size the config gives;
- ``dir``: a blank volume of a container app, a directory mounted at the app's ``mount_dir``.

Disks and directories live in the vault (:class:`agent.drivers.volumes.VolumeStore`).  Every
volume depends on the vault condition, so nothing is made while the vault is locked.

A new ``generationCount`` or a purge of the app that uses it makes a fresh volume (the engine
deletes the old one first; the app on it is recreated with it).  A volume that a restarted
agent finds on disk and no config names yet is kept for ``timer.gc.vdisk`` before it is
deleted, as EVE's volumemgr keeps unclaimed volumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.drivers import volumes as vdrv
from agent.drivers.containers import ContainerRuntime, LocalImage
from agent.drivers.domainxml import DiskFormat
from agent.drivers.errors import PermanentError, TemporaryError
from agent.reconcile import content
from agent.reconcile.items import VAULT_READY, Action, BaseConfigurator, Item, ItemRef, Op, OwnerRef
from agent.reconcile.workspace import Workspace

log = logging.getLogger(__name__)

KIND = "volume"
IMAGE, DISK, DIR = "image", "disk", "dir"
#: storage.proto Format values for disks.
FMT_RAW, FMT_QCOW2 = 1, 3


@dataclass(frozen=True)
class VolumeItem:
    id: str
    generation: int
    #: The purge counter of the app using it: a purge makes a fresh volume.
    purge: int
    vkind: str
    tree: str = ""
    #: What the content tree holds (its digest or location): a new image is a new volume.
    tree_content: str = ""
    tree_format: int = 0
    #: Bytes; only grows in place (a smaller size is kept as it is).
    size: int = 0
    readonly: bool = False
    name: str = field(default="", compare=False)

    @property
    def ref(self) -> ItemRef:
        return (KIND, self.id)

    @property
    def owner(self) -> OwnerRef:
        return (KIND, self.id)

    def deps(self) -> Iterable[ItemRef]:
        deps: list[ItemRef] = [VAULT_READY]
        if self.tree:
            deps.append((content.KIND, self.tree))
        return deps

    def needs_recreate(self, old: Any) -> bool:
        if not isinstance(old, VolumeItem):
            return True
        return _identity(old) != _identity(self)

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id, "generation": self.generation, "purge": self.purge,
            "vkind": self.vkind, "tree": self.tree, "tree_content": self.tree_content,
            "tree_format": self.tree_format, "size": self.size, "readonly": self.readonly,
            "name": self.name,
        }  # fmt: skip

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> VolumeItem:
        return cls(
            id=str(rec["id"]), generation=int(rec["generation"]), purge=int(rec["purge"]),
            vkind=str(rec["vkind"]), tree=str(rec["tree"]),
            tree_content=str(rec["tree_content"]), tree_format=int(rec["tree_format"]),
            size=int(rec["size"]), readonly=bool(rec["readonly"]), name=str(rec.get("name", "")),
        )  # fmt: skip


def _identity(item: VolumeItem) -> tuple[Any, ...]:
    return (item.generation, item.purge, item.vkind, item.tree, item.tree_content,
            item.tree_format, item.readonly)  # fmt: skip


@dataclass(frozen=True)
class MadeVolume:
    """What a created volume is, for the apps on it."""

    item: VolumeItem
    path: Path | None = None
    image_id: str = ""
    created: float = 0.0
    #: Whether this volume put the image into dockerd (one that was there before, pulled by
    #: someone else, is never removed by us).
    owns_image: bool = False


class VolumeConfigurator(BaseConfigurator):
    """Makes volumes; see the module docstring."""

    def __init__(
        self,
        workspace: Workspace,
        contents: content.ContentConfigurator,
        containers: ContainerRuntime,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ws = workspace
        self.contents = contents
        self.containers = containers
        self._clock = clock
        self.made: dict[str, MadeVolume] = {}
        #: Volumes this run made or was asked for: observed without the unclaimed hold-off.
        self._claimed: set[str] = set()

    def long_running(self, op: Op) -> bool:
        # Loading an image or copying a disk can take minutes.
        return op.action is Action.CREATE

    def timeout(self, op: Op) -> float | None:
        return self.ws.settings.download_timeout if op.action is Action.CREATE else None

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        if not self.ws.ready:
            return None
        store = await self.ws.volumes()
        records = await (await self.ws.records()).load(KIND)
        on_disk = {(v.volume_id, v.generation): v for v in await store.list()}
        hold = self._clock() - self.ws.started < self.ws.items().int("timer.gc.vdisk")
        out: dict[ItemRef, Item] = {}
        for key, rec in records.items():
            try:
                item = VolumeItem.from_record(rec)
                image_id = str(rec.get("image_id", ""))
                owns_image = bool(rec.get("owns_image", False))
                done = bool(rec.get("done", False))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("volume record %s unusable (%s)", key, exc)
                continue
            if not done:
                continue  # an interrupted create: the next create finishes or redoes it
            if item.vkind == IMAGE:
                exists = await self.containers.has_image(image_id)
            else:
                exists = (item.id, item.generation) in on_disk
            if not exists:
                continue
            if hold and item.id not in self._claimed:
                continue  # unclaimed after a restart: not touched before timer.gc.vdisk
            made = on_disk.get((item.id, item.generation))
            self.made.setdefault(
                item.id,
                MadeVolume(
                    item,
                    path=made.path if made is not None else None,
                    image_id=image_id,
                    created=made.created if made is not None else 0.0,
                    owns_image=owns_image,
                ),
            )
            out[item.ref] = item
        return out

    def claim(self, volume_ids: Iterable[str]) -> None:
        """The config names these volumes: observe them without the hold-off."""
        self._claimed.update(volume_ids)

    async def create(self, item: VolumeItem) -> None:
        records = await self.ws.records()
        rec = item.record()
        await records.save(KIND, item.id, rec)
        if item.vkind == IMAGE:
            made = await self._load_image(item)
            rec["image_id"] = made.image_id
            rec["owns_image"] = made.owns_image
        else:
            made = await self._make_file(item)
        rec["done"] = True
        await records.save(KIND, item.id, rec)
        self.made[item.id] = made
        self._claimed.add(item.id)

    async def _load_image(self, item: VolumeItem) -> MadeVolume:
        result = self._content(item)
        if not result.config:
            raise PermanentError(f"content tree {item.tree} is not a container image")
        blobs = await self.ws.blobs()
        image = LocalImage(
            config_digest=result.config,
            config=blobs.path(result.config),
            layers=tuple(blobs.path(d) for d in result.layers),
            tag=None,
        )
        records = await (await self.ws.records()).load(KIND)
        ours = any(
            r.get("owns_image") and r.get("image_id") == result.config for r in records.values()
        )
        # An image dockerd had before (pulled by someone else) stays theirs: never removed.
        owns = ours or not await self.containers.has_image(result.config)
        image_id = await self.containers.load_image(image)
        log.info("volume %s: image %s loaded", item.name or item.id, image_id)
        return MadeVolume(item, image_id=image_id, created=time.time(), owns_image=owns)

    def _content(self, item: VolumeItem) -> content.ContentResult:
        result = self.contents.results.get(item.tree)
        if result is None:
            # The engine creates the tree first; a missing result means it was lost meanwhile.
            raise PermanentError(f"content tree {item.tree} is not loaded")
        return result

    async def _make_file(self, item: VolumeItem) -> MadeVolume:
        store = await self.ws.volumes()
        if item.vkind == DIR:
            spec = vdrv.VolumeSpec(item.id, item.generation, vdrv.VolumeKind.DIR)
        else:
            source: Path | None = None
            fmt: DiskFormat | None = None
            if item.tree:
                result = self._content(item)
                if not result.blob:
                    raise PermanentError(
                        f"content tree {item.tree} is a container image, not a disk"
                    )
                blobs = await self.ws.blobs()
                # The overlay reads the blob for as long as the volume lives.
                await blobs.retain(f"vol:{item.id}", result.blob)
                source = blobs.path(result.blob)
                fmt = {FMT_RAW: DiskFormat.RAW, FMT_QCOW2: DiskFormat.QCOW2}.get(item.tree_format)
            elif item.size <= 0:
                raise PermanentError("a blank volume needs maxsizebytes")
            spec = vdrv.VolumeSpec(
                item.id, item.generation, vdrv.VolumeKind.DISK, size=item.size,
                source=source, source_format=fmt,
            )  # fmt: skip
        info = await store.create(spec)
        log.info("volume %s: %s %s ready", item.name or item.id, info.kind.value, info.path)
        return MadeVolume(item, path=info.path, created=info.created)

    async def modify(self, old: VolumeItem, new: VolumeItem) -> None:
        # Only the size differs (anything else recreates).  EVE grows a volume on purge; the
        # new size is recorded and used when the volume is made again.
        if new.size != old.size:
            log.info("volume %s: size %d -> %d applies when it is purged",
                     new.name or new.id, old.size, new.size)  # fmt: skip
        records = await self.ws.records()
        rec = new.record()
        made = self.made.get(new.id)
        rec["image_id"] = made.image_id if made else ""
        rec["owns_image"] = made.owns_image if made else False
        rec["done"] = True
        await records.save(KIND, new.id, rec)
        if made is not None:
            self.made[new.id] = MadeVolume(
                new, made.path, made.image_id, made.created, made.owns_image
            )

    async def _remove_image(self, item: VolumeItem, image_id: str) -> None:
        """Remove a loaded image unless something that is not ours still uses it.

        Images are shared by ID on the host: another node (or the operator) may run a container
        from the same image.  Our own containers are gone before their volume (the engine
        deletes dependents first); a conflict that none of ours explains is left to its owner.
        """
        try:
            await self.containers.remove_image(image_id)
        except TemporaryError as exc:
            ours = await self.containers.list_owned()
            if any(c.image_digest == image_id for c in ours):
                raise
            log.info("volume %s: image %s left in place, used outside this node: %s",
                     item.name or item.id, image_id, exc)  # fmt: skip

    async def delete(self, item: VolumeItem) -> None:
        records = await self.ws.records()
        made = self.made.get(item.id)
        if item.vkind == IMAGE:
            image_id = made.image_id if made else ""
            owns = made.owns_image if made else False
            if not image_id:
                rec = (await records.load(KIND)).get(item.id, {})
                image_id = str(rec.get("image_id", ""))
                owns = bool(rec.get("owns_image", False))
            shared = any(m.image_id == image_id for k, m in self.made.items() if k != item.id)
            if image_id and owns and not shared:
                await self._remove_image(item, image_id)
        else:
            store = await self.ws.volumes()
            await store.delete(item.id, item.generation)
            blobs = await self.ws.blobs()
            await blobs.release_owner(f"vol:{item.id}")
        await records.remove(KIND, item.id)
        self.made.pop(item.id, None)
