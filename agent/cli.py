"""``eve-agent``: run a node, or show its status."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from agent import status as status_mod
from agent.daemon import Node, install_signal_handlers
from agent.link.identity import IdentityError
from agent.settings import AgentSettings, NodePaths


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eve-agent", description="LF Edge EVE-compatible node agent")
    p.add_argument(
        "--root", type=Path, help="node root (config/, persist/, run/); default /config, /persist"
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the node agent in the foreground")
    run.add_argument(
        "--no-tpm", action="store_true", help="software keys, no attestation quote, no vault"
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    st = sub.add_parser("status", help="show the node's state")
    st.add_argument("--json", action="store_true", help="print the raw status as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths = NodePaths.from_root(args.root)
    if args.command == "status":
        data = status_mod.read(paths.status_file)
        if data is None:
            print(
                f"no status at {paths.status_file}: the agent has not run on this node",
                file=sys.stderr,
            )
            return 1
        print(json.dumps(data, indent=1, sort_keys=True) if args.json else status_mod.render(data))
        return 0
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.no_tpm:
        # The TPM driver lands with the attestation issue; until then refuse to pretend.
        logging.getLogger("eve-agent").error(
            "no TPM support in this build yet: run with --no-tpm (explicit software mode)"
        )
        return 2
    settings = AgentSettings(paths=paths, no_tpm=True)
    return asyncio.run(_run(settings))


async def _run(settings: AgentSettings) -> int:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await Node(settings).run(stop)
    except IdentityError as exc:
        logging.getLogger("eve-agent").error("cannot start: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
