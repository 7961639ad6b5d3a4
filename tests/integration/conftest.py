# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures for the integration tests (real services, usually root).

A test that needs a host service (dockerd, libvirtd, the registry, swtpm, netns...) and
finds it missing calls ``require_service(name, reason)``: that *fails* the test when the
services are required - running as root with ``CI`` or ``EVE_AGENT_REQUIRE_SERVICES`` set,
as in CI and ``make test`` - and *skips* it with the reason otherwise (a laptop without root).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from tests.loopwatch import loop_watch, pytest_runtest_call

__all__ = ["loop_watch", "pytest_runtest_call"]  # the event-loop stall watchdog (fixture, hook)

_HERE = Path(__file__).resolve().parent
_REQUIRE_VARS = ("CI", "EVE_AGENT_REQUIRE_SERVICES")


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


def swtpm_missing() -> str | None:
    """Why the swtpm tests cannot run here (tools or tpm2-pytss missing), or None."""
    missing = [tool for tool in ("swtpm", "swtpm_setup") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: swtpm, swtpm-tools)"
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError as exc:
        return f"tpm2-pytss cannot be imported: {exc}"
    return None


def services_required() -> bool:
    """True when a missing service must fail the test instead of skipping it."""
    return os.geteuid() == 0 and any(_truthy(os.environ.get(v)) for v in _REQUIRE_VARS)


def service_missing(name: str, reason: str) -> NoReturn:
    """Fail (services required) or skip (otherwise) because ``name`` is not usable."""
    message = f"{name} not available: {reason}"
    if services_required():
        pytest.fail(
            f"{message} (services are required here: root with CI or "
            "EVE_AGENT_REQUIRE_SERVICES set; start them with `tools/services.sh start`)",
            pytrace=False,
        )
    pytest.skip(message)


@pytest.fixture
def require_service() -> Callable[[str, str], NoReturn]:
    """``require_service(name, reason)``: fail or skip, see the module docstring."""
    return service_missing


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration carries the ``integration`` marker."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
