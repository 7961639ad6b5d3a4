"""A three-node K3s cluster's VMs for ``make bench`` (issue 11's second figure).

The setup is the clusters VM e2e test's (``tests/e2e/test_clusters_vm_e2e.py``,
:func:`open_site`): a real controller and three real agents, each an emulated node with its own
root, swtpm and network namespace, their cluster ports on one LAN namespace; the K3s VMs are the
test guest of ``images/vm`` acting their roles (docs/clusters-node.md).  The three nodes are
onboarded, attested and tagged before the clock starts.

Figures, from ``eve-controller cluster create --servers 1:1 --agents 1:2`` (spawned, so the
command's own start is in them) until:

- every member's guest booted: each VM's console shows ``eve-test-guest: running`` (the
  guest's ``/init`` read its NoCloud seed);
- every member acted its role: the init server's VM posted its kubeconfig (its stand-in API
  answers) and both agents' VMs joined it across the cluster network (their console lines);
- the three members ready in ``cluster show`` (the cluster's API, through the init node's
  ZInfoKubeCluster report, lists all three Ready with the guest's kubelet version).

Reference, in the same run, with the same agents idle beside it: the same three VMs booted by
hand.  The cluster is deactivated (its VMs halted) and three domains are defined directly
through libvirt with what the agents gave theirs (read back from libvirt: memory, vCPUs,
accelerator, machine, firmware, seed bus), a qcow2 overlay each on the same guest disk and a
NoCloud seed each, no network; they are started together and timed from the first start until
each console shows the same ``eve-test-guest: running`` line.  Without the agent there is no
role to act (no cluster network, no DHCP, no metadata server to post a kubeconfig to), so the
later figures stand beside the same boot reference: their overhead is the cluster's own work
(config, download, volumes, networks, the guests' certificates, join and report rounds).

Needs root, libvirtd, swtpm, dnsmasq and the test VM image; takes the machine's QEMU lock
(``/tmp/eve-qemu.lock``, or ``$EVE_QEMU_LOCK``; empty: the caller holds it).  Everything made
(domains, namespaces, processes, files) is removed, also on failure.  Run alone:
``flock /tmp/eve-qemu.lock env EVE_QEMU_LOCK= .venv/bin/python tools/bench_cluster_vms.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.drivers import cloudinit, domainxml
from agent.drivers.hypervisor import domain_prefix
from tests.e2e.sample_apps import host_name, open_path_for_qemu
from tools.bench_node import qemu_lock

Row = tuple[str, str, str, str]

#: The guest's console line once ``/init`` has read its seed: "booted".
BOOTED = "eve-test-guest: running"
#: The init server's VM posted its kubeconfig (its API answers by then).
KUBECONFIG = "eve-test-guest: kubeconfig posted"
#: An agent's VM joined the init server (the init server's cluster address, the controller's).
JOINED = "eve-test-guest: k3s agent joined https://10.244.0.10:6443"
LIBVIRT_URI = "qemu:///system"
#: How long each phase may take before the bench gives up.
TIMEOUT = 300.0


class BenchClusterVmsError(RuntimeError):
    """The bench could not run (a missing service, tool or image) or a phase timed out."""


@dataclass(frozen=True)
class ClusterMarks:
    """Seconds after ``cluster create`` was spawned."""

    running: float
    booted: float
    roles: float
    ready: float


@contextlib.contextmanager
def _libvirt() -> Iterator[Any]:
    import libvirt

    conn = libvirt.open(LIBVIRT_URI)
    try:
        yield conn
    finally:
        conn.close()


def _running_names(conn: Any) -> list[str]:
    return [d.name() for d in conn.listAllDomains(1)]  # VIR_CONNECT_LIST_DOMAINS_ACTIVE


def _console(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _poll(what: str, check: Callable[[], bool], interval: float = 0.1) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise BenchClusterVmsError(f"timed out after {TIMEOUT:.0f} s: {what}")
        time.sleep(interval)


def measure_cluster(site: Any) -> tuple[ClusterMarks, list[domainxml.DomainConfig]]:
    """Tag the three onboarded nodes, create the cluster, and time it up to each mark; return
    the marks and the agents' domain configurations (as libvirt holds them)."""
    from tests.e2e import test_clusters_vm_e2e as e2e

    ctl, nodes = site.controller, site.nodes
    for node in nodes:
        ctl.cli("device", "tag", node.uuid, f"pool={site.tag}")
    prefixes = [domain_prefix(host_name(n.root)) for n in nodes]
    argv = ["cluster", "create", e2e.CLUSTER, "--select", f"pool={site.tag}",
            "--servers", "1:1", "--agents", "1:2", "--network-tag", e2e.LABEL,
            "--k3s-image", e2e.TREE, "--vm-memory", "256", "--vm-cpus", "1"]  # fmt: skip
    created = time.monotonic()
    ctl.cli(*argv)
    roles = {m["node"]: m["role"] for m in site.show()["members"]}
    if sorted(roles.values()) != ["agent", "agent", "init"]:
        raise BenchClusterVmsError(f"unexpected roles: {roles}")
    by_uuid = dict(zip(site.uuids(), nodes, strict=True))
    init = by_uuid[next(u for u, r in roles.items() if r == "init")]
    agents = [by_uuid[u] for u, r in roles.items() if r == "agent"]
    marks: dict[str, float] = {}
    with _libvirt() as conn:

        def step() -> bool:
            now = time.monotonic() - created
            if "running" not in marks:
                names = _running_names(conn)
                if all(any(n.startswith(p) for n in names) for p in prefixes):
                    marks["running"] = now
            consoles = {n.root: site.consoles(n) for n in nodes}
            if "booted" not in marks and all(BOOTED in c for c in consoles.values()):
                marks["booted"] = now
            acted = KUBECONFIG in consoles[init.root]
            if "roles" not in marks and acted and all(JOINED in consoles[a.root] for a in agents):
                marks["roles"] = now
            return len(marks) == 3

        try:
            _poll("the three VMs running, booted and acting their roles", step)
        except BenchClusterVmsError as exc:
            raise BenchClusterVmsError(f"{exc}\n{site.diagnose()}") from None
        done = e2e._member_ready

        def ready() -> bool:
            members = site.show()["members"]
            return len(members) == 3 and all(map(done, members))

        _poll("three members ready in cluster show", ready, interval=0.5)
        marks["ready"] = time.monotonic() - created
        configs = [
            domainxml.parse(d.XMLDesc(0))
            for d in conn.listAllDomains(1)
            if any(d.name().startswith(p) for p in prefixes)
        ]
    return ClusterMarks(**marks), configs


