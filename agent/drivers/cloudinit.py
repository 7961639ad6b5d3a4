"""NoCloud seeds for cloud-init: an ISO 9660 image labelled ``cidata`` holding ``meta-data``
(instance id and hostname, YAML) and ``user-data`` (the app's user data, as given).

Made with ``genisoimage`` (Debian's cdrkit; ``xorriso -as mkisofs`` takes the same options)
through :mod:`agent.drivers.runner`, written to a temporary name beside the target and renamed
into place, so a seed is either whole or absent.  Joliet and Rock Ridge keep the names as
they are (``meta-data``, not ``META_DAT.;1``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from agent.drivers import runner
from agent.drivers.errors import PermanentError

VOLUME_LABEL = "cidata"
#: The largest user data accepted (EVE caps custom config well below this).
MAX_USER_DATA = 4 * 1024 * 1024
_TIMEOUT = 60.0


@dataclass(frozen=True)
class NoCloud:
    """What the guest gets: ``instance_id`` changes make cloud-init run its per-instance
    modules again (the app layer uses the app UUID and purge counter)."""

    instance_id: str
    hostname: str
    user_data: bytes = b""

    def __post_init__(self) -> None:
        if not self.instance_id:
            raise ValueError("instance_id must not be empty")
        if len(self.user_data) > MAX_USER_DATA:
            raise ValueError(f"user data is larger than {MAX_USER_DATA} bytes")

    def meta_data(self) -> bytes:
        doc = {"instance-id": self.instance_id, "local-hostname": self.hostname}
        return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False).encode()


def _tool() -> list[str]:
    if shutil.which("genisoimage"):
        return ["genisoimage"]
    if shutil.which("xorriso"):
        return ["xorriso", "-as", "mkisofs"]
    raise PermanentError("neither genisoimage nor xorriso is installed (Debian: genisoimage)")


def make_seed_sync(target: Path, seed: NoCloud) -> None:
    """Write the seed ISO to ``target`` (replacing it).  Blocking: call it from a worker
    thread.  Raises PermanentError when no ISO tool is installed, runner errors otherwise."""
    tool = _tool()
    target = Path(target)
    with tempfile.TemporaryDirectory(prefix=".seed-", dir=target.parent) as staging:
        src = Path(staging)
        (src / "meta-data").write_bytes(seed.meta_data())
        (src / "user-data").write_bytes(seed.user_data)
        out = src / "seed.iso"
        runner.run_sync(
            [
                *tool,
                "-quiet",
                "-output",
                out,
                "-volid",
                VOLUME_LABEL,
                "-joliet",
                "-rock",
                src / "user-data",
                src / "meta-data",
            ],
            timeout=_TIMEOUT,
        )
        with open(out, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(out, 0o644)
        os.replace(out, target)
    with contextlib.suppress(OSError):
        dirfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
