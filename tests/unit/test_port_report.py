"""The port configs in the device info, as EVE's nim reports its DPC list (systemAdapter)."""

from __future__ import annotations

from agent.link.reporting import DeviceFacts, PortConfigFacts, PortFacts, device_info
from agent.model.configitems import ConfigItems

DHCP = PortFacts("eth0", "eth0", True, 0, "client", ("10.88.0.120/24",), ("10.88.0.1",),
                 ("10.88.0.53",), 1500)  # fmt: skip
STATIC = PortFacts("eth0", "eth0", True, 0, "static", ("10.66.0.5/24",), ("10.66.0.1",))


def facts(*configs: PortConfigFacts) -> DeviceFacts:
    return DeviceFacts("dev", "1.0", 1.0, "", "", ConfigItems(), port_configs=configs)


def test_a_failed_config_and_the_one_in_use() -> None:
    failed = PortConfigFacts((STATIC,), False, last_failed=1000.0, last_error="no controller")
    used = PortConfigFacts((DHCP,), True, last_succeeded=900.0)
    info = device_info(facts(failed, used)).dinfo.systemAdapter
    assert info.currentIndex == 1 and len(info.status) == 2
    first, second = info.status
    assert first.lastError == "no controller" and first.lastFailed.seconds == 1000
    assert not first.HasField("lastSucceeded") and first.ports[0].dhcpType == 1
    assert second.lastError == "" and second.lastSucceeded.seconds == 900
    port = second.ports[0]
    assert (port.ifname, port.name, port.isMgmt, port.free, port.dhcpType, port.mtu) == (
        "eth0", "eth0", True, True, 4, 1500,
    )  # fmt: skip
    assert list(port.IPAddrs) == ["10.88.0.120/24"] and list(port.defaultRouters) == ["10.88.0.1"]
    assert list(port.dnsServers) == ["10.88.0.53"]


def test_no_port_config_no_system_adapter() -> None:
    assert not device_info(facts()).dinfo.HasField("systemAdapter")
