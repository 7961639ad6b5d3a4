"""``eve-controller``: the command line of the reference controller.

Every command takes ``--state DIR`` (default /var/lib/eve-controller).  ``init`` makes the
certificates and the database, ``serve`` runs the device API, and the rest are admin commands
that work on the state directory directly, beside a running server (see controller.admin).
Exit status: 0 success, 1 an error the message explains, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from controller import admin, baseosadmin, clusteradmin, clusterwork, poweradmin
from controller.db import SchemaTooNew
from controller.identity import InitRefused, init_certs
from controller.listener import ServerSettings
from controller.logsafe import SafeFormatter
from controller.records import ObjectKind, ReportKind
from controller.server import DEFAULT_LISTEN, ListenAddress
from controller.state import DEFAULT_STATE_DIR, StateDir
from controller.store import Store


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --state works before the command and after it.  The copy on each command defaults to
    # SUPPRESS, otherwise argparse would overwrite a --state given before the command.
    state_help = f"state directory (default {DEFAULT_STATE_DIR})"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state", type=Path, default=argparse.SUPPRESS, metavar="DIR", help=state_help
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    parser = argparse.ArgumentParser(
        prog="eve-controller", description="Reference controller for LF Edge EVE API v2."
    )
    parser.add_argument(
        "--state", type=Path, default=DEFAULT_STATE_DIR, metavar="DIR", help=state_help
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", parents=[common], help="make certificates and database")
    init.add_argument(
        "--hostname",
        action="append",
        default=[],
        metavar="NAME",
        help="DNS name for the server certificate (repeatable)",
    )
    init.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="ADDR",
        help="IP address for the server certificate (repeatable)",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace existing certificates (devices need the new root)",
    )

    srv = commands.add_parser("serve", parents=[common], help="serve the device API over HTTPS")
    srv.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 = any free)",
    )
    srv.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    srv.add_argument(
        "--max-connections",
        type=_positive,
        default=ServerSettings.max_connections,
        metavar="N",
        help="open connections at most; idle ones are closed to make room "
        f"(default {ServerSettings.max_connections}; keep under the file descriptor limit)",
    )

    onboard = commands.add_parser("onboard", help="onboarding certificate allow-list")
    onboard_cmds = onboard.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = onboard_cmds.add_parser("add", parents=[common], help="allow an onboarding cert")
    add.add_argument("--cert", type=Path, required=True, metavar="FILE")
    which = add.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="S",
        help="serial it may register (repeatable)",
    )
    which.add_argument("--any-serial", action="store_true", help="any serial")
    onboard_cmds.add_parser("list", parents=[common, as_json], help="show the allow-list")
    rm = onboard_cmds.add_parser("remove", parents=[common], help="remove a cert or serials")
    key = rm.add_mutually_exclusive_group(required=True)
    key.add_argument("--cert", type=Path, metavar="FILE")
    key.add_argument("--sha256", metavar="HEX", help="SHA-256 of the cert DER, as listed")
    rm.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="S",
        help="remove only this serial (repeatable)",
    )

    device = commands.add_parser("device", help="registered devices")
    device_cmds = device.add_subparsers(dest="action", required=True, metavar="ACTION")
    device_cmds.add_parser("list", parents=[common, as_json], help="list devices")
    show = device_cmds.add_parser("show", parents=[common, as_json], help="one device")
    show.add_argument("uuid", metavar="UUID")
    dset = device_cmds.add_parser("set", parents=[common], help="per-device policy")
    dset.add_argument("uuid", metavar="UUID")
    tpm = dset.add_mutually_exclusive_group()
    tpm.add_argument("--require-tpm", dest="require_tpm", action="store_const", const=True)
    tpm.add_argument("--allow-no-tpm", dest="require_tpm", action="store_const", const=False)
    att = dset.add_mutually_exclusive_group()
    att.add_argument(
        "--require-attestation", dest="require_attestation", action="store_const", const=True
    )
    att.add_argument(
        "--no-attestation",
        dest="require_attestation",
        action="store_const",
        const=False,
        help="serve config without an integrity token",
    )
    dobj = device_cmds.add_parser(
        "objects",
        parents=[common, as_json],
        help="apps, network instances, volumes, content trees: state and errors",
    )
    dobj.add_argument("uuid", metavar="UUID")
    dobj.add_argument("--kind", choices=[k.value for k in ObjectKind], help="only this kind")
    drm = device_cmds.add_parser("remove", parents=[common], help="forget a device")
    drm.add_argument("uuid", metavar="UUID")

    attest = commands.add_parser("attest", help="attestation: the PCR policy of a device")
    attest_cmds = attest.add_subparsers(dest="action", required=True, metavar="ACTION")
    policy = attest_cmds.add_parser(
        "policy", parents=[common, as_json], help="show or change a device's PCR policy"
    )
    policy.add_argument("uuid", metavar="UUID")
    change = policy.add_mutually_exclusive_group()
    change.add_argument(
        "--accept-current",
        action="store_true",
        help="make the last verified quote's PCR values the golden values",
    )
    change.add_argument(
        "--reset",
        action="store_true",
        help="forget the golden values: the next verified quote sets them (trust on first use)",
    )
    change.add_argument(
        "--pcrs",
        metavar="LIST",
        help="PCRs the policy checks, e.g. 0-4,6-14 (0-15), or 'default'",
    )

    config = commands.add_parser("config", help="device configurations")
    config_cmds = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    cset = config_cmds.add_parser("set", parents=[common], help="store a new config version")
    cset.add_argument("uuid", metavar="UUID")
    cset.add_argument("file", type=Path, metavar="FILE", help="EdgeDevConfig as YAML or JSON")
    cset.add_argument("--timestamp", metavar="RFC3339", help="config_timestamp instead of now")
    cset.add_argument(
        "--encrypt-secrets",
        action="store_true",
        help="encrypt apps' userData, datastores' apiKey/password and the cluster.clusterToken "
        "side field for the device's ECDH certificate (sent when it attests)",
    )
    cget = config_cmds.add_parser("get", parents=[common], help="print a config as JSON")
    cget.add_argument("uuid", metavar="UUID")
    cget.add_argument("--version", type=int, metavar="N", help="default: the current one")
    chist = config_cmds.add_parser("history", parents=[common, as_json], help="all versions")
    chist.add_argument("uuid", metavar="UUID")
    cdef = config_cmds.add_parser(
        "default", parents=[common], help="config new devices start with (print, set, clear)"
    )
    cdef_what = cdef.add_mutually_exclusive_group()
    cdef_what.add_argument("file", type=Path, nargs="?", metavar="FILE", help="YAML or JSON")
    cdef_what.add_argument("--clear", action="store_true", help="back to an empty config")

    for kind in (ReportKind.INFO, ReportKind.METRICS, ReportKind.FLOWLOG):
        rep = commands.add_parser(
            kind.value, parents=[common, as_json], help=f"stored {kind} messages (JSON lines)"
        )
        rep.add_argument("uuid", metavar="UUID")
        rep.add_argument("--last", type=_positive, metavar="N", help="only the newest N")

    logs = commands.add_parser(
        "logs", parents=[common, as_json], help="stored log entries (JSON lines)"
    )
    logs.add_argument("uuid", metavar="UUID")
    logs.add_argument("--app", metavar="APPUUID", help="only this app instance's logs")
    logs.add_argument("--last", type=_positive, metavar="N", help="only the newest N")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    clusteradmin.add_parsers(commands, device_cmds, common, as_json)
    poweradmin.add_parsers(device_cmds, common)
    baseosadmin.add_parsers(commands, common, as_json)
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute a parsed command; raises admin.AdminError for errors meant for the operator."""
    state = StateDir(args.state)
    command = args.command
    action = getattr(args, "action", None)
    if command == "init":
        return _init(state, args)
    if command == "serve":
        return _serve(state, args)
    if clusteradmin.handles(args):
        return clusteradmin.run(state, args)
    if poweradmin.handles(args):
        return poweradmin.run(state, args)
    if command == "baseos":
        baseosadmin.run(args, state)
        return 0
    if command == "onboard":
        if action == "add":
            admin.onboard_add(state, args.cert, args.serial, args.any_serial)
        elif action == "list":
            admin.onboard_list(state, as_json=args.json)
        else:
            admin.onboard_remove(
                state, cert_file=args.cert, sha256=args.sha256, serials=args.serial
            )
    elif command == "device":
        if action == "list":
            admin.device_list(state, as_json=args.json)
        elif action == "show":
            admin.device_show(state, args.uuid, as_json=args.json)
        elif action == "objects":
            kind = ObjectKind(args.kind) if args.kind else None
            admin.device_objects(state, args.uuid, kind=kind, as_json=args.json)
        elif action == "set":
            admin.device_set(
                state,
                args.uuid,
                require_tpm=args.require_tpm,
                require_attestation=args.require_attestation,
            )
        else:
            admin.device_remove(state, args.uuid)
    elif command == "attest":
        admin.attest_policy(
            state,
            args.uuid,
            accept_current=args.accept_current,
            reset=args.reset,
            pcrs=args.pcrs,
            as_json=args.json,
        )
    elif command == "config":
        if action == "set":
            admin.config_set(
                state,
                args.uuid,
                args.file,
                timestamp=args.timestamp,
                encrypt_secrets=args.encrypt_secrets,
            )
        elif action == "get":
            admin.config_get(state, args.uuid, version=args.version)
        elif action == "default":
            admin.config_default(state, args.file, clear=args.clear)
        else:
            admin.config_history(state, args.uuid, as_json=args.json)
    elif command == "logs":
        admin.logs(state, args.uuid, app_uuid=args.app, last=args.last, follow=args.follow)
    else:
        admin.reports(state, args.uuid, ReportKind(command), last=args.last)
    return 0


