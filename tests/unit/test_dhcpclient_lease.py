"""What the DHCP client's lease file may say, and what the agent makes of it (hostile)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.drivers.dhcpclient import MAX_SERVERS, Lease, parse_lease

NOW = 1_000_000.0


def lease_file(**fields: Any) -> bytes:
    doc = {"event": "bound", "ip": "10.88.0.120", "mask": "24", "router": "10.88.0.1",
           "dns": "10.88.0.53 10.88.0.54", "lease": "120", "at": str(int(NOW))}  # fmt: skip
    doc.update(fields)
    return json.dumps(doc).encode()


def test_a_lease() -> None:
    assert parse_lease(lease_file(), NOW + 5) == Lease(
        IPv4Interface("10.88.0.120/24"), (IPv4Address("10.88.0.1"),),
        (IPv4Address("10.88.0.53"), IPv4Address("10.88.0.54")), 120, NOW,
    )  # fmt: skip
    assert parse_lease(lease_file(event="renew", router=""), NOW).router is None  # type: ignore[union-attr]
    # No lease: the client said so, or the lease ran out.
    for event in ("deconfig", "leasefail", "nak"):
        assert parse_lease(json.dumps({"event": event, "at": "1"}).encode(), NOW) is None
    assert parse_lease(lease_file(), NOW + 121) is None
    infinite = parse_lease(lease_file(lease=str(0xFFFFFFFF)), NOW + 10**9)
    assert infinite is not None and not infinite.expired(NOW + 10**9)
    many = " ".join(f"10.0.0.{i}" for i in range(1, 20))
    assert len(parse_lease(lease_file(dns=many), NOW).dns) == MAX_SERVERS  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "fields",
    [
        {"event": "reboot"},
        {"ip": ""},
        {"ip": "10.88.0.300"},
        {"ip": "fd00::1"},
        {"mask": "0"},
        {"mask": "33"},
        {"mask": "255.255.255.0"},
        {"router": "10.0.0.1; reboot"},
        {"dns": "evil.example"},
        {"lease": "-1"},
        {"lease": str(1 << 40)},
        {"at": "yesterday"},
    ],
)
def test_nonsense_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        parse_lease(lease_file(**fields), NOW)


@given(st.binary(max_size=300))
def test_any_bytes_are_a_lease_or_a_value_error(data: bytes) -> None:
    try:
        found = parse_lease(data, NOW)
    except (ValueError, TypeError):
        return
    assert found is None or isinstance(found.address, IPv4Interface)
