from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Controller, Node, require, running_controller

#: Every node in these tests polls every 5 s (EVE's minimum) so that a change shows up quickly.
FAST_ITEMS = {"configItems": [{"key": "timer.config.interval", "value": "5"}]}


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    with running_controller(tmp_path / "controller", FAST_ITEMS) as ctl:
        yield ctl


@pytest.fixture
def node(tmp_path: Path, controller: Controller) -> Iterator[Node]:
    n = Node(tmp_path / "node1", controller, serial="e2e-node-1")
    try:
        yield n
    finally:
        n.shutdown()


@pytest.fixture
def tpm_node(tmp_path: Path, controller: Controller) -> Iterator[Node]:
    """An emulated node with its own swtpm (root, swtpm and mkfs.ext4 needed: missing ones fail
    under EVE_AGENT_REQUIRE_SERVICES or CI, and skip with the reason otherwise)."""
    missing = [tool for tool in ("swtpm", "swtpm_setup", "mkfs.ext4") if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        require("TPM node", f"needs root and {', '.join(missing) or 'nothing else'}")
    n = Node(tmp_path / "tpm-node", controller, serial="e2e-tpm-1", swtpm=True)
    try:
        yield n
    finally:
        n.shutdown()
