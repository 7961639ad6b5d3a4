"""The operator's base OS commands: ``baseos set`` (point a device at a new image) and
``baseos show`` (its partitions as the device reports them); ``device show`` prints the same
partitions.

``baseos set`` writes EVE's objects into the device's next config version: a datastore for the
image's URL (HTTP or HTTPS, the URL's directory), a content tree with the image's SHA-256
(``iformat`` RAW) and ``EdgeDevConfig.baseos`` naming it with the version the image must carry
(its ``/etc/eve-release``) and ``activate``.  ``--retry`` increases ``retry_update.counter``,
which makes a device try again a version that failed on it.

What the device reports is hostile text: every string is escaped before it is printed.
"""

from __future__ import annotations

import argparse
import re
import uuid as uuidlib
from typing import Any
from urllib.parse import urlsplit

from agent.wire.pb.config import devconfig_pb2
from controller import clusterwork, configs
from controller.admin import AdminError, _print_json, open_store, resolve_device
from controller.baseosreport import device_partitions, partitions_text
from controller.state import StateDir
from controller.store import UnknownDevice

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~:-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Namespace of the ids this command gives datastores and content trees (stable per URL).
_NAMESPACE = uuidlib.UUID("5f0c3c3e-8a43-4f0e-9a55-6b1f3e2b0a11")
#: common.DsType: HTTP 1, HTTPS 2; config.Format RAW 1.
_DS_TYPES = {"http": 1, "https": 2}
_FORMAT_RAW = 1


def add_parsers(commands: Any, common: argparse.ArgumentParser, as_json: Any) -> None:
    """Add the ``baseos`` command to the CLI's parsers."""
    baseos = commands.add_parser("baseos", help="base OS A/B updates of a device")
    cmds = baseos.add_subparsers(dest="action", required=True, metavar="ACTION")
    bset = cmds.add_parser("set", parents=[common], help="update a device to a new image")
    bset.add_argument("uuid", metavar="UUID")
    bset.add_argument("--url", required=True, help="the root image (raw ext4 or its gzip)")
    bset.add_argument("--sha256", required=True, help="of the file at the URL")
    bset.add_argument("--version", required=True, help="the image's /etc/eve-release")
    bset.add_argument(
        "--no-activate", action="store_true", help="download and verify only (activate=false)"
    )
    bset.add_argument(
        "--retry", action="store_true", help="try again a version that failed on the device"
    )
    bshow = cmds.add_parser("show", parents=[common, as_json], help="a device's partitions")
    bshow.add_argument("uuid", metavar="UUID")


def run(args: argparse.Namespace, state: StateDir) -> None:
    if args.action == "set":
        baseos_set(
            state, args.uuid, url=args.url, sha256=args.sha256, version=args.version,
            activate=not args.no_activate, retry=args.retry,
        )  # fmt: skip
    else:
        baseos_show(state, args.uuid, as_json=args.json)


def _datastore_for(url: str) -> tuple[str, str, str, int]:
    """(fqdn, dpath, file name, ds type) of an image URL; AdminError when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in _DS_TYPES or not parts.hostname or parts.query or parts.fragment:
        raise AdminError(f"--url {url!r}: an http:// or https:// URL of a file, no query")
    directory, _, name = parts.path.rpartition("/")
    if not name:
        raise AdminError(f"--url {url!r} names no file")
    return f"{parts.scheme}://{parts.netloc}", directory.strip("/"), name, _DS_TYPES[parts.scheme]


def baseos_set(
    state: StateDir,
    device_text: str,
    *,
    url: str,
    sha256: str,
    version: str,
    activate: bool,
    retry: bool,
) -> None:
    """Store the device's next config version with ``baseos`` pointing at the image."""
    if not _VERSION.match(version):
        raise AdminError(f"--version {version!r} is not a version string")
    sha = sha256.lower()
    if not _SHA256.match(sha):
        raise AdminError("--sha256 must be 64 hex digits")
    fqdn, dpath, name, ds_type = _datastore_for(url)
    ds_id = str(uuidlib.uuid5(_NAMESPACE, f"ds:{fqdn}/{dpath}"))
    tree_id = str(uuidlib.uuid5(_NAMESPACE, f"ct:{url}:{sha}"))
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        current = store.current_config(device.uuid)
        config = devconfig_pb2.EdgeDevConfig()
        if current is not None:
            config.ParseFromString(current.config)
        retries = config.baseos.retry_update.counter + (1 if retry else 0)
        kept_ds = [d for d in config.datastores if d.id != ds_id]
        del config.datastores[:]
        config.datastores.extend(kept_ds)
        config.datastores.add(id=ds_id, fqdn=fqdn, dpath=dpath, dType=ds_type)
        old_tree = config.baseos.content_tree_uuid
        kept_ct = [c for c in config.contentInfo if c.uuid not in (tree_id, old_tree)]
        del config.contentInfo[:]
        config.contentInfo.extend(kept_ct)
        tree = config.contentInfo.add(
            uuid=tree_id, displayName=f"eve-{version}"[:64], URL=name, sha256=sha,
            iformat=_FORMAT_RAW,
        )  # fmt: skip
        tree.ds_ids_list.append(ds_id)
        config.baseos.content_tree_uuid = tree_id
        config.baseos.base_os_version = version
        config.baseos.activate = activate
        config.baseos.retry_update.counter = retries
        try:
            config = clusterwork.with_cluster_part(store, state, device.uuid, config)
        except clusterwork.ClusterError as exc:
            raise AdminError(f"{device.uuid} is a cluster member: {exc}") from exc
        stamp = configs.timestamp_from_unix(store.now())
        try:
            stored = store.add_config(
                device.uuid,
                lambda v: configs.stamp(
                    config, device_uuid=device.uuid, version=v, timestamp=stamp
                ),
            )
        except UnknownDevice as exc:
            raise AdminError(str(exc)) from exc
    what = "activate" if activate else "download only"
    print(
        f"{device.uuid}: base OS {version} ({what}, retry counter {retries}) in config version "
        f"{stored.version}"
    )


def baseos_show(state: StateDir, device_text: str, *, as_json: bool) -> None:
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        report = device_partitions(store.connection, device.uuid)
        current = store.current_config(device.uuid)
    wanted: dict[str, Any] | None = None
    if current is not None:
        config = devconfig_pb2.EdgeDevConfig()
        config.ParseFromString(current.config)
        if config.HasField("baseos"):
            wanted = {
                "version": config.baseos.base_os_version,
                "activate": config.baseos.activate,
                "retry_counter": config.baseos.retry_update.counter,
            }
    if as_json:
        _print_json({"device": device.uuid, "wanted": wanted, "reported": report})
        return
    if wanted is None:
        print("wanted: - (the config names no base OS)")
    else:
        print(
            f"wanted: {wanted['version']} activate {str(wanted['activate']).lower()}, retry "
            f"counter {wanted['retry_counter']}"
        )
    if report is None:
        print("reported: nothing yet")
        return
    print(f"reported: state {report['state']}, update counter {report['update_counter']}")
    print(partitions_text(report))