def _init(state: StateDir, args: argparse.Namespace) -> int:
    try:
        made = init_certs(state, hostnames=args.hostname, ips=args.ip, force=args.force)
    except InitRefused as exc:
        raise admin.AdminError(str(exc)) from exc
    except ValueError as exc:
        raise admin.AdminError(f"bad --ip: {exc}") from exc
    Store.open(state.database).close()  # creates or migrates the schema
    if made:
        print(f"initialised {state.root}; devices must trust {state.root_cert}")
    else:
        print(f"{state.root} is already initialised (use --force to replace its certificates)")
    return 0


def _serve(state: StateDir, args: argparse.Namespace) -> int:
    # Log lines carry what peers send (paths, serials, names); the formatter keeps each record
    # on one line whatever a call site forgot to escape.
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    try:
        listen = ListenAddress.parse(args.listen)
    except ValueError as exc:
        raise admin.AdminError(f"bad --listen: {exc}") from exc
    if not state.server_cert.exists():
        raise admin.AdminError(f"no certificates in {state.certs}: run 'eve-controller init' first")
    try:
        server_settings = ServerSettings(max_connections=args.max_connections)
        asyncio.run(clusterwork.serve_with_clusters(state, listen, server_settings=server_settings))
    except OSError as exc:
        raise admin.AdminError(f"cannot serve on {args.listen}: {exc}") from exc
    except ValueError as exc:  # unreadable PEM, or a signing cert that does not chain
        raise admin.AdminError(f"certificates in {state.certs} are not usable: {exc}") from exc
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eve-controller``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except admin.AdminError as exc:
        print(f"eve-controller: error: {exc}", file=sys.stderr)
        return 1
    except (SchemaTooNew, sqlite3.Error) as exc:
        print(f"eve-controller: database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # logs --follow ends this way
        return 0


if __name__ == "__main__":
    sys.exit(main())
