"""``make fuzz``: drive every parser of outside bytes (tests/fuzz/targets.py) with many inputs.

Each target gets an equal share of ``--inputs`` (default 1,000,000 in all) or of ``--seconds``,
whichever ends first, in a plain loop: a seeded random mutator of valid inputs and
structure-aware generators (tests/fuzz/mutate.py), not Hypothesis (its generation is far too
slow for millions of inputs).  A crash is an input that breaks the target's contract: an
exception other than the parser's declared errors, or more than ``--timeout`` seconds for one
input (a hang), or MemoryError under the address-space limit (``--max-memory-mb``; unbounded
allocation).  Each crash is counted; the first of each kind (exception type and innermost
frame) is printed with its input in hex and its traceback, and every distinct crashing input is
saved under ``build/fuzz/crashes/<target>-<sha256>.bin`` (and ``.txt``, the traceback).

The report goes to ``build/fuzz-report.json``: per target inputs, seconds, inputs/s, crashes;
and the total.  ``make bench`` shows its total.  Exit status 1 when anything crashed.

    tools/fuzz.py                        # 10^6 inputs over all targets
    tools/fuzz.py --inputs 20000         # a quick run
    tools/fuzz.py --seconds 60 --target controller.newlogs --target tcg.event_log
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import logging
import random
import resource
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fuzz.targets import BY_NAME, TARGETS, Target, check, generate  # noqa: E402

REPORT = REPO / "build" / "fuzz-report.json"
CRASHES = REPO / "build" / "fuzz" / "crashes"
DEFAULT_INPUTS = 1_000_000
#: One input taking longer than this is a hang (parsers here take micro- to milliseconds).
DEFAULT_TIMEOUT = 10.0
#: Inputs printed in hex up to this many bytes (the saved file has all of them).
_HEX_SHOWN = 512


class Hang(BaseException):
    """Raised by the alarm in the middle of an input that took too long.  A BaseException, so
    a parser's ``except Exception`` cannot swallow it."""


@dataclass
class Result:
    name: str
    inputs: int = 0
    seconds: float = 0.0
    crashes: int = 0
    kinds: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, object]:
        return {
            "inputs": self.inputs,
            "seconds": round(self.seconds, 3),
            "inputs_per_second": round(self.inputs / self.seconds, 1) if self.seconds else 0.0,
            "crashes": self.crashes,
            "unique_crashes": len(self.kinds),
        }


def _kind(exc: BaseException) -> str:
    """What makes two crashes the same: the exception type and the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} at {where}"


@contextlib.contextmanager
def _alarm(timeout: float) -> Iterator[None]:
    """SIGALRM raises Hang ``timeout`` seconds after each ``signal.setitimer``; only in the main
    thread (elsewhere hangs are not detected)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(_sig: int, _frame: FrameType | None) -> None:
        raise Hang(f"one input took more than {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _record(
    target: Target, data: bytes, exc: BaseException, result: Result, out: Path | None, quiet: bool
) -> None:
    result.crashes += 1
    kind = _kind(exc)
    tb = "".join(traceback.format_exception(exc))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{target.name}-{hashlib.sha256(data).hexdigest()[:16]}"
        (out / f"{stem}.bin").write_bytes(data)
        (out / f"{stem}.txt").write_text(f"{target.name}: {target.contract}\n{kind}\n\n{tb}")
    if kind in result.kinds:
        return
    result.kinds.add(kind)
    if not quiet:
        shown = data[:_HEX_SHOWN].hex()
        more = f" ... ({len(data)} bytes)" if len(data) > _HEX_SHOWN else f" ({len(data)} bytes)"
        print(f"CRASH {target.name}: {kind}\n  input: {shown}{more}\n{tb}", flush=True)


def fuzz_target(
    target: Target,
    *,
    inputs: int | None,
    seconds: float | None,
    seed: int = 0,
    out: Path | None = CRASHES,
    timeout: float = DEFAULT_TIMEOUT,
    quiet: bool = False,
) -> Result:
    """Run one target until ``inputs`` inputs or ``seconds`` (either may be None, not both)."""
    if inputs is None and seconds is None:
        raise ValueError("give a number of inputs, a time, or both")
    prepared = target.prepare()
    rng = random.Random(f"{seed}:{target.name}")
    result = Result(target.name)
    check_alarm = threading.current_thread() is threading.main_thread()
    started = time.perf_counter()
    deadline = None if seconds is None else started + seconds
    with _alarm(timeout), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography warns about every odd certificate
        while inputs is None or result.inputs < inputs:
            if deadline is not None and time.perf_counter() >= deadline:
                break
            data = generate(prepared, rng)
            if check_alarm:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                exc = check(target, prepared, data)
            except Hang as hang:
                exc = hang
            finally:
                if check_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            result.inputs += 1
            if exc is not None:
                _record(target, data, exc, result, out, quiet)
    result.seconds = time.perf_counter() - started
    return result


