"""The import rules of DESIGN.md, checked on the source: layers import downwards only, the
wire layer is all the controller may take from the agent, the reconcilers never see protobuf, and
only drivers touch the system (third-party system bindings, subprocesses, os.system and friends,
sockets).  A violation names the file and the import or call."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: package -> the agent packages it may import (besides itself).  The top-level modules (cli,
#: daemon, nodeparts, nodefacts, nodepower, nodetasks, status, boot) form the top layer: they
#: may import every layer, none may import them.
ALLOWED: dict[str, set[str]] = {
    "agent.cli": {"*"},
    "agent.daemon": {"*"},
    "agent.nodeparts": {"*"},
    "agent.nodefacts": {"*"},
    "agent.nodetasks": {"*"},
    "agent.nodepower": {"*"},
    "agent.status": {"*"},
    "agent.boot": {"*"},
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
#: Calls that run processes or open sockets, by module: only drivers may make them.
SYSTEM_CALLS = {
    "os": {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve",
           "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve",
           "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell", "open_unix_connection",
                "open_connection", "start_server", "start_unix_server"},
    "socket": {"socket", "create_connection", "create_server", "socketpair", "fromfd"},
}  # fmt: skip
#: Layers that must never see protobuf messages (the model converts them).
NO_PROTOBUF = ("agent.reconcile",)


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


def _system_calls(path: Path) -> Iterator[str]:
    """``os.system(...)``-style calls and ``from socket import socket``-style imports."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.attr in SYSTEM_CALLS.get(node.func.value.id, ())
        ):
            yield f"{node.func.value.id}.{node.func.attr}()"
        elif isinstance(node, ast.ImportFrom) and node.module in SYSTEM_CALLS and node.level == 0:
            for alias in node.names:
                if alias.name in SYSTEM_CALLS[node.module]:
                    yield f"from {node.module} import {alias.name}"


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
        if layer in NO_PROTOBUF and (
            imported.startswith("google.protobuf") or imported.startswith("agent.wire.pb")
        ):
            bad.append(f"{imported} ({layer} sees only the model, never protobuf)")
        if layer is None or top != "agent":
            continue
        target = _layer(imported)
        if "*" in ALLOWED[layer]:
            continue
        if target is not None and target != layer and target not in ALLOWED[layer]:
            bad.append(f"{imported} ({layer} may not import {target})")
        if target is None and imported != "agent":
            bad.append(f"{imported} ({layer} may not import the top-level modules)")
    if module.startswith("agent") and not module.startswith(SYSTEM_ALLOWED_IN):
        bad += [f"{call} (system access belongs in {SYSTEM_ALLOWED_IN})" for call in
                _system_calls(path)]  # fmt: skip
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)


def test_the_system_call_rule_catches_calls(tmp_path: Path) -> None:
    """The rule itself can fail: a module that shells out or opens a socket is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, socket, asyncio\n"
        "from socket import create_connection\n"
        "os.system('true')\n"
        "s = socket.socket()\n"
        "asyncio.create_subprocess_exec('true')\n"
        "socket.gethostname()\n"
    )
    assert sorted(_system_calls(bad)) == [
        "asyncio.create_subprocess_exec()",
        "from socket import create_connection",
        "os.system()",
        "socket.socket()",
    ]


def test_the_rules_see_every_layer() -> None:
    """Guard against the rule table going stale: each layer has modules."""
    seen = {_layer(m) for m, _ in MODULES}
    assert set(ALLOWED) <= seen