def _halt_cluster(site: Any) -> None:
    """``cluster deactivate``, until no domain of the three nodes runs."""
    from tests.e2e import test_clusters_vm_e2e as e2e

    site.controller.cli("cluster", "deactivate", e2e.CLUSTER)
    prefixes = [domain_prefix(host_name(n.root)) for n in site.nodes]
    with _libvirt() as conn:
        _poll("the cluster's VMs halted",
              lambda: not any(n.startswith(tuple(prefixes)) for n in _running_names(conn)),
              interval=0.5)  # fmt: skip


def boot_by_hand(workdir: Path, disk: Path, like: list[domainxml.DomainConfig]) -> list[float]:
    """Three domains defined through libvirt like ``like`` (no network, own overlays and
    seeds), started together: seconds from the first start to each guest's :data:`BOOTED`."""
    workdir.mkdir(parents=True)
    open_path_for_qemu(workdir)
    base = workdir / disk.name
    shutil.copyfile(disk, base)  # libvirt relabels a backing chain: not the shared image cache
    tag = uuid.uuid4().hex[:6]
    configs = []
    for i, template in enumerate(like, 1):
        overlay = workdir / f"vm{i}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(base), str(overlay)], check=True, timeout=60)  # fmt: skip
        seed = workdir / f"vm{i}-seed.iso"
        cloudinit.make_seed_sync(seed, cloudinit.NoCloud(f"by-hand-{tag}-{i}", f"by-hand-{i}"))
        configs.append(replace(
            template, name=f"evebench-byhand-{tag}-{i}", uuid=uuid.uuid4(),
            mark=domainxml.Mark("bench-by-hand", uuid.uuid4(), 0), console_log=workdir
            / f"vm{i}.log", disks=(domainxml.Disk(overlay),), nics=(), seed=seed,
        ))  # fmt: skip
    booted: dict[int, float] = {}
    with _libvirt() as conn:
        domains = [conn.defineXML(domainxml.build(c)) for c in configs]
        try:
            started = time.monotonic()
            for dom in domains:
                dom.create()

            def step() -> bool:
                for i, c in enumerate(configs):
                    if i not in booted and BOOTED in _console(c.console_log):
                        booted[i] = time.monotonic() - started
                return len(booted) == len(configs)

            _poll("the three VMs booted by hand", step)
        finally:
            for dom in domains:
                with contextlib.suppress(Exception):
                    dom.destroy()
                with contextlib.suppress(Exception):
                    dom.undefine()
    return [booted[i] for i in range(len(configs))]


