"""The test images of images/ for integration tests: built once (cached by the recipes), or
the reason there are none."""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class VmImages:
    kernel: Path
    initrd: Path
    disk: Path


@functools.cache
def container_image() -> str:
    """The test container's ``repo@sha256:...`` in the local registry, or ``!reason``."""
    if os.geteuid() != 0:
        return "!not root (the image cache and the registry need root)"
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "images/build.sh"), "container"],
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "!images/build.sh container did not finish in 240 s"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or "@sha256:" not in lines[-1]:
        return f"!images/build.sh container failed ({done.returncode}): {done.stderr[-1500:]}"
    return lines[-1].strip()


@functools.cache
def vm_images() -> VmImages | str:
    """The test guest (kernel, initrd, bootable disk), or why there is none."""
    if os.geteuid() != 0:
        return "not root (the VM image recipe needs root)"
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "images/build.sh"), "vm"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"images/build.sh vm did not run: {exc}"
    if done.returncode != 0:
        return f"images/build.sh vm failed: {done.stderr[-1500:]}"
    paths = {
        Path(line.split()[1]).name: Path(line.split()[1]) for line in done.stdout.splitlines()[-3:]
    }
    return VmImages(paths["vmlinuz"], paths["initrd.gz"], paths["disk.qcow2"])
