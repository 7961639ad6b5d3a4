"""What a test (or bench) that works in network namespaces needs, and why it cannot run."""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Mapping, Sequence


def netns_missing(tools: Mapping[str, str], modules: Sequence[str] = ("pyroute2",)) -> str | None:
    """Why namespaces tests cannot run here (not root, a ``tool`` missing: its Debian package
    is named, a Python module that does not import), or None."""
    if os.geteuid() != 0:
        return "not root (network namespaces and nftables need CAP_SYS_ADMIN/CAP_NET_ADMIN)"
    for tool, package in tools.items():
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian: {package})"
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} cannot be imported: {exc}"
    return None