@contextlib.contextmanager
def _site() -> Iterator[Any]:
    """The e2e test's site, its pytest outcomes (skip, fail) turned into our error."""
    import pytest

    from tests.e2e.test_clusters_vm_e2e import open_site

    try:
        with open_site() as site:
            yield site
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        raise BenchClusterVmsError(str(exc)) from None


def _onboard(site: Any) -> None:
    for node in site.nodes:
        node.start()
    for node in site.nodes:
        node.wait_onboarded(90)
    for node in site.nodes:
        node.wait_status(lambda s: s["attestation"]["state"] == "complete", 120, "attestation")


def bench_cluster_vms() -> list[Row]:
    """The figures (see the module docstring), as rows of ``tools/bench.py``'s table."""
    from tests.integration.images import vm_images

    guest = vm_images()
    if isinstance(guest, str):
        raise BenchClusterVmsError(f"the test VM image: {guest}")
    with qemu_lock(), _site() as site:
        try:
            _onboard(site)
        except AssertionError as exc:
            raise BenchClusterVmsError(f"onboarding the three nodes: {exc}") from None
        marks, configs = measure_cluster(site)
        if len(configs) != 3:
            raise BenchClusterVmsError(f"{len(configs)} cluster domains running, not 3")
        _halt_cluster(site)
        by_hand = boot_by_hand(site.base / "by-hand", guest.disk, configs)
    ref = max(by_hand)
    c = configs[0]
    shape = f"{c.memory_mib} MiB, {c.vcpus} vCPU, {c.accel.value.upper()}"
    ref_text = f"{ref:.1f} s (3 domains by hand via libvirt, to '{BOOTED}')"

    def row(label: str, value: float) -> Row:
        return (label, f"{value:.1f} s", ref_text, f"+{value - ref:.1f} s ({value / ref:.1f}x)")

    return [
        row(f"3-node cluster: cluster create -> 3 VMs booted ({shape})", marks.booted),
        row("  same, -> init posted kubeconfig, 2 agents joined", marks.roles),
        row("  same, -> 3 members ready in cluster show", marks.ready),
        (f"  (3 VMs running in libvirt at {marks.running:.1f} s; by hand, each booted at "
         + ", ".join(f"{t:.1f}" for t in by_hand) + " s)", "", "", ""),
    ]  # fmt: skip


def main() -> int:
    """Print the rows (``figure | eve-agent | reference | overhead``); SIGTERM cleans up too."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rows = bench_cluster_vms()
    except BenchClusterVmsError as exc:
        print(f"cluster VMs bench: {exc}", file=sys.stderr)
        return 1
    for r in rows:
        print(" | ".join(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
