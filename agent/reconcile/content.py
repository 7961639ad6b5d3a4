"""Content trees (EVE's downloader + verifier): one item per content tree the config names.

Creating the item downloads the tree into the blob store from its datastore and verifies it:
an HTTP/HTTPS datastore gives one blob (``fqdn`` + ``dpath`` + the tree's ``URL``, with the
datastore's credentials, resumable, bounded by ``maxSizeBytes``); a container registry gives an
image pulled by digest (every manifest, config and layer verified).  A mismatching blob is
downloaded again up to ``blob.download.max.retries`` times, then the tree is in error, named.
Each tree holds a reference (``ct:<uuid>``) on its blobs; deleting the item drops it, and the
blob store removes a blob nothing references after ``timer.gc.download``.

The item compares on what decides the content (digest, location, format, limits, generation);
credentials and the display name do not force a new download.  Progress is kept per tree for
the status and info reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.drivers import download as dl
from agent.drivers.errors import PermanentError
from agent.drivers.oci import ImageRef, RegistryClient
from agent.model.config import ContentTree, Datastore
from agent.model.secret import Secret
from agent.reconcile.items import (
    VAULT_READY,
    Action,
    BaseConfigurator,
    Item,
    ItemRef,
    Op,
    OwnerRef,
)
from agent.reconcile.workspace import Workspace

log = logging.getLogger(__name__)

KIND = "contenttree"

#: storage.proto's DsType values this agent downloads from.
DS_HTTP, DS_HTTPS, DS_REGISTRY = 1, 2, 5
FMT_CONTAINER = 8


@dataclass(frozen=True)
class ContentItem:
    id: str
    sha256: str
    #: An http(s) URL (no credentials, no query string kept in logs) or an image reference.
    location: str
    oci: bool
    format: int
    max_size: int
    generation: int
    name: str = field(default="", compare=False)
    username: Secret = field(default_factory=Secret, compare=False, repr=False)
    password: Secret = field(default_factory=Secret, compare=False, repr=False)
    ca_certs: tuple[bytes, ...] = field(default=(), compare=False, repr=False)

    @property
    def ref(self) -> ItemRef:
        return (KIND, self.id)

    @property
    def owner(self) -> OwnerRef:
        return (KIND, self.id)

    def deps(self) -> Iterable[ItemRef]:
        return (VAULT_READY,)

    def needs_recreate(self, old: Any) -> bool:
        return True

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id, "sha256": self.sha256, "location": self.location, "oci": self.oci,
            "format": self.format, "max_size": self.max_size, "generation": self.generation,
            "name": self.name,
        }  # fmt: skip

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> ContentItem:
        return cls(
            id=str(rec["id"]), sha256=str(rec["sha256"]), location=str(rec["location"]),
            oci=bool(rec["oci"]), format=int(rec["format"]), max_size=int(rec["max_size"]),
            generation=int(rec["generation"]), name=str(rec.get("name", "")),
        )  # fmt: skip


@dataclass(frozen=True)
class ContentResult:
    """What a loaded tree is: its verified blobs; for an image its config and layers."""

    digests: tuple[str, ...]
    #: The single blob of an HTTP tree ("" for an image).
    blob: str = ""
    config: str = ""
    layers: tuple[str, ...] = ()
    size: int = 0


def location(tree: ContentTree, ds: Datastore) -> tuple[str, bool]:
    """(location, is an image) of ``tree`` on ``ds``, as EVE builds it.  PermanentError for a
    datastore type this agent does not download from."""
    if ds.ds_type == DS_REGISTRY:
        ref = ImageRef.from_datastore(ds.fqdn, ds.dpath, tree.url, tree.sha256)
        return str(ref), True
    if ds.ds_type in (DS_HTTP, DS_HTTPS):
        base = ds.fqdn.strip().rstrip("/")
        if "://" not in base:
            base = ("https://" if ds.ds_type == DS_HTTPS else "http://") + base
        scheme = base.split("://", 1)[0].lower()
        if scheme not in ("http", "https") or not base.split("://", 1)[1]:
            raise PermanentError(f"datastore fqdn {ds.fqdn[:80]!r} is not an http(s) address")
        parts = [p.strip("/") for p in (ds.dpath, tree.url) if p.strip("/")]
        return "/".join([base, *parts]), False
    raise PermanentError(f"datastore type {ds.ds_type} is not supported (HTTP, HTTPS, OCI only)")


def render_tree(tree: ContentTree, datastores: Mapping[str, Datastore]) -> ContentItem:
    """The item of one content tree.  PermanentError when it cannot be downloaded at all (the
    caller reports it on the tree)."""
    if not tree.datastore_ids:
        raise PermanentError("content tree names no datastore")
    ds = datastores[tree.datastore_ids[0]]
    where, oci = location(tree, ds)
    if not oci and not tree.sha256:
        raise PermanentError("content tree has no sha256: HTTP content is verified by digest")
    if oci and tree.format not in (FMT_CONTAINER, 0):
        raise PermanentError("a registry datastore holds container images only")
    return ContentItem(
        id=tree.id, sha256=tree.sha256, location=where, oci=oci, format=tree.format,
        max_size=tree.max_size, generation=tree.generation, name=tree.name,
        username=ds.api_key, password=ds.password, ca_certs=ds.ca_certs,
    )  # fmt: skip


class ContentConfigurator(BaseConfigurator):
    """Downloads content trees into the workspace's blob store; see the module docstring."""

    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace
        self.results: dict[str, ContentResult] = {}
        #: tree id -> (bytes done, total or None) while a download is under way.
        self.progress: dict[str, tuple[int, int | None]] = {}
        self.loaded_at: dict[str, float] = {}

    def long_running(self, op: Op) -> bool:
        return op.action is Action.CREATE

    def timeout(self, op: Op) -> float | None:
        return self.ws.settings.download_timeout if op.action is Action.CREATE else None

    def percent(self, tree_id: str) -> int | None:
        got = self.progress.get(tree_id)
        if got is None:
            return None
        done, total = got
        return min(99, done * 100 // total) if total else None

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        if not self.ws.ready:
            return None
        store = await self.ws.blobs()
        records = await (await self.ws.records()).load(KIND)
        out: dict[ItemRef, Item] = {}
        for key, rec in records.items():
            if "result" not in rec:
                continue  # a download that was interrupted: the next create resumes it
            try:
                item = ContentItem.from_record(rec)
                result = _result_from(rec["result"])
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("content tree record %s unusable (%s)", key, exc)
                continue
            if all(store.has(d) for d in result.digests):
                out[item.ref] = item
                self.results.setdefault(item.id, result)
        return out

    async def create(self, item: ContentItem) -> None:
        store = await self.ws.blobs()
        records = await self.ws.records()
        rec = item.record()
        await records.save(KIND, item.id, rec)
        owner = f"ct:{item.id}"
        retries = self.ws.items().int("blob.download.max.retries")
        creds = dl.Credentials(item.username.reveal(), item.password.reveal())
        max_size = item.max_size or None
        ssl_ctx = dl.ssl_context(item.ca_certs) if item.ca_certs else None
        what = f"content tree {item.name or item.id}"

        def progress(done: int, total: int | None) -> None:
            self.progress[item.id] = (done, total)

        self.progress[item.id] = (0, None)
        try:
            if item.oci:
                ref = ImageRef.parse(item.location)
                client = RegistryClient(
                    self.ws.session(), ref.registry, credentials=creds, ssl_ctx=ssl_ctx
                )
                if not ref.digest:
                    ref = ref.with_digest(await client.resolve(ref))
                top = ref.digest or ""
                await store.retain(owner, top)
                pulled = await client.pull(
                    ref, store, max_size=max_size, max_retries=retries, progress=progress,
                    what=what,
                )  # fmt: skip
                for digest in pulled.digests:
                    await store.retain(owner, digest)
                result = ContentResult(
                    digests=pulled.digests,
                    config=pulled.config.digest,
                    layers=tuple(d.digest for d in pulled.layers),
                    size=pulled.size,
                )
            else:
                digest = f"sha256:{item.sha256}"
                await store.retain(owner, digest)
                await store.fetch_url(
                    self.ws.session(), digest, item.location, what=what,
                    credentials=creds, ssl_ctx=ssl_ctx, max_size=max_size,
                    max_retries=retries, progress=progress,
                )  # fmt: skip
                result = ContentResult((digest,), blob=digest, size=store.size(digest) or 0)
        finally:
            self.progress.pop(item.id, None)
        rec["result"] = {
            "digests": list(result.digests), "blob": result.blob, "config": result.config,
            "layers": list(result.layers), "size": result.size,
        }  # fmt: skip
        await records.save(KIND, item.id, rec)
        self.results[item.id] = result
        self.loaded_at[item.id] = time.time()
        log.info("%s loaded (%d blob(s), %d bytes)", what, len(result.digests), result.size)

    async def modify(self, old: ContentItem, new: ContentItem) -> None:
        raise PermanentError("content trees are recreated, never modified")  # needs_recreate

    async def delete(self, item: ContentItem) -> None:
        store = await self.ws.blobs()
        await store.release_owner(f"ct:{item.id}")
        await (await self.ws.records()).remove(KIND, item.id)
        self.results.pop(item.id, None)
        self.loaded_at.pop(item.id, None)
        self.progress.pop(item.id, None)


def _result_from(data: Any) -> ContentResult:
    if not isinstance(data, dict):
        raise ValueError("no result")
    return ContentResult(
        digests=tuple(str(d) for d in data["digests"]),
        blob=str(data.get("blob", "")),
        config=str(data.get("config", "")),
        layers=tuple(str(d) for d in data.get("layers", ())),
        size=int(data.get("size", 0)),
    )
