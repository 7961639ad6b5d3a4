"""The boot step: open the TPM, play firmware and boot loader on an emulated node, measure config.

Runs before anything else in ``eve-agent run`` (and alone as ``eve-agent boot``):

* ``device``: the platform's TPM (``/dev/tpmrm0``); the firmware's event log in securityfs is
  checked, nothing is extended.
* ``swtpm``: an emulated node.  Its swtpm keeps its NV (keys) in ``persist/tpm``; starting it is
  powering the node on, stopping it (``eve-agent poweroff``) is powering off.  The boot
  components come from ``<root>/platform/boot.json`` (the emulated hardware; change one and
  power-cycle to emulate an update) and are measured into PCRs 0-9 and 13 once per power cycle.

Then the configuration partition is measured into PCR 14, as EVE's measure-config does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.drivers.loopfs import ImageFs
from agent.drivers.swtpm import SwtpmProcess
from agent.drivers.tpm import Tpm
from agent.measure import MeasureResult
from agent.measure.boot import BootComponents, check_log, measure_boot
from agent.measure.configfs import measure_config
from agent.settings import NodePaths
from agent.util.bootreason import forget_boot_id
from agent.vault.store import VaultPaths

log = logging.getLogger(__name__)

FIRMWARE_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")


class TpmMode(StrEnum):
    NONE = "none"
    DEVICE = "device"
    SWTPM = "swtpm"


class BootError(Exception):
    """The platform description is unreadable or the TPM cannot be opened."""


@dataclass
class BootResult:
    tpm: Tpm
    swtpm: SwtpmProcess | None
    boot: MeasureResult
    config: MeasureResult
    boot_log: Path
    config_log: Path


def swtpm_for(paths: NodePaths) -> SwtpmProcess:
    return SwtpmProcess(paths.persist / "tpm")


def load_components(path: Path, agent_version: str) -> BootComponents:
    """Read the emulated platform's boot components; defaults when the file is absent.

    Raises BootError for a file that is not a JSON object of known keys.
    """
    try:
        data: Any = json.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        raise BootError(f"{path}: {exc}") from exc
    known = {"firmware", "bootloader", "kernel", "kernel_cmdline", "platform", "boot_options",
             "secure_boot"}  # fmt: skip
    if not isinstance(data, dict) or set(data) - known:
        raise BootError(f"{path}: expected a JSON object with keys among {sorted(known)}")
    try:
        return BootComponents.for_node(agent_version=agent_version, **data)
    except (OSError, TypeError, ValueError) as exc:
        raise BootError(f"{path}: {exc}") from exc


def boot(
    paths: NodePaths, mode: TpmMode, *, agent_version: str, tcti: str | None = None
) -> BootResult:
    """Open the TPM and run the measurements.  Idempotent within one power cycle.

    Raises BootError, OSError when an event log cannot be written (StorageError on a full
    disk: nothing was extended, the caller may retry), or TpmError from the driver.
    """
    # Imported here so a software-mode node never loads the TSS libraries (about 10 MiB).
    from agent.drivers.tpm_device import DeviceTpm

    swtpm: SwtpmProcess | None = None
    if mode is TpmMode.SWTPM:
        swtpm = swtpm_for(paths)
        swtpm.start()  # manufactures a new state directory first
        tpm: Tpm = DeviceTpm(swtpm.tcti)
    elif mode is TpmMode.DEVICE:
        tpm = DeviceTpm(tcti or "device:/dev/tpmrm0")
    else:
        raise BootError("boot needs a TPM")
    try:
        boot_log, boot_result, config_log, config_result = _measure(
            paths, tpm, swtpm is not None, agent_version
        )
    except BaseException:
        # A failed measurement (a full disk refusing the event log) is retried by the caller:
        # it gets a fresh TPM handle, so this one must not leak.
        tpm.close()
        raise
    for name, result in (("boot", boot_result), ("config", config_result)):
        if result.ok:
            log.info("%s measurement: %s%s", name, result.state.value,
                     f" ({result.stale})" if result.stale else "")  # fmt: skip
        else:
            log.error("%s measurement: %s", name, result.problem)
    return BootResult(tpm, swtpm, boot_result, config_result, boot_log, config_log)


def _measure(
    paths: NodePaths, tpm: Tpm, emulated: bool, agent_version: str
) -> tuple[Path, MeasureResult, Path, MeasureResult]:
    """The boot chain (played on an emulated node, checked on a real one), then the config
    partition.  Raises BootError, OSError (an event log not written) and TpmError."""
    if emulated:
        boot_log = paths.run / "boot" / "binary_bios_measurements"
        components = load_components(paths.platform / "boot.json", agent_version)
        boot_result = measure_boot(tpm, components, boot_log)
    else:
        boot_log = FIRMWARE_LOG
        boot_result = check_log(tpm, FIRMWARE_LOG)
    config_log = paths.persist / "status" / "measurefs_tpm_event_log"
    config_result = measure_config(tpm, paths.config, config_log)
    return boot_log, boot_result, config_log, config_result


def poweroff(paths: NodePaths) -> bool:
    """Power an emulated node off: unmount its vault image (the kernel forgets the vault key),
    stop its swtpm (PCRs reset at the next start) and forget its boot id (the next start is a
    new boot, as a real reboot empties /run).  Idempotent; True if the TPM was on."""
    forget_boot_id(paths.run)
    vault = VaultPaths(paths.persist)
    if vault.image.exists():
        ImageFs().unmount(vault.image, vault.image_mount)
    swtpm = swtpm_for(paths)
    was = swtpm.running
    swtpm.stop()
    return was
