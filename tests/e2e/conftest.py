from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Controller, Node

#: Every node in these tests polls every 5 s (EVE's minimum) so that a change shows up quickly.
FAST_ITEMS = {"configItems": [{"key": "timer.config.interval", "value": "5"}]}


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    ctl = Controller(tmp_path / "controller")
    ctl.init()
    ctl.set_default_config(FAST_ITEMS)
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


@pytest.fixture
def node(tmp_path: Path, controller: Controller) -> Iterator[Node]:
    n = Node(tmp_path / "node1", controller, serial="e2e-node-1")
    try:
        yield n
    finally:
        n.shutdown()
