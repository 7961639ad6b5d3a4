"""A small, bounded reader of a Kubernetes API: what a K3s VM app's kubeconfig lets the agent
read (nodes, pods), over HTTPS, from the node's network namespace.

The VM is an app, so everything from it is hostile: the kubeconfig is data (YAML, safe-loaded,
at most :data:`MAX_KUBECONFIG` bytes; only its current context's cluster and user are used:
the CA in ``certificate-authority-data``, and a client certificate and key or a bearer token),
and the API's answers are capped (:data:`MAX_BODY`), timed out and parsed as JSON objects.  The
server's host in the kubeconfig is not dialled (K3s writes ``127.0.0.1``): the caller says
which address the VM has, and TLS verifies the API's certificate against the kubeconfig's CA
and that address (K3s puts the node's IP and ``tls-san`` in its serving certificate).

Requests run in one worker thread that lives in the namespace (``http.client``), so the event
loop never blocks and sockets are made where the VM's network is.  Errors are typed: a
:class:`KubeConfigError` (ValueError) for a kubeconfig that cannot be used, TemporaryError for
what may pass (no answer, a 5xx, a timeout), PermanentError for what will not (a 4xx, an answer
too big or not JSON, a certificate that does not verify).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import http.client
import json
import os
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from agent.drivers.errors import PermanentError, TemporaryError
from agent.drivers.netns import enter, netns_path, ns_id

#: EVE's KubeconfigFileSizeLimitInBytes.
MAX_KUBECONFIG = 32768
#: The largest API answer read (a node list of a big cluster is well under this).
MAX_BODY = 4 * 1024 * 1024
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 10.0


class KubeConfigError(ValueError):
    """A kubeconfig the agent cannot use; the message says why (never its secrets)."""


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise KubeConfigError(f"{what} missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KubeConfigError(f"{what} is not base64") from None


def _named(doc: dict[str, Any], kind: str, name: object) -> dict[str, Any]:
    entries = doc.get(kind + "s")
    if not isinstance(entries, list) or not entries:
        raise KubeConfigError(f"no {kind}s")
    for entry in entries:
        if (
            isinstance(entry, dict)
            and entry.get("name") == name
            and isinstance(entry.get(kind), dict)
        ):
            return entry[kind]  # type: ignore[no-any-return]
    first = entries[0]
    if name is None and isinstance(first, dict) and isinstance(first.get(kind), dict):
        return first[kind]  # type: ignore[no-any-return]
    raise KubeConfigError(f"no {kind} named {str(name)[:64]!r}")


@dataclass(frozen=True)
class KubeConfig:
    """What the agent uses of a kubeconfig."""

    port: int
    ca_pem: bytes = field(repr=False)
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, data: bytes) -> KubeConfig:
        """Raises KubeConfigError naming what is wrong."""
        if len(data) > MAX_KUBECONFIG:
            raise KubeConfigError(f"larger than {MAX_KUBECONFIG} bytes")
        try:
            doc = yaml.safe_load(data.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError, RecursionError):  # RecursionError: nesting
            raise KubeConfigError("not YAML") from None
        if not isinstance(doc, dict):
            raise KubeConfigError("not a mapping")
        context: dict[str, Any] = {}
        current = doc.get("current-context")
        if current is not None:
            context = _named(doc, "context", current)
        cluster = _named(doc, "cluster", context.get("cluster"))
        user = _named(doc, "user", context.get("user"))
        server = cluster.get("server")
        if not isinstance(server, str):
            raise KubeConfigError("cluster server missing")
        try:
            parts = urlsplit(server)
        except ValueError:  # an unbalanced IPv6 bracket, say
            raise KubeConfigError("the API server is not a URL") from None
        if parts.scheme != "https":
            raise KubeConfigError("the API server is not https")
        try:
            port = parts.port or 443
        except ValueError:
            raise KubeConfigError("the API server's port is invalid") from None
        ca = _b64(cluster.get("certificate-authority-data"), "certificate-authority-data")
        token = user.get("token")
        if isinstance(token, str) and token and token.isprintable() and len(token) < 4096:
            return cls(port, ca, token=token)
        cert = _b64(user.get("client-certificate-data"), "client-certificate-data")
        key = _b64(user.get("client-key-data"), "client-key-data")
        return cls(port, ca, cert, key)

    def ssl_context(self) -> ssl.SSLContext:
        """TLS that trusts only the kubeconfig's CA, with its client certificate.  Raises
        KubeConfigError when the PEMs do not load."""
        # Not create_default_context: that trusts the system CAs too; only this CA is the VM's.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its name
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError):
            raise KubeConfigError("certificate-authority-data is not a PEM certificate") from None
        if self.cert_pem is not None and self.key_pem is not None:
            # In memory: a file that exists only as this descriptor (the key never on disk).
            fd = os.memfd_create("kubeconfig-client", os.MFD_CLOEXEC)
            try:
                os.write(fd, self.cert_pem + b"\n" + self.key_pem)
                ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            except (ssl.SSLError, OSError):
                raise KubeConfigError("the client certificate or key does not load") from None
            finally:
                os.close(fd)
        return ctx


class KubeApi:
    """Reads a Kubernetes API from the namespace ``netns`` (None: the process's own)."""

    def __init__(self, netns: str | None = None) -> None:
        self._path = None if netns is None else netns_path(netns)
        self._entered: tuple[int, int] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kubeapi")

    async def get(self, config: KubeConfig, host: str, path: str) -> dict[str, Any]:
        """The JSON object at ``path`` of the API server at ``host`` (an IP address; the port
        is the kubeconfig's).  See the module docstring for the errors."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, config, host, path)

    def _call(self, config: KubeConfig, host: str, path: str) -> dict[str, Any]:
        # Entered on first use, and again when the namespace was made anew (a failed entry
        # is an error of this call, not a broken worker).
        if self._path is not None and (self._entered is None or ns_id(self._path) != self._entered):
            self._entered = enter(self._path)
        return _get(config, host, path)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _get(config: KubeConfig, host: str, path: str) -> dict[str, Any]:
    where = f"https://{host}:{config.port}{path}"
    ctx = config.ssl_context()
    conn = http.client.HTTPSConnection(host, config.port, timeout=CONNECT_TIMEOUT, context=ctx)
    headers = {"Accept": "application/json"}
    if config.token is not None:
        headers["Authorization"] = f"Bearer {config.token}"
    try:
        conn.request("GET", path, headers=headers)
        if conn.sock is not None:
            conn.sock.settimeout(READ_TIMEOUT)
        response = conn.getresponse()
        body = response.read(MAX_BODY + 1)
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(f"{where}: the API's certificate: {exc.verify_message}") from exc
    except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
        raise TemporaryError(f"{where}: {exc or type(exc).__name__}", retry_after=10) from exc
    finally:
        conn.close()
    if response.status >= 500:
        raise TemporaryError(f"{where}: HTTP {response.status}", retry_after=10)
    if response.status != 200:
        raise PermanentError(f"{where}: HTTP {response.status}")
    if len(body) > MAX_BODY:
        raise PermanentError(f"{where}: answer larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
    except ValueError:
        raise PermanentError(f"{where}: answer is not JSON") from None
    if not isinstance(doc, dict):
        raise PermanentError(f"{where}: answer is not a JSON object")
    return doc
