"""Fixtures of the fault-injection tier: the e2e harness's real controller and agents, emulated
nodes without workloads or network instances (config items only: fast), and the seed.

The seed is ``EVE_FAULTS_SEED`` when set, a fresh one otherwise; every test prints it
(``pytest -s``, and in the captured output of a failure), and ``EVE_FAULTS_SEED=<seed>`` replays
the same random choices.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import FAST_ITEMS
from tests.e2e.harness import Controller, Node, running_controller
from tests.faults.faultlib import SEED_ENV, ControllerDB, Faults


@pytest.fixture(scope="session")
def fault_seed() -> int:
    value = os.environ.get(SEED_ENV)
    return int(value) if value else secrets.randbelow(1 << 32)


@pytest.fixture
def faults(fault_seed: int, request: pytest.FixtureRequest) -> Faults:
    f = Faults(fault_seed, request.node.name)
    f.note(f"replay with {SEED_ENV}={fault_seed}")
    request.node.user_properties.append((SEED_ENV, fault_seed))
    return f


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    with running_controller(tmp_path / "controller", FAST_ITEMS) as ctl:
        yield ctl


@pytest.fixture
def db(controller: Controller) -> ControllerDB:
    return ControllerDB(controller)


class Nodes:
    """Makes emulated nodes (software keys, no workloads, no network instances) and shuts
    every one of them down at the end."""

    def __init__(self, base: Path, controller: Controller) -> None:
        self.base = base
        self.controller = controller
        self.made: list[Node] = []

    def new(self, name: str, *, root: Path | None = None) -> Node:
        node = Node(root or self.base / name, self.controller, serial=name)
        node.extra_args = ["--no-workloads", "--no-networks"]
        self.made.append(node)
        return node

    def shutdown(self) -> None:
        for node in self.made:
            node.shutdown()


@pytest.fixture
def nodes(tmp_path: Path, controller: Controller) -> Iterator[Nodes]:
    made = Nodes(tmp_path / "nodes", controller)
    try:
        yield made
    finally:
        made.shutdown()
