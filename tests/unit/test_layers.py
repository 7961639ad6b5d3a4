"""The import rules of DESIGN.md, checked on the source: layers import downwards only, the
wire layer is all the controller may take from the agent, and only drivers touch the system
(third-party system bindings, subprocesses).  A violation names the file and the import."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: package -> the agent packages it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "agent.wire": set(),
    "agent.util": set(),
    "agent.settings": set(),
    "agent.model": {"agent.util", "agent.wire"},
    "agent.drivers": {"agent.util", "agent.wire"},
    "agent.measure": {"agent.util", "agent.wire", "agent.drivers"},
    "agent.vault": {"agent.util", "agent.wire", "agent.drivers"},
    "agent.reconcile": {"agent.util", "agent.wire", "agent.model", "agent.drivers"},
    "agent.link": {
        "agent.util",
        "agent.wire",
        "agent.model",
        "agent.drivers",
        "agent.measure",
        "agent.settings",
        "agent.vault",
    },
}
#: Modules that talk to the system directly; nothing else may import these.
SYSTEM_IMPORTS = {"subprocess", "tpm2_pytss", "libvirt", "docker", "pyroute2", "nftables"}
SYSTEM_ALLOWED_IN = "agent.drivers"


def _modules() -> Iterator[tuple[str, Path]]:
    for package in ("agent", "controller"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            if "pb" in rel.parts:  # generated protobuf modules
                continue
            yield ".".join(p for p in rel.parts if p != "__init__"), path


def _imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _layer(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


MODULES = list(_modules())


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_follow_the_layers(module: str, path: Path) -> None:
    layer = _layer(module)
    bad: list[str] = []
    for imported in _imports(path):
        top = imported.split(".")[0]
        if top in SYSTEM_IMPORTS and not module.startswith(SYSTEM_ALLOWED_IN):
            bad.append(f"{imported} (system access belongs in {SYSTEM_ALLOWED_IN})")
        if module.startswith("controller") and top == "agent":
            if not imported.startswith("agent.wire"):
                bad.append(f"{imported} (the controller may only use agent.wire)")
            continue
        if layer is None or top != "agent":
            continue
        target = _layer(imported)
        if target is not None and target != layer and target not in ALLOWED[layer]:
            bad.append(f"{imported} ({layer} may not import {target})")
        if target is None and imported != "agent":
            bad.append(f"{imported} ({layer} may not import the top-level modules)")
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)


def test_the_rules_see_every_layer() -> None:
    """Guard against the rule table going stale: each layer has modules."""
    seen = {_layer(m) for m, _ in MODULES}
    assert set(ALLOWED) <= seen
