"""DNS answers for flow logs' dnsReqs (agent.reconcile.dnslog, FlowTable.answered, the
FlowMessage): crafted answers with compression, hostile packets (Hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.nflog import LoggedPacket
from agent.link.flowlog import flow_message
from agent.reconcile.dnslog import PREFIX, parse_answer
from agent.reconcile.flows import FlowTable, Scopes
from agent.reconcile.netplan import VifPlan
from tests.netpackets import dns_answer, qname

APP = "6d3b3b4e-8a3c-4c47-9d41-0000000000a1"


def answer(name: str = "example.com", addrs: tuple[str, ...] = ("93.184.216.34",),
           to: str = "10.66.0.20", flags: int = 0x8180) -> bytes:  # fmt: skip
    return dns_answer(name, addrs, to, flags)


def test_answers_are_read_queries_and_garbage_are_not() -> None:
    found = parse_answer(answer(addrs=("93.184.216.34", "93.184.216.35")))
    assert found is not None
    assert (found.app_ip, found.name) == ("10.66.0.20", "example.com")
    assert found.addrs == ("93.184.216.34", "93.184.216.35")
    assert parse_answer(answer(flags=0x0100)) is None  # a query
    nx = parse_answer(answer(addrs=()))
    assert nx is not None and nx.addrs == ()  # a name with no address is still a request
    cut = answer(addrs=("1.2.3.4", "5.6.7.8"))[:-6]  # cut inside the last answer
    found = parse_answer(cut)
    assert found is not None and found.addrs == ("1.2.3.4",)  # what was read stays
    # A pointer to itself: never followed forever.
    base = answer(addrs=())
    self_ref = base[: 28 + 12] + b"\xc0\x0c" + base[28 + 12 + len(qname("example.com")) :]
    assert parse_answer(self_ref) is None
    assert parse_answer(answer(name="bad\x01name.com")) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 120), st.binary(max_size=6))
def test_hostile_packets_are_none_or_a_sane_answer(noise: bytes, at: int, patch: bytes) -> None:
    good = answer(addrs=("1.2.3.4", "5.6.7.8"))
    for data in (noise, good[:at] + patch + good[at + len(patch) :]):
        found = parse_answer(data)
        if found is not None:
            assert len(found.name) <= 255 and found.name.isascii() and len(found.addrs) <= 32


def test_answers_are_filed_under_their_app_and_sent_as_dns_requests() -> None:
    vif = VifPlan(APP, 0, "ni", "ev0", "02:00:00:00:00:01", "10.66.0.20", "app")
    scopes = Scopes({vif.ip: vif}, {(APP, 0): vif}, {"ni": "eb0"})
    table = FlowTable()
    packets = [
        LoggedPacket(PREFIX, 100.0, 17, "10.66.0.1", "10.66.0.20", 53, 40000, 0, answer()),
        # To no app of ours:
        LoggedPacket(
            PREFIX, 101.0, 17, "10.66.0.1", "10.66.0.99", 53, 40000, 0, answer(to="10.66.0.99")
        ),
        LoggedPacket("ace:x:0:0", 102.0, 17, "10.66.0.1", "10.66.0.20", 53, 1, 0, answer()),
    ]
    table.answered(packets, scopes)
    (report,) = table.take(scopes)
    assert report.flows == () and [(d.name, d.addrs) for d in report.dns] == [
        ("example.com", ("93.184.216.34",))
    ]
    msg = flow_message("dev", report)
    (req,) = msg.dnsReqs
    assert req.hostName == "example.com" and list(req.addrs) == ["93.184.216.34"]
    assert req.requestTime.seconds == 100
    assert table.take(scopes) == []