def _shares(total: int | None, count: int) -> list[int | None]:
    if total is None:
        return [None] * count
    return [total // count + (1 if i < total % count else 0) for i in range(count)]


def run(
    targets: Sequence[Target],
    *,
    inputs: int | None,
    seconds: float | None,
    seed: int = 0,
    out: Path | None = CRASHES,
    report_path: Path | None = REPORT,
    timeout: float = DEFAULT_TIMEOUT,
    quiet: bool = False,
) -> int:
    """Fuzz ``targets`` with equal shares of ``inputs`` and ``seconds``; write the report.
    Returns the exit status: 1 when anything crashed."""
    started = dt.datetime.now(dt.UTC)
    results = []
    share_s = None if seconds is None else seconds / len(targets)
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # parsers log every refusal; millions of lines
    try:
        for target, n in zip(targets, _shares(inputs, len(targets)), strict=True):
            result = fuzz_target(
                target, inputs=n, seconds=share_s, seed=seed, out=out, timeout=timeout,
                quiet=quiet,
            )  # fmt: skip
            results.append(result)
            if not quiet:
                row = result.as_dict()
                print(
                    f"{target.name:28} {result.inputs:>9,} inputs {result.seconds:8.1f} s "
                    f"{row['inputs_per_second']:>10,.0f}/s  crashes {result.crashes}",
                    flush=True,
                )
    finally:
        logging.disable(previous)
    total_inputs = sum(r.inputs for r in results)
    total_seconds = sum(r.seconds for r in results)
    total_crashes = sum(r.crashes for r in results)
    rate = round(total_inputs / total_seconds, 1) if total_seconds else 0.0
    report = {
        "started": started.isoformat(timespec="seconds"),
        "seed": seed,
        "timeout": timeout,
        "targets": {r.name: r.as_dict() for r in results},
        "total": {
            "inputs": total_inputs,
            "seconds": round(total_seconds, 1),
            "inputs_per_second": rate,
            "crashes": total_crashes,
            "unique_crashes": sum(len(r.kinds) for r in results),
        },
    }
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=1) + "\n")
    if not quiet:
        print(
            f"total: {total_inputs:,} inputs in {total_seconds:.1f} s "
            f"({rate:,.0f}/s), {total_crashes} crashes"
            + (f"; report {report_path}" if report_path else ""),
            flush=True,
        )
    return 1 if total_crashes else 0


def bench_fuzz(
    seconds: float = 2.0, report: Path = REPORT
) -> tuple[list[tuple[str, str, str, str]], int]:
    """``make bench`` rows: inputs/s of each target over ``seconds`` (in this process, crashes
    saved as a full run saves them), then the last ``make fuzz`` report's total; and the
    number of crashes in this run."""
    rows = []
    crashes = 0
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        for target in TARGETS:
            r = fuzz_target(target, inputs=None, seconds=seconds, quiet=True)
            crashes += r.crashes
            rows.append((
                f"fuzz: {target.name} inputs/s",
                f"{r.inputs / r.seconds:,.0f}/s",
                f"{r.inputs:,} inputs in {r.seconds:.1f} s, {r.crashes} crashes",
                "",
            ))  # fmt: skip
    finally:
        logging.disable(previous)
    try:
        last = json.loads(report.read_text())
        total = last["total"]
        rows.append((
            "fuzz: last make fuzz run (all targets)",
            f"{total['inputs']:,} inputs in {total['seconds']:,.0f} s",
            f"{total['crashes']} crashes ({last['started']})",
            "",
        ))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        rows.append(("fuzz: last make fuzz run (all targets)", "not run", str(report), ""))
    return rows, crashes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--inputs", type=int, help=f"inputs over all targets (default {DEFAULT_INPUTS:,})"
    )
    parser.add_argument("--seconds", type=float, help="time over all targets")
    parser.add_argument(
        "--target", action="append", choices=sorted(BY_NAME), help="only these (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the mutator's seed (default 0)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="hang, seconds")
    parser.add_argument(
        "--max-memory-mb", type=int, default=4096, help="address-space limit (0: none)"
    )
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--crashes", type=Path, default=CRASHES, help="where crashes go")
    parser.add_argument("--list", action="store_true", help="list the targets and contracts")
    args = parser.parse_args(argv)
    if args.list:
        for t in TARGETS:
            print(f"{t.name:28} {t.contract}")
        return 0
    if args.max_memory_mb:
        limit = args.max_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    inputs = args.inputs
    if inputs is None and args.seconds is None:
        inputs = DEFAULT_INPUTS
    targets = [BY_NAME[n] for n in args.target] if args.target else list(TARGETS)
    return run(
        targets,
        inputs=inputs,
        seconds=args.seconds,
        seed=args.seed,
        out=args.crashes,
        report_path=args.report,
        timeout=args.timeout,
    )


if __name__ == "__main__":
    sys.exit(main())
