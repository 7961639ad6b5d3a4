"""Every parser of outside bytes keeps its contract under Hypothesis: for any input it returns a
value or raises one of its own declared errors (tests/fuzz/targets.py lists the parsers, their
contracts and their inputs).  The CI part of the fuzzing: a few hundred inputs per parser; the
long run is ``make fuzz`` (tools/fuzz.py).

Inputs are random bytes, mutated valid inputs (signed envelopes, configs, event logs, quotes,
newlogs bundles, checkpoints) and structure-aware ones (protobuf messages with hostile field
values, gzip members of hostile content, deep nesting); the seed of the mutator is what
Hypothesis draws, so a failure prints a seed that replays it.
"""

from __future__ import annotations

import json
import random
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.mutate import mutate
from tests.fuzz.targets import BY_NAME, TARGETS, Prepared, Target, check, generate
from tools.fuzz import run

_PREPARED: dict[str, Prepared] = {}


def prepared(target: Target) -> Prepared:
    if target.name not in _PREPARED:
        _PREPARED[target.name] = target.prepare()
    return _PREPARED[target.name]


def inputs(p: Prepared) -> st.SearchStrategy[bytes]:
    """Random bytes, the seeds, mutated seeds and each structure-aware generator."""
    seeded = st.integers(0, 2**64 - 1).map(random.Random)
    strategies = [
        st.binary(max_size=512),
        st.sampled_from(p.seeds),
        seeded.map(lambda rng: mutate(p.seeds, rng)),
        *(seeded.map(g) for g in p.generators),
    ]
    return st.one_of(strategies)


def explain(target: Target, data: bytes, exc: BaseException) -> str:
    tb = "".join(traceback.format_exception(exc))
    return f"{target.name} broke its contract ({target.contract}) on {data[:200].hex()}:\n{tb}"


@pytest.mark.parametrize("name", [t.name for t in TARGETS])
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_parser_keeps_its_contract(name: str, data: st.DataObject) -> None:
    target = BY_NAME[name]
    p = prepared(target)
    raw = data.draw(inputs(p), label="input")
    exc = check(target, p, raw)
    assert exc is None, explain(target, raw, exc)


@pytest.mark.parametrize("name", [t.name for t in TARGETS])
def test_seeds_are_valid_inputs(name: str) -> None:
    """A seed that its own parser refuses would make every mutation of it shallow."""
    target = BY_NAME[name]
    p = prepared(target)
    assert p.seeds
    for seed in p.seeds:
        assert check(target, p, seed) is None
    outcomes = []
    for seed in p.seeds:
        try:
            p.call(seed)
            outcomes.append(True)
        except target.allowed:
            outcomes.append(False)
    assert any(outcomes), f"no seed of {name} is accepted by its parser"


def test_generated_inputs_differ_and_are_reproducible() -> None:
    p = prepared(BY_NAME["controller.quote"])
    first = [generate(p, random.Random(7)) for _ in range(3)]
    again = [generate(p, random.Random(7)) for _ in range(3)]
    assert first == again
    rng = random.Random(8)
    assert len({generate(p, rng) for _ in range(50)}) > 40


def test_runner_reports_and_saves_a_crash(tmp_path: Path) -> None:
    """tools/fuzz.py: a parser that breaks its contract is counted, its input saved, the
    report written, and the run fails; a clean one counts its inputs."""

    def fragile(data: bytes) -> object:
        if len(data) > 3 and data[0] == 0x0A:
            return data[10_000]  # IndexError past the end: the kind of bug fuzzing finds
        raise ValueError("refused")

    bad = Target("test.fragile", "ValueError or a value", (ValueError,),
                 lambda: Prepared(fragile, (b"\x0a\x01\x02\x03",)))  # fmt: skip
    good = Target("test.solid", "ValueError or a value", (ValueError,),
                  lambda: Prepared(lambda data: len(data), (b"abc",)))  # fmt: skip
    report_path = tmp_path / "report.json"
    status = run(
        [bad, good],
        inputs=400,
        seconds=None,
        seed=1,
        out=tmp_path / "crashes",
        report_path=report_path,
        quiet=True,
    )
    assert status == 1
    report = json.loads(report_path.read_text())
    assert report["targets"]["test.fragile"]["crashes"] > 0
    assert report["targets"]["test.solid"]["crashes"] == 0
    assert report["targets"]["test.solid"]["inputs"] == 200
    assert report["total"]["inputs"] == 400
    assert report["total"]["crashes"] == report["targets"]["test.fragile"]["crashes"]
    saved = sorted((tmp_path / "crashes").iterdir())
    assert saved and any(p.name.startswith("test.fragile-") for p in saved)
    crash = next(p for p in saved if p.suffix == ".bin")
    with pytest.raises(IndexError):
        fragile(crash.read_bytes())
