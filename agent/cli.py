"""``eve-agent``: run a node, show its status, or drive an emulated node's power."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from agent import status as status_mod
from agent.boot import BootError, TpmMode, boot, poweroff
from agent.daemon import Node
from agent.drivers.tpm import TpmError
from agent.link.identity import IdentityError
from agent.settings import AgentSettings, NodePaths
from agent.util.supervise import install_signal_handlers

log = logging.getLogger("eve-agent")
DEVICE_TPM = Path("/dev/tpmrm0")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eve-agent", description="LF Edge EVE-compatible node agent")
    p.add_argument(
        "--root", type=Path, help="node root (config/, persist/, run/); default /config, /persist"
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the node agent in the foreground"),
        ("boot", "only the boot step: TPM, measured boot, config measurement"),
    ):
        cmd = sub.add_parser(name, help=text)
        mode = cmd.add_mutually_exclusive_group()
        mode.add_argument(
            "--no-tpm",
            action="store_true",
            help="explicit software mode: keys on disk, empty quote, no vault",
        )
        mode.add_argument(
            "--swtpm",
            action="store_true",
            help="emulated node: its own swtpm with state in persist/tpm",
        )
        mode.add_argument("--tcti", help="TPM TCTI (default device:/dev/tpmrm0 when present)")
        cmd.add_argument("--log-level", default="info",
                         choices=["debug", "info", "warning", "error"])  # fmt: skip
        cmd.add_argument("--no-workloads", action="store_true",
                         help="run no apps (no dockerd or libvirtd needed)")  # fmt: skip
        cmd.add_argument("--node-name", default="",
                         help="names this node's containers and domains on the host")  # fmt: skip
        cmd.add_argument("--netns", default=None,
                         help="run the node's network instances in this network namespace "
                              "(an emulated node's own; it must exist)")  # fmt: skip
        cmd.add_argument("--flowlog-interval", type=float, default=120.0, metavar="SECONDS",
                         help="seconds between flow log reports (EVE: 120)")  # fmt: skip
        cmd.add_argument("--no-networks", action="store_true",
                         help="run no network instances (the default for an emulated node "
                              "under --root without --netns: the host's namespace is not "
                              "the node's)")  # fmt: skip
    st = sub.add_parser("status", help="show the node's state")
    st.add_argument("--json", action="store_true", help="print the raw status as JSON")
    sub.add_parser("poweroff", help="emulated node: stop its swtpm (PCRs reset at next start)")
    return p


def _tpm_mode(args: argparse.Namespace) -> TpmMode | None:
    if args.no_tpm:
        return TpmMode.NONE
    if args.swtpm:
        return TpmMode.SWTPM
    if args.tcti or DEVICE_TPM.exists():
        return TpmMode.DEVICE
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths = NodePaths.from_root(args.root)
    if args.command == "status":
        data = status_mod.read(paths.status_file)
        if data is None:
            print(f"no status at {paths.status_file}: the agent has not run here", file=sys.stderr)
            return 1
        print(json.dumps(data, indent=1, sort_keys=True) if args.json else status_mod.render(data))
        return 0
    if args.command == "poweroff":
        print("powered off" if poweroff(paths) else "was not running")
        return 0
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pyroute2 logs every netlink message at debug level: far too much for the node's log.
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    mode = _tpm_mode(args)
    if mode is None:
        # Never a silent fallback to software keys: the operator must say so.
        log.error("no TPM at %s: pass --no-tpm for software mode, or --swtpm", DEVICE_TPM)
        return 2
    settings = AgentSettings(
        paths=paths, tpm=mode.value, tcti=args.tcti, workloads=not args.no_workloads,
        node_name=args.node_name, netns=args.netns, flowlog_interval=args.flowlog_interval,
        networks=not args.no_networks and (args.root is None or args.netns is not None),
    )  # fmt: skip
    if args.command == "boot":
        if mode is TpmMode.NONE:
            log.error("boot measures into a TPM; there is nothing to do with --no-tpm")
            return 2
        try:
            result = boot(paths, mode, agent_version=settings.version, tcti=args.tcti)
        except (BootError, TpmError) as exc:
            log.error("boot failed: %s", exc)
            return 2
        result.tpm.close()
        return 0 if result.boot.ok and result.config.ok else 1
    return asyncio.run(_run(settings))


async def _run(settings: AgentSettings) -> int:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await Node(settings).run(stop)
    except (IdentityError, BootError, TpmError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
