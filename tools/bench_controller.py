"""``make bench``: the controller's latency for well-behaved devices while one device floods.

A real ``eve-controller`` process (``tools.controller_load``), 20 registered and attested
devices each making a ping, config or info request every half second on its own keep-alive
connection, measured twice in the same run: alone, then while one more registered device
sends valid pings, info, config requests and log uploads as fast as it can over eight
connections (``tools.controller_hostile``, its own process).  Rows: the well-behaved p99 and
p50 beside the same without the flood (goal: p99 within 2x), and what the flooding device
managed (requests per second, how many were answered 429).  The flood's first seconds are
the device's allowed burst (600 requests, 300 uploads, 50,000 log entries) being worked off;
a second p99 leaves them out (requests made from :data:`STEADY` seconds on).

Run alone: ``.venv/bin/python tools/bench_controller.py [--seconds 20] [--devices 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.controller_load import ControllerProcess, Phase, enrol, run_phase

GOAL = 2.0
"""The well-behaved devices' p99 under the flood, at most this many times the p99 without."""

STEADY = 5.0
"""Seconds into the measured phase after which the flood is in its steady state."""

Row = tuple[str, str, str, str]


async def _measure(
    ctl: ControllerProcess, devices: int, seconds: float, workdir: Path
) -> tuple[Phase, Phase]:
    enrolled = await enrol(ctl, [f"bench-{n}" for n in range(devices)] + ["bench-flood"])
    good, flooder = enrolled[:-1], enrolled[-1]
    quiet = await run_phase(ctl, good, None, (), duration=seconds, workdir=workdir)
    flood = await run_phase(ctl, good, flooder, ("flood",), duration=seconds, workdir=workdir)
    return quiet, flood


def bench_controller(seconds: float = 20.0, devices: int = 20) -> list[Row]:
    """The rows described in the module docstring.  Raises LoadError when the controller or
    the hostile process cannot run."""
    with (
        tempfile.TemporaryDirectory(prefix="eve-bench-controller-") as tmp,
        ControllerProcess(Path(tmp)) as ctl,
    ):
        quiet, flood = asyncio.run(_measure(ctl, devices, seconds, Path(tmp)))
    ms = "{:.1f} ms".format
    rows: list[Row] = []
    for fraction, after, label in (
        (0.99, None, f"controller p99, {devices} devices (ping/config/info) while one floods "
                     f"(goal: within {GOAL:g}x)"),
        (0.99, STEADY, f"  same, from {STEADY:g} s on (past the flooder's first burst)"),
        (0.5, None, "  same, p50"),
    ):  # fmt: skip
        loaded = flood.samples.percentile(fraction, after=after)
        alone = quiet.samples.percentile(fraction, after=after)
        rows.append(
            (label, ms(loaded * 1e3), f"{ms(alone * 1e3)} (no flood)", f"{loaded / alone:.1f}x")
        )
    errors = len(flood.samples.errors) + len(quiet.samples.errors)
    if errors:
        rows.append(("  well-behaved requests that failed", str(errors), "0", ""))
    report = flood.hostile["flood"]
    refused = int(report.get("status_429", 0))
    requests = int(report["requests"])
    rows.append(
        (
            "  the flooding device (8 connections, its own process)",
            f"{report['rate']:.0f} req/s",
            f"{refused} of {requests} answered 429 ({100 * refused / max(requests, 1):.0f} %)",
            "",
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--devices", type=int, default=20, help="well-behaved devices")
    args = parser.parse_args()
    for row in bench_controller(args.seconds, args.devices):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
