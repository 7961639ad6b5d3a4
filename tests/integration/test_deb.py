# SPDX-License-Identifier: Apache-2.0
"""The Debian packages (``make deb``) install on a clean Debian 12 as users install them.

A clean Debian 12 root is made once with ``mmdebstrap`` (minbase plus ``systemd-sysv``, as on
every installed Debian 12; the three bookworm suites of Debian's archive only) and kept as a
tarball in the image cache (``$EVE_IMAGE_CACHE``, the one images/build.sh uses), made again
when its recipe changes or it is a week old.  Each run unpacks it in the test's temporary
directory and, inside it (``systemd-nspawn``, the host's network, so apt reaches Debian's
archive and nothing else), runs ``apt install ./eve-agent_*.deb ./eve-controller_*.deb``
(without Recommends: docker.io, libvirt and QEMU are recommended for apps and would make the
test download hundreds of MiB).  The downloaded packages are kept in the cache
(``apt-archives/``), so a second run downloads nothing new.  Then it checks what a user gets:
the commands on PATH, every module of the agent importing in the installed environment (the
declared dependencies are enough), the units enabled, ``/config`` and ``/persist`` made root
only, and a purge that removes ``/opt/eve-agent`` entirely and keeps the node's state.

The packages come from ``packaging/build-deb.sh`` (cached by the hash of their sources: a
second run takes well under a second; after a change to the agent about a minute).  About 20 s
when both caches are warm.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

RequireService = Callable[[str, str], NoReturn]

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EVE_IMAGE_CACHE", "/var/cache/eve-agent/images"))
SUITES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
MMDEBSTRAP = (
    "mmdebstrap", "--variant=minbase", "--mode=root", "--include=systemd-sysv",
    "--skip=cleanup/apt/lists", "--quiet", "bookworm",
)  # fmt: skip
#: A clean root older than this is made again (apt in it would download every update).
MAX_AGE = 7 * 24 * 3600.0
#: The agent's modules (and the bindings of its drivers) that must import on the node.
IMPORTS = "import agent.cli, agent.daemon, nftables, tpm2_pytss, libvirt, docker, pyroute2"


def run(argv: list[str], timeout: float, what: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                    f"{done.stderr[-3000:]}", pytrace=False)  # fmt: skip
    return done.stdout


def build_debs() -> dict[str, Path]:
    """The packages of this tree (built, or found current), by package name."""
    out = run(["bash", str(REPO / "packaging/build-deb.sh")], 900, "packaging/build-deb.sh")
    debs = {}
    for line in out.strip().splitlines()[-2:]:
        path = Path(line.split()[1])
        debs[path.name.split("_")[0]] = path
    assert set(debs) == {"eve-agent", "eve-controller"}, out
    return debs


def clean_root_tarball() -> Path:
    """The clean Debian 12 root (a tarball), made when missing, changed or old."""
    recipe = "\n".join((*MMDEBSTRAP, *SUITES))
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"debian12-clean-{key}.tar"
    with open(CACHE / ".debian12-clean.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists() and time.time() - tarball.stat().st_mtime < MAX_AGE:
            return tarball
        for old in CACHE.glob("debian12-clean-*.tar"):
            old.unlink()
        partial = tarball.with_suffix(".partial.tar")
        run([*MMDEBSTRAP, str(partial), *SUITES], 600, "mmdebstrap of a clean Debian 12")
        partial.rename(tarball)
    return tarball


def nspawn(root: Path, command: str, *binds: str, timeout: float = 120) -> str:
    """``sh -c command`` in the root (as root; the host's network)."""
    argv = [
        "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", f"--directory={root}",
        "--setenv=DEBIAN_FRONTEND=noninteractive", *binds, "sh", "-euc", command,
    ]  # fmt: skip
    return run(argv, timeout, f"in the clean root: {command}")


def test_deb_installs_on_clean_debian(tmp_path: Path, require_service: RequireService) -> None:
    if os.geteuid() != 0:
        require_service("root", "mmdebstrap and systemd-nspawn need root")
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("systemd-nspawn", "systemd-container"),
                          ("dpkg-buildpackage", "dpkg-dev"), ("dh", "debhelper")):  # fmt: skip
        if shutil.which(tool) is None:
            require_service(tool, f"not installed (Debian: {package}; tools/deps.sh)")
    debs = build_debs()
    tarball = clean_root_tarball()

    root = tmp_path / "root"
    root.mkdir()
    run(["tar", "-C", str(root), "-xf", str(tarball)], 120, "unpacking the clean root")
    incoming = tmp_path / "debs"
    incoming.mkdir()
    for deb in debs.values():
        shutil.copy(deb, incoming / deb.name)
    archives = CACHE / "apt-archives"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    binds = (f"--bind={archives}:/var/cache/apt/archives", f"--bind-ro={incoming}:/debs")

    start = time.monotonic()
    nspawn(root, "apt-get -q update >/dev/null; cd /debs; "
           "apt install -y -q --no-install-recommends ./eve-agent_*.deb ./eve-controller_*.deb",
           *binds, timeout=600)  # fmt: skip
    install_seconds = time.monotonic() - start

    # The commands, from PATH; every driver's binding imports with the declared dependencies.
    assert nspawn(root, "for c in eve-agent eve-controller; do command -v $c; done").split() == [
        "/usr/bin/eve-agent", "/usr/bin/eve-controller"]  # fmt: skip
    assert "usage: eve-agent" in nspawn(root, "eve-agent --help")
    assert "usage: eve-controller" in nspawn(root, "eve-controller --help")
    nspawn(root, f"cd / && /opt/eve-agent/bin/python -c '{IMPORTS}'")

    # The services: enabled (started only by the admin or at boot), pointing at the packaged
    # commands, and valid for this systemd.
    for unit, command in (("eve-agent", "/usr/bin/eve-agent run"),
                          ("eve-controller", "/usr/bin/eve-controller")):  # fmt: skip
        link = root / "etc/systemd/system/multi-user.target.wants" / f"{unit}.service"
        assert link.is_symlink(), f"{unit}.service is not enabled"
        assert os.readlink(link) == f"/lib/systemd/system/{unit}.service"
        text = (root / "lib/systemd/system" / f"{unit}.service").read_text()
        assert f"\nExecStart={command}" in text
    nspawn(root, "systemd-analyze verify --man=no /lib/systemd/system/eve-agent.service "
           "/lib/systemd/system/eve-controller.service")  # fmt: skip

    # The node's directories: root only.
    for name in ("config", "persist"):
        st = (root / name).lstat()
        assert (st.st_mode & 0o7777, st.st_uid) == (0o700, 0), f"/{name}"

    # Purge: nothing of /opt/eve-agent is left (the postinst's byte-code included), the
    # node's state is.
    (root / "persist/marker").write_text("device state\n")
    nspawn(root, "apt-get purge -y -q eve-agent eve-controller")
    assert not (root / "opt/eve-agent").exists()
    assert not (root / "opt/eve-controller").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/eve-agent.service").exists()
    assert (root / "persist/marker").read_text() == "device state\n"
    assert install_seconds < 300, f"apt install took {install_seconds:.0f} s"
