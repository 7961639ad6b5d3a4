"""Device configurations: reading an operator's file, stamping it, hashing it.

An operator writes an ``EdgeDevConfig`` as YAML or JSON in protobuf's JSON mapping (field names
in lowerCamelCase or as in the .proto, enums by name, bytes as base64, Timestamps as RFC 3339).
The controller owns three fields and overwrites whatever the file says about them:

* ``id.uuid`` - the device's UUID (EVE refuses a config for another UUID);
* ``id.version`` - a per-device counter, as a string;
* ``config_timestamp`` - when the version was made, or an operator-given time.  EVE skips a config
  older than the last one it applied, so replaying an old config needs a new timestamp, and tests
  use an old one on purpose.

One side field is not part of ``EdgeDevConfig``: ``cluster.clusterToken`` (or
``cluster.cluster_token``), the cluster join token in clear.  The API carries it only encrypted
(``EdgeNodeCluster.encrypted_cluster_token``), so :func:`read_config_file` takes it out of the
document and ``config set --encrypt-secrets`` encrypts it for the device; anywhere else it is
an error (:func:`load_config_file`).

``configHash`` is base64url(SHA-256(serialised EdgeDevConfig)), as Adam computes it.  The hash is
opaque to EVE: it only echoes it in the next ConfigRequest.  The serialised bytes are stored and
sent as they are, so the hash never depends on re-serialising.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from agent.wire.pb.config import devconfig_pb2
from controller.records import NewConfig


class ConfigFileError(ValueError):
    """The operator's file cannot become an EdgeDevConfig; the message says where and why."""


class _NoTimestampLoader(yaml.SafeLoader):
    """YAML loader that leaves ``2026-01-01T00:00:00Z`` a string.

    PyYAML would turn it into a datetime, which protobuf's JSON parser does not accept.
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


#: Names of the side field holding the clear cluster token inside ``cluster``.
CLUSTER_TOKEN_FIELDS = ("clusterToken", "cluster_token")


@dataclass(frozen=True)
class ConfigFile:
    """An operator's config file: the EdgeDevConfig, and the side field's cluster token."""

    config: devconfig_pb2.EdgeDevConfig
    cluster_token: str | None = None


def load_config_file(path: Path) -> devconfig_pb2.EdgeDevConfig:
    """Parse a YAML or JSON file into an EdgeDevConfig; unknown fields are errors, and so is
    the cluster-token side field (it can only be sent encrypted).

    Raises ConfigFileError (and OSError when the file cannot be read).
    """
    loaded = read_config_file(path)
    if loaded.cluster_token is not None:
        raise ConfigFileError(
            f"{path}: cluster.clusterToken can only be sent encrypted: use "
            "'eve-controller config set UUID FILE --encrypt-secrets'"
        )
    return loaded.config


def read_config_file(path: Path) -> ConfigFile:
    """Parse a YAML or JSON file into an EdgeDevConfig and the cluster-token side field.

    Raises ConfigFileError (and OSError when the file cannot be read).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not UTF-8 text: {exc}") from exc
    try:
        document = yaml.load(text, Loader=_NoTimestampLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML or JSON: {exc}") from exc
    document, token = _take_cluster_token(document, str(path))
    return ConfigFile(config_from_document(document, source=str(path)), token)


def _take_cluster_token(document: Any, source: str) -> tuple[Any, str | None]:
    """The document without the side field, and the token it held (None when absent)."""
    if not isinstance(document, dict) or not isinstance(document.get("cluster"), dict):
        return document, None
    cluster = dict(document["cluster"])
    found = [name for name in CLUSTER_TOKEN_FIELDS if name in cluster]
    if not found:
        return document, None
    if len(found) > 1:
        raise ConfigFileError(f"{source}: cluster has both {' and '.join(found)}")
    token = cluster.pop(found[0])
    if not isinstance(token, str) or not token:
        raise ConfigFileError(f"{source}: cluster.{found[0]} must be a non-empty string")
    return {**document, "cluster": cluster}, token


def config_from_document(document: Any, *, source: str = "config") -> devconfig_pb2.EdgeDevConfig:
    """Turn a parsed YAML/JSON document into an EdgeDevConfig.  Raises ConfigFileError."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigFileError(f"{source}: the top level must be a mapping of EdgeDevConfig fields")
    config = devconfig_pb2.EdgeDevConfig()
    try:
        json_format.ParseDict(document, config, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ConfigFileError(f"{source}: {exc}") from exc
    return config


def parse_rfc3339(text: str) -> Timestamp:
    """An RFC 3339 time (``2026-01-01T00:00:00Z``) as a protobuf Timestamp; raises ValueError."""
    stamp = Timestamp()
    try:
        stamp.FromJsonString(text)
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from exc
    return stamp


def timestamp_from_unix(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(dt.datetime.fromtimestamp(seconds, dt.UTC))
    return stamp


def config_hash(serialised: bytes) -> str:
    """base64url (padded, like Go's URLEncoding) of SHA-256 over the serialised config."""
    return base64.urlsafe_b64encode(hashlib.sha256(serialised).digest()).decode("ascii")


def stamp(
    config: devconfig_pb2.EdgeDevConfig,
    *,
    device_uuid: str,
    version: int,
    timestamp: Timestamp,
) -> NewConfig:
    """Set the controller-owned fields on a copy of ``config`` and serialise it.

    Deterministic serialisation, so equal configs give equal hashes.
    """
    stamped = devconfig_pb2.EdgeDevConfig()
    stamped.CopyFrom(config)
    stamped.id.uuid = device_uuid
    stamped.id.version = str(version)
    stamped.config_timestamp.CopyFrom(timestamp)
    data = stamped.SerializeToString(deterministic=True)
    return NewConfig(
        config=data,
        config_hash=config_hash(data),
        config_timestamp=timestamp.ToJsonString(),
    )


def default_config(
    device_uuid: str, registered_at: float, template: bytes | None = None
) -> NewConfig:
    """Version 0, made at registration: the project default ``template`` (serialised; none
    means an empty config) with the UUID, version "0" and the registration time."""
    config = devconfig_pb2.EdgeDevConfig()
    if template is not None:
        config.ParseFromString(template)
    return stamp(
        config,
        device_uuid=device_uuid,
        version=0,
        timestamp=timestamp_from_unix(registered_at),
    )


def config_to_json(serialised: bytes) -> str:
    """Stored config bytes as pretty protobuf JSON, for ``config get``."""
    config = devconfig_pb2.EdgeDevConfig()
    config.ParseFromString(serialised)
    return json.dumps(json_format.MessageToDict(config), indent=2, sort_keys=True)
