"""An OCI distribution client: pull an image by digest into the blob store, verified.

EVE pulls a container content tree from a ``DsContainerRegistry`` datastore by the digest the
controller gives (``ContentTree.sha256``); a tag alone is resolved only when the content tree
has no digest (EVE's resolver), and here only when the caller asks for it explicitly
(:meth:`RegistryClient.resolve`).  :meth:`RegistryClient.pull` refuses a reference without a
digest.

- **Manifests**: OCI image index and image manifest, Docker schema 2 manifest list and
  manifest.  From an index the ``linux/amd64`` manifest is taken (the platform is a parameter).
  Every manifest is read whole (at most 4 MiB, as Docker's limit), its SHA-256 checked against
  the digest that named it, then stored in the blob store like any blob.
- **Blobs** (config and layers) go through :meth:`BlobStore.fetch` with the download machinery
  of :mod:`agent.drivers.download`: resumable, hashed, verified, deduplicated, bounded per
  registry host.  Each blob is bounded by its descriptor's size, the whole image (manifests,
  config and layers) by ``max_size``, checked before a layer is fetched.
- **Auth**: anonymous first; a ``401`` with ``WWW-Authenticate: Bearer realm=...,service=...,
  scope=...`` gets a token from the realm (with the registry's basic credentials when there
  are some), a ``Basic`` challenge gets the credentials.  Tokens are cached per scope and fetched
  again once when a request with one is refused.
- **Transport**: HTTPS, with the registry's CA certificates or the system's; plain HTTP for a
  loopback registry (127.0.0.1, ::1, localhost), or any when ``plain_http`` says so.

Errors are the typed ones of :mod:`agent.drivers.errors`: a refused or missing manifest, a
digest mismatch (:class:`~agent.drivers.blobstore.DigestMismatch`), an unknown media type, no
manifest for the platform, an image above ``max_size``: permanent; transport trouble and 5xx:
temporary.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp

from agent.drivers import download as dl
from agent.drivers.blobstore import DEFAULT_MAX_RETRIES, BlobStore, DigestMismatch
from agent.drivers.blobstore import normalize_digest as _hex
from agent.drivers.errors import PermanentError, TemporaryError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
#: The largest manifest read (Docker's own limit).
MAX_MANIFEST = 4 * 1024 * 1024
DOCKER_HUB = "registry-1.docker.io"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_LOOPBACK = ("127.0.0.1", "::1", "[::1]", "localhost")


@dataclass(frozen=True)
class ImageRef:
    """``registry/repository[:tag][@sha256:hex]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse a reference; a first component without a dot, colon or ``localhost`` means
        Docker Hub (``library/`` for a one-component name).  PermanentError when invalid."""
        rest = text.strip()
        for prefix in ("docker://", "oci://"):
            if rest.startswith(prefix):
                rest = rest[len(prefix) :]
        digest = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            digest = digest.lower()
            if not _DIGEST.match(digest):
                raise PermanentError(f"image reference {text!r}: bad digest {digest!r}")
        first, _, remainder = rest.partition("/")
        if remainder and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        tag = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
            if not _TAG.match(tag):
                raise PermanentError(f"image reference {text!r}: bad tag {tag!r}")
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if not _REPO.match(path):
            raise PermanentError(f"image reference {text!r}: bad repository {path!r}")
        return cls(registry, path, tag, digest)

    @classmethod
    def from_datastore(cls, fqdn: str, dpath: str, url: str, sha256: str = "") -> ImageRef:
        """The reference EVE makes from a registry datastore (``fqdn``, ``dpath``) and a content
        tree (``URL``, ``sha256``: the digest wins over a tag in the URL)."""
        host = fqdn.strip()
        for prefix in ("docker://", "oci://", "https://", "http://"):
            if host.startswith(prefix):
                host = host[len(prefix) :]
        host = host.rstrip("/")
        if host in ("index.docker.io", "docker.io"):
            host = DOCKER_HUB
        path = "/".join(p.strip("/") for p in (dpath, url) if p.strip("/"))
        ref = cls.parse(f"{host}/{path}")
        if sha256:
            ref = ref.with_digest(f"sha256:{_hex(sha256)}")
        return ref

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, self.tag, f"sha256:{_hex(digest)}")

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, data: Any, what: str) -> Descriptor:
        if not isinstance(data, dict):
            raise PermanentError(f"{what}: descriptor is not an object")
        digest, size = data.get("digest"), data.get("size")
        if not isinstance(digest, str) or not _DIGEST.match(digest.lower()):
            raise PermanentError(f"{what}: descriptor with a bad digest {digest!r}")
        if not isinstance(size, int) or size < 0:
            raise PermanentError(f"{what}: descriptor {digest} with a bad size {size!r}")
        platform = data.get("platform")
        return cls(
            str(data.get("mediaType", "")),
            digest.lower(),
            size,
            platform if isinstance(platform, dict) else None,
        )


@dataclass(frozen=True)
class PulledImage:
    """An image whose every blob is verified in the store.  ``digest`` is the one pulled (an
    index's when it was one); ``manifest_digest`` the platform's image manifest."""

    ref: ImageRef
    digest: str
    manifest_digest: str
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    size: int

    @property
    def digests(self) -> tuple[str, ...]:
        """Every blob of the image in the store: for the caller's references."""
        found = [self.digest, self.manifest_digest, self.config.digest]
        found += [layer.digest for layer in self.layers]
        return tuple(dict.fromkeys(found))


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, params = header.strip().partition(" ")
    found = {
        m.group(1).lower(): m.group(2) or m.group(3) or ""
        for m in _CHALLENGE_PARAM.finditer(params)
    }
    return scheme.lower(), found


class RegistryClient:
    """One registry (``host[:port]``) with its credentials; see the module docstring."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        registry: str,
        *,
        credentials: dl.Credentials | None = None,
        ssl_ctx: ssl.SSLContext | None = None,
        plain_http: bool | None = None,
        timeouts: dl.Timeouts | None = None,
    ) -> None:
        self.session = session
        self.registry = registry
        self.credentials = credentials or dl.Credentials()
        self.ssl_ctx = ssl_ctx
        host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
        if plain_http is None:
            plain_http = host in _LOOPBACK or registry.startswith("[::1]")
        self.base = f"{'http' if plain_http else 'https'}://{registry}"
        self.timeouts = timeouts or dl.Timeouts()
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False  # the registry asked for basic auth

    # --- auth -----------------------------------------------------------------------------------

    def _auth_header(self, scope: str) -> dict[str, str]:
        token = self._tokens.get(scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.credentials:
            value = dl.Credentials(self.credentials.username, self.credentials.password).header()
            return {"Authorization": value} if value else {}
        return {}

    async def _authenticate(self, challenge: str, scope: str, what: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials or self._basic:
                raise PermanentError(f"{what}: registry {self.registry} refused the credentials")
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise PermanentError(f"{what}: unsupported authentication challenge {challenge!r}")
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        url = params["realm"] + ("&" if "?" in params["realm"] else "?")
        url += urlencode({k: v for k, v in query.items() if v})
        headers: dict[str, str] = {}
        if self.credentials.username or self.credentials.password:
            basic = dl.Credentials(self.credentials.username, self.credentials.password).header()
            headers["Authorization"] = basic or ""
        try:
            async with self.session.get(
                url, headers=headers, ssl=self._ssl_for(url), timeout=self.timeouts.client_timeout()
            ) as resp:
                if resp.status != 200:
                    raise await dl.status_error(resp, f"{what}: token from {dl.redact_url(url)}")
                body = await resp.json(content_type=None)
        except (PermanentError, TemporaryError):
            raise
        except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError) as exc:
            raise dl.transport_error(exc, f"{what}: token request") from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise PermanentError(f"{what}: the token service gave no token")
        self._tokens[scope] = token

    def _ssl_for(self, url: str) -> ssl.SSLContext | bool:
        if url.startswith("http://"):
            return False
        return self.ssl_ctx if self.ssl_ctx is not None else True

    def _scope(self, repository: str) -> str:
        return f"repository:{repository}:pull"

    # --- manifests ------------------------------------------------------------------------------

    async def _get_manifest(
        self, repository: str, reference: str, what: str, method: str = "GET"
    ) -> tuple[bytes, str, str | None]:
        """(body, media type, Docker-Content-Digest) of a manifest; retries once after auth."""
        url = f"{self.base}/v2/{repository}/manifests/{reference}"
        scope = self._scope(repository)
        for attempt in range(3):
            headers = {"Accept": ACCEPT, **self._auth_header(scope)}
            try:
                async with self.session.request(
                    method, url, headers=headers, ssl=self._ssl_for(url),
                    timeout=self.timeouts.client_timeout(), allow_redirects=True,
                ) as resp:  # fmt: skip
                    if resp.status == 401 and attempt < 2:
                        challenge = resp.headers.get("WWW-Authenticate", "")
                        self._tokens.pop(scope, None)
                        if not challenge:
                            raise PermanentError(f"{what}: registry refused access (HTTP 401)")
                        await self._authenticate(challenge, scope, what)
                        continue
                    if resp.status != 200:
                        raise await dl.status_error(resp, f"{what}: manifest {reference}")
                    length = resp.content_length
                    if length is not None and length > MAX_MANIFEST:
                        raise PermanentError(f"{what}: manifest of {length} bytes is too large")
                    body = b""
                    if method == "GET":
                        body = await resp.content.read(MAX_MANIFEST + 1)
                        if len(body) > MAX_MANIFEST:
                            raise PermanentError(f"{what}: manifest is too large")
                    media = resp.headers.get("Content-Type", "").split(";")[0].strip()
                    return body, media, resp.headers.get("Docker-Content-Digest")
            except (PermanentError, TemporaryError):
                raise
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise dl.transport_error(exc, f"{what}: manifest {reference}") from exc
        raise PermanentError(f"{what}: registry {self.registry} refused access")

    async def resolve(self, ref: ImageRef) -> str:
        """The digest a tag names now (``sha256:...``), for a content tree without a digest:
        only when asked explicitly.  The digest is computed from the manifest's bytes."""
        if ref.digest:
            return ref.digest
        what = str(ref)
        body, _media, _header = await self._get_manifest(ref.repository, ref.tag or "latest", what)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    async def manifest(self, ref: ImageRef, digest: str) -> tuple[bytes, str, dict[str, Any]]:
        """A manifest by digest, verified: (bytes, media type, parsed JSON)."""
        what = str(ref)
        body, media, _header = await self._get_manifest(ref.repository, digest, what)
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if actual != digest:
            raise DigestMismatch(
                f"{what}: manifest digest mismatch: expected {digest}, got {actual}",
                _hex(digest),
                _hex(actual),
                1,
            )
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise PermanentError(f"{what}: manifest {digest} is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise PermanentError(f"{what}: manifest {digest} is not a JSON object")
        media = str(doc.get("mediaType") or media)
        if media not in INDEX_TYPES + MANIFEST_TYPES:
            if "manifests" in doc:
                media = OCI_INDEX
            elif "layers" in doc and "config" in doc:
                media = OCI_MANIFEST
            else:
                raise PermanentError(f"{what}: unsupported manifest media type {media!r}")
        return body, media, doc

    # --- blobs ----------------------------------------------------------------------------------

    def _fetcher(self, repository: str, desc: Descriptor, what: str, store: BlobStore) -> Any:
        url = f"{self.base}/v2/{repository}/blobs/{desc.digest}"
        scope = self._scope(repository)

        async def fetch(partial: Path, report: dl.ProgressCallback) -> dl.DownloadResult:
            for attempt in range(2):
                try:
                    return await dl.download(
                        self.session, url, partial, max_size=desc.size,
                        headers=self._auth_header(scope), ssl_ctx=self._blob_ssl(),
                        timeouts=self.timeouts, progress=report, reserve=store.reserve,
                        executor=store.executor, what=f"{what}: blob {desc.digest}",
                    )  # fmt: skip
                except PermanentError as exc:
                    if attempt or "HTTP 401" not in str(exc):
                        raise
                    await self._challenge(url, scope, what)
            raise PermanentError(f"{what}: registry refused access to blob {desc.digest}")

        return fetch

    def _blob_ssl(self) -> ssl.SSLContext | None:
        return self.ssl_ctx

    async def _challenge(self, url: str, scope: str, what: str) -> None:
        """Ask for the challenge again (a token ran out) and authenticate."""
        self._tokens.pop(scope, None)
        try:
            async with self.session.head(
                urljoin(url, "/v2/"), ssl=self._ssl_for(url), timeout=self.timeouts.client_timeout()
            ) as resp:
                challenge = resp.headers.get("WWW-Authenticate", "")
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise dl.transport_error(exc, f"{what}: auth challenge") from exc
        if not challenge:
            raise PermanentError(f"{what}: registry refused access (HTTP 401)")
        await self._authenticate(challenge, scope, what)

    async def pull(
        self,
        ref: ImageRef,
        store: BlobStore,
        *,
        max_size: int | None = None,
        platform: tuple[str, str] = ("linux", "amd64"),
        max_retries: int = DEFAULT_MAX_RETRIES,
        progress: dl.ProgressCallback | None = None,
        what: str | None = None,
    ) -> PulledImage:
        """Pull ``ref`` (it must carry a digest) into ``store``; every manifest and blob
        verified.  ``progress(bytes, total)`` covers the config and layers together."""
        name = what or str(ref)
        if not ref.digest:
            raise PermanentError(f"{name}: no digest: images are pulled by digest only")
        if ref.registry != self.registry:
            raise ValueError(f"{ref} is not on {self.registry}")
        top = ref.digest
        body, media, doc = await self.manifest(ref, top)
        await store.put_bytes(top, body, what=f"{name}: manifest")
        total = len(body)
        manifest_digest = top
        if media in INDEX_TYPES:
            chosen = _pick_platform(doc, platform, name)
            manifest_digest = chosen.digest
            body, media, doc = await self.manifest(ref, manifest_digest)
            await store.put_bytes(manifest_digest, body, what=f"{name}: manifest")
            total += len(body)
            if media in INDEX_TYPES:
                raise PermanentError(f"{name}: nested index {manifest_digest} is not supported")
        config = Descriptor.parse(doc.get("config"), name)
        raw_layers = doc.get("layers")
        if not isinstance(raw_layers, list):
            raise PermanentError(f"{name}: manifest {manifest_digest} has no layer list")
        layers = tuple(Descriptor.parse(layer, name) for layer in raw_layers)
        blobs = list(dict.fromkeys((config, *layers)))
        total += sum(d.size for d in blobs)
        if max_size is not None and total > max_size:
            raise dl.ContentTooLarge(
                f"{name}: image of {total} bytes is more than the maximum size of {max_size} bytes",
                max_size,
            )
        await self._fetch_blobs(ref, store, blobs, name, max_retries, progress)
        return PulledImage(ref, top, manifest_digest, media, config, layers, total)

    async def _fetch_blobs(
        self,
        ref: ImageRef,
        store: BlobStore,
        blobs: list[Descriptor],
        name: str,
        max_retries: int,
        progress: dl.ProgressCallback | None,
    ) -> None:
        grand_total = sum(d.size for d in blobs)
        done: dict[str, int] = {}

        def watcher(digest: str) -> Callable[[int, int | None], None]:
            def report(n: int, _total: int | None) -> None:
                done[digest] = n
                if progress is not None:
                    progress(sum(done.values()), grand_total)

            return report

        async def one(desc: Descriptor) -> None:
            await store.fetch(
                desc.digest, self._fetcher(ref.repository, desc, name, store),
                host=self.registry, what=name, max_retries=max_retries, max_size=desc.size,
                progress=watcher(desc.digest),
            )  # fmt: skip
            size = store.size(desc.digest)
            if size != desc.size:
                raise PermanentError(
                    f"{name}: blob {desc.digest} is {size} bytes, the manifest says {desc.size}"
                )
            done[desc.digest] = desc.size

        try:
            async with asyncio.TaskGroup() as group:
                for desc in blobs:
                    group.create_task(one(desc))
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None
        if progress is not None:
            progress(grand_total, grand_total)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise for failed parallel fetches: a permanent one first (it decides the
    retry policy), then a temporary one, then whatever came first."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            flat.append(exc)
    for kind in (PermanentError, TemporaryError):
        for exc in flat:
            if isinstance(exc, kind):
                return exc
    return flat[0]


def _pick_platform(doc: Mapping[str, Any], platform: tuple[str, str], name: str) -> Descriptor:
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise PermanentError(f"{name}: index without a manifest list")
    want_os, want_arch = platform
    for entry in entries:
        desc = Descriptor.parse(entry, name)
        plat = desc.platform or {}
        if plat.get("os") == want_os and plat.get("architecture") == want_arch:
            return desc
    raise PermanentError(f"{name}: no manifest for {want_os}/{want_arch} in the index")


__all__ = [
    "ACCEPT",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "ImageRef",
    "PulledImage",
    "RegistryClient",
    "parse_challenge",
]
