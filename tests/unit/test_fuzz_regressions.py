"""Inputs the parser fuzzing (tests/fuzz, tools/fuzz.py) found to break a parser's contract,
kept as plain tests: each failed before its parser was fixed."""

from __future__ import annotations

import pytest

from agent.drivers.dhcpclient import parse_lease
from agent.drivers.kubeapi import KubeConfig, KubeConfigError
from agent.reconcile.userdata import UserDataError, for_container
from controller.clustermanifest import parse_status

#: Deeper than the interpreter's recursion limit, and within every parser's size cap.
DEEP_JSON = b"[" * 3000
DEEP_YAML = "[" * 3000


def test_deeply_nested_lease_file_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested"):
        parse_lease(DEEP_JSON, 0.0)


def test_deeply_nested_kubeconfig_is_a_kubeconfig_error() -> None:
    with pytest.raises(KubeConfigError):
        KubeConfig.parse(DEEP_YAML.encode())


def test_deeply_nested_cloud_config_is_a_user_data_error() -> None:
    with pytest.raises(UserDataError, match="nested"):
        for_container("#cloud-config\n" + DEEP_YAML)


def test_deeply_nested_app_custom_status_is_no_status() -> None:
    assert parse_status(DEEP_JSON) is None
