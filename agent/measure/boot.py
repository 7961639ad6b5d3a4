"""The emulated firmware and boot loader: measure the boot chain into PCRs 0-9 and 13.

An emulated node has a TPM (swtpm, or the in-memory fake) but no firmware to measure into it, so
the agent does what UEFI firmware and EVE's GRUB would have done, once per TPM power cycle,
before anything else uses the TPM (``eve-agent boot``, or the start of ``run``).  The events
follow the TCG PC Client Platform Firmware Profile and GRUB's TPM module, so that the log a
controller receives looks like one from a real EVE node:

======  ==================================================================================
PCR 0   ``EV_S_CRTM_VERSION`` (firmware version, UCS-2), ``EV_EFI_PLATFORM_FIRMWARE_BLOB``
        (the firmware image), separator
PCR 1   ``EV_EFI_VARIABLE_BOOT`` ``BootOrder`` and ``Boot####`` (the boot options, which EVE's
        BOOTING.md says land in PCR 1), ``EV_PLATFORM_CONFIG_FLAGS`` (the node's platform
        options), separator
PCR 2-3 separator
PCR 4   ``EV_EFI_ACTION`` "Calling EFI Application from Boot Option", separator,
        ``EV_EFI_BOOT_SERVICES_APPLICATION`` for the boot loader, and for the kernel (an EFI
        stub the boot loader hands to LoadImage)
PCR 5   separator, ``EV_EFI_ACTION`` "Exit Boot Services Invocation" / "... with Success"
PCR 6   separator
PCR 7   ``EV_EFI_VARIABLE_DRIVER_CONFIG`` SecureBoot, PK, KEK, db, dbx; separator;
        ``EV_EFI_VARIABLE_AUTHORITY`` (the db entry that verified the boot loader) when secure
        boot is on
PCR 8   GRUB: ``EV_IPL`` ``grub_cmd: <command>`` for each command run and
        ``kernel_cmdline: <kernel> <args>``, digest = SHA-256 of the command (no prefix)
PCR 9   GRUB: ``EV_IPL`` ``<file name>`` for each file read (grub.cfg, the kernel), digest =
        SHA-256 of the content
PCR 13  EVE's ``measurefs`` GRUB command: ``EV_IPL`` ``squash4 <hex digest of the rootfs>``,
        digest = SHA-256 of that digest; here the rootfs is the agent's version
======  ==================================================================================

GRUB details are from GRUB's ``grub-core/commands/tpm.c`` (``grub_tpm_verify_string``: prefix
in the event, string alone digested; ``grub_tpm_verify_write``: file name as event, content
digested; PCR 8 for strings, 9 for files; event data NUL-terminated, type ``EV_IPL``) and EVE's
``pkg/grub/patches-2.12/0010-commands-Add-measurefs-command.patch`` with ``rootfs.cfg``
(``measurefs $root --pcr 13``).

Which PCR a component lands in is what a controller's PCR policy sees: a new firmware changes
PCR 0, platform options PCR 1, a new boot loader PCR 4, a new kernel PCRs 4 and 9, its command
line PCR 8, the secure-boot state PCR 7, a new agent (rootfs) PCR 13.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.measure import ZERO_PCR, MeasureResult, MeasureState, PcrBank
from agent.util.atomicfile import write_atomic
from agent.wire import tcglog
from agent.wire.tcglog import Event, make_event

log = logging.getLogger(__name__)

ROOTFS_PCR = 13
BOOT_PCRS_CHECKED_AT_POWER_ON = tuple(range(16))
"""At a fresh power-on these all read zero; PCRs 16-23 are left alone (17-22 start as ones)."""

DEFAULT_FIRMWARE = "eve-agent virtual UEFI firmware 1.0"
DEFAULT_BOOTLOADER = "eve-agent emulated GRUB 2.12"
DEFAULT_CMDLINE = "rootfstype=squashfs console=ttyS0 console=tty0"
DEFAULT_BOOT_OPTIONS = ("EVE",)
BOOTLOADER_PATH = "\\EFI\\BOOT\\BOOTX64.EFI"
GRUB_CFG_FILE = "(hd0,gpt1)/EFI/BOOT/grub.cfg"
KERNEL_FILE = "(hd0,gpt2)/boot/kernel"
DEFAULT_GRUB_CFG = """\
set_global grub_virt qemu
search.part_label CONFIG config_part hd0
measurefs (hd0,gpt2) --pcr 13
set root=(hd0,gpt2)
"""
"""Commands of the emulated grub.cfg, each measured into PCR 8 as it runs (``measurefs`` is the
one that measures the rootfs into PCR 13)."""

_EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
_EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
_CALLING_EFI_APPLICATION = b"Calling EFI Application from Boot Option"
_EXIT_BOOT_SERVICES = b"Exit Boot Services Invocation"
_EXIT_BOOT_SERVICES_OK = b"Exit Boot Services Returned with Success"
_FIRMWARE_BASE = 0x00820000
_IMAGE_BASE = 0x7E000000
_LOAD_OPTION_ACTIVE = 0x00000001


Source = Path | str
"""A component given as a file (its content is measured) or as an identity string."""


def component_bytes(source: Source) -> bytes:
    """The bytes that stand for a component: a file's content, or the identity string."""
    if isinstance(source, Path):
        return source.read_bytes()
    return source.encode("utf-8")


@dataclass(frozen=True)
class BootComponents:
    """Everything the emulated boot measures.  Change one and the expected PCRs change."""

    firmware: str = DEFAULT_FIRMWARE
    """Firmware version string (PCR 0); also stands for the firmware image."""
    bootloader: bytes = DEFAULT_BOOTLOADER.encode()
    """Boot loader image (PCR 4)."""
    kernel: bytes = b"eve-agent kernel"
    """Kernel image (PCRs 4 and 9)."""
    kernel_cmdline: str = DEFAULT_CMDLINE
    """Kernel arguments (PCR 8)."""
    rootfs: str = "eve-agent"
    """What ``measurefs`` measures (PCR 13): the agent version stands for EVE's rootfs."""
    grub_cfg: str = DEFAULT_GRUB_CFG
    """The boot loader's script (read into PCR 9, its commands into PCR 8)."""
    boot_options: tuple[str, ...] = DEFAULT_BOOT_OPTIONS
    """UEFI boot option descriptions, in BootOrder (PCR 1)."""
    platform: tuple[tuple[str, str], ...] = ()
    """Platform configuration flags (PCR 1), sorted ``(name, value)`` pairs."""
    secure_boot: bool = False
    """UEFI secure boot state (PCR 7)."""

    @classmethod
    def for_node(
        cls,
        *,
        agent_version: str,
        firmware: str | None = None,
        bootloader: Source | None = None,
        kernel: Source | None = None,
        kernel_cmdline: str | None = None,
        platform: Mapping[str, str] | None = None,
        boot_options: Sequence[str] | None = None,
        secure_boot: bool = False,
    ) -> BootComponents:
        """The components of an emulated node.  Files are read now (raises OSError).

        Without a kernel file the kernel is identified by the agent version: upgrading the
        agent then changes PCRs 4 and 9 as a new EVE kernel would, besides PCR 13.
        """
        return cls(
            firmware=firmware or DEFAULT_FIRMWARE,
            bootloader=component_bytes(bootloader or DEFAULT_BOOTLOADER),
            kernel=component_bytes(kernel or f"eve-agent {agent_version} kernel"),
            kernel_cmdline=DEFAULT_CMDLINE if kernel_cmdline is None else kernel_cmdline,
            rootfs=f"eve-agent {agent_version}",
            boot_options=tuple(boot_options or DEFAULT_BOOT_OPTIONS),
            platform=tuple(sorted((platform or {}).items())),
            secure_boot=secure_boot,
        )


# --- UEFI structures ----------------------------------------------------------------------------


def _ucs2(text: str, *, terminate: bool = True) -> bytes:
    return (text + ("\x00" if terminate else "")).encode("utf-16-le")


def variable_data(guid: uuid.UUID, name: str, data: bytes) -> bytes:
    """``UEFI_VARIABLE_DATA``: GUID, name length (CHAR16s), data length, name, data."""
    unicode_name = _ucs2(name, terminate=False)
    return guid.bytes_le + struct.pack("<QQ", len(name), len(data)) + unicode_name + data


def file_device_path(path: str) -> bytes:
    """A media file-path device path node (type 4, subtype 4) and the end node."""
    node_path = _ucs2(path)
    return struct.pack("<BBH", 4, 4, 4 + len(node_path)) + node_path + b"\x7f\xff\x04\x00"


def image_load_event(image: bytes, device_path: bytes) -> bytes:
    """``UEFI_IMAGE_LOAD_EVENT``: location, length, link-time address, device path."""
    return struct.pack("<QQQQ", _IMAGE_BASE, len(image), 0, len(device_path)) + device_path


def load_option(description: str, device_path: bytes) -> bytes:
    """``EFI_LOAD_OPTION``: attributes, path list length, description, path list."""
    return (
        struct.pack("<IH", _LOAD_OPTION_ACTIVE, len(device_path)) + _ucs2(description) + device_path
    )


def _grub_string(pcr_text: str, digested: str) -> Event:
    return make_event(8, tcglog.EV_IPL, pcr_text.encode() + b"\x00", digested=digested.encode())


def _grub_command(command: str) -> Event:
    return _grub_string(f"grub_cmd: {command}", command)


def _grub_file(name: str, content: bytes) -> Event:
    return make_event(9, tcglog.EV_IPL, name.encode() + b"\x00", digested=content)


def _secure_boot_variables(on: bool) -> list[Event]:
    def blob(name: str) -> bytes:
        # Stand-ins for EFI signature lists: what matters is that enrolling keys changes PCR 7.
        return f"eve-agent emulated {name}".encode() if on else b""

    variables = [
        (_EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01" if on else b"\x00"),
        (_EFI_GLOBAL_VARIABLE, "PK", blob("PK")),
        (_EFI_GLOBAL_VARIABLE, "KEK", blob("KEK")),
        (_EFI_IMAGE_SECURITY_DATABASE, "db", blob("db")),
        (_EFI_IMAGE_SECURITY_DATABASE, "dbx", b""),
    ]
    return [
        make_event(7, tcglog.EV_EFI_VARIABLE_DRIVER_CONFIG, variable_data(guid, name, data))
        for guid, name, data in variables
    ]


def boot_events(c: BootComponents) -> list[Event]:
    """The records the emulated firmware and boot loader produce, in boot order."""
    events: list[Event] = []
    firmware_version = _ucs2(c.firmware)
    firmware_image = c.firmware.encode()
    events.append(make_event(0, tcglog.EV_S_CRTM_VERSION, firmware_version))
    events.append(
        make_event(
            0,
            tcglog.EV_EFI_PLATFORM_FIRMWARE_BLOB,
            struct.pack("<QQ", _FIRMWARE_BASE, len(firmware_image)),
            digested=firmware_image,
        )
    )
    events += _secure_boot_variables(c.secure_boot)

    boot_path = file_device_path(BOOTLOADER_PATH)
    order = b"".join(struct.pack("<H", i) for i in range(len(c.boot_options)))
    events.append(
        make_event(
            1,
            tcglog.EV_EFI_VARIABLE_BOOT,
            variable_data(_EFI_GLOBAL_VARIABLE, "BootOrder", order),
        )
    )
    for i, description in enumerate(c.boot_options):
        events.append(
            make_event(
                1,
                tcglog.EV_EFI_VARIABLE_BOOT,
                variable_data(
                    _EFI_GLOBAL_VARIABLE, f"Boot{i:04X}", load_option(description, boot_path)
                ),
            )
        )
    if c.platform:
        flags = "".join(f"{name}={value}\n" for name, value in c.platform)
        events.append(make_event(1, tcglog.EV_PLATFORM_CONFIG_FLAGS, flags.encode()))

    events.append(make_event(4, tcglog.EV_EFI_ACTION, _CALLING_EFI_APPLICATION))
    events += [make_event(pcr, tcglog.EV_SEPARATOR, tcglog.SEPARATOR_DATA) for pcr in range(8)]
    if c.secure_boot:
        events.append(
            make_event(
                7,
                tcglog.EV_EFI_VARIABLE_AUTHORITY,
                variable_data(_EFI_IMAGE_SECURITY_DATABASE, "db", b"eve-agent emulated db"),
            )
        )
    events.append(
        make_event(
            4,
            tcglog.EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load_event(c.bootloader, boot_path),
            digested=c.bootloader,
        )
    )

    # GRUB: read grub.cfg (PCR 9), run its commands (PCR 8); measurefs measures the rootfs.
    events.append(_grub_file(GRUB_CFG_FILE, c.grub_cfg.encode()))
    rootfs_digest = hashlib.sha256(c.rootfs.encode()).digest()
    for line in c.grub_cfg.splitlines():
        command = line.strip()
        if not command or command.startswith("#"):
            continue
        events.append(_grub_command(command))
        if command.startswith("measurefs "):
            events.append(
                make_event(
                    ROOTFS_PCR,
                    tcglog.EV_IPL,
                    f"squash4 {rootfs_digest.hex()}".encode() + b"\x00",
                    digested=rootfs_digest,
                )
            )
    kernel_name = "/boot/kernel"
    linux = f"linux {kernel_name} {c.kernel_cmdline}".rstrip()
    events.append(_grub_command(linux))
    events.append(_grub_file(KERNEL_FILE, c.kernel))
    cmdline = f"{kernel_name} {c.kernel_cmdline}".rstrip()
    events.append(_grub_string(f"kernel_cmdline: {cmdline}", cmdline))
    events.append(_grub_command("boot"))
    events.append(
        make_event(
            4,
            tcglog.EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load_event(c.kernel, file_device_path("\\boot\\kernel")),
            digested=c.kernel,
        )
    )
    events.append(make_event(5, tcglog.EV_EFI_ACTION, _EXIT_BOOT_SERVICES))
    events.append(make_event(5, tcglog.EV_EFI_ACTION, _EXIT_BOOT_SERVICES_OK))
    return events


def boot_log(c: BootComponents) -> bytes:
    """The complete binary log for ``c`` (what ``binary_bios_measurements`` would hold)."""
    return tcglog.write_log(boot_events(c))


def expected_pcrs(c: BootComponents) -> dict[int, bytes]:
    """SHA-256 PCRs 0-23 right after the emulated boot of ``c`` (before measure-config)."""
    return tcglog.replay(boot_events(c))


# --- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    problem: str = ""
    differing: tuple[int, ...] = ()
    events: tuple[Event, ...] = field(default=())


def measure_boot(tpm: PcrBank, components: BootComponents, log_path: Path) -> MeasureResult:
    """Measure the boot chain into ``tpm`` once per power cycle; write or check ``log_path``.

    Fresh power-on (PCR 0 reads zero): write the log, then extend every record; the result is
    MEASURED.  Otherwise this power cycle was measured before: nothing is extended and the saved
    log is checked against the TPM, giving ALREADY_MEASURED (with ``stale`` set when the
    components differ from those measured) or MISMATCH.

    Raises the TPM driver's errors and OSError (the log cannot be written).
    """
    events = boot_events(components)
    owned = tcglog.touched_pcrs(events)
    before = tpm.read_pcrs(list(range(tcglog.NUM_PCRS)))
    if before.get(0) == ZERO_PCR:
        dirty = [i for i in BOOT_PCRS_CHECKED_AT_POWER_ON if before.get(i) != ZERO_PCR]
        if dirty:
            return MeasureResult(
                MeasureState.MISMATCH,
                log_path,
                _subset(before, owned),
                problem=(
                    f"PCR 0 reads zero but PCR(s) {_indexes(dirty)} do not: something was "
                    "measured before the boot chain; reset the TPM to measure the boot"
                ),
                differing=tuple(dirty),
            )
        # The log goes first: a crash while extending leaves a log the PCRs do not match,
        # which the next start reports, rather than PCRs with no log at all.
        write_atomic(log_path, tcglog.write_log(events), mode=0o644)
        for event in events:
            if event.event_type == tcglog.EV_NO_ACTION:
                continue
            digest = event.digest(tcglog.ALG_SHA256)
            assert digest is not None
            tpm.extend_pcr(event.pcr, digest)
        after = tpm.read_pcrs(sorted(owned))
        check = _compare(events, after, owned)
        if check.problem:
            return MeasureResult(
                MeasureState.MISMATCH,
                log_path,
                after,
                problem=f"after measuring the boot: {check.problem}",
                differing=check.differing,
            )
        log.info("measured boot into PCRs %s (%d events)", _indexes(owned), len(events))
        return MeasureResult(MeasureState.MEASURED, log_path, after)

    result = check_log(tpm, log_path, pcrs=before, what="boot log")
    if result.state is MeasureState.VERIFIED:
        stale = _staleness(log_path, events)
        return MeasureResult(MeasureState.ALREADY_MEASURED, log_path, result.pcrs, stale=stale)
    return result


def check_log(
    tpm: PcrBank,
    log_path: Path,
    *,
    pcrs: Mapping[int, bytes] | None = None,
    what: str = "event log",
) -> MeasureResult:
    """Check that the log at ``log_path`` replays to the TPM for every PCR it touches.

    This is the whole job on real hardware: pass ``/sys/kernel/security/tpm0/
    binary_bios_measurements``; the firmware measured, nothing is extended.  VERIFIED or
    MISMATCH; raises only the TPM driver's errors.
    """
    values = dict(pcrs) if pcrs is not None else tpm.read_pcrs(list(range(tcglog.NUM_PCRS)))
    try:
        data = log_path.read_bytes()
    except FileNotFoundError:
        return MeasureResult(
            MeasureState.MISMATCH,
            log_path,
            values,
            problem=f"this power cycle was measured but there is no {what} at {log_path}",
        )
    except OSError as exc:
        return MeasureResult(
            MeasureState.MISMATCH, log_path, values, problem=f"cannot read {what}: {exc}"
        )
    try:
        parsed = tcglog.parse(data)
    except tcglog.TcgLogError as exc:
        return MeasureResult(
            MeasureState.MISMATCH, log_path, values, problem=f"{what} is corrupt: {exc}"
        )
    owned = tcglog.touched_pcrs(parsed)
    check = _compare(parsed.events, values, owned)
    if check.problem:
        return MeasureResult(
            MeasureState.MISMATCH,
            log_path,
            _subset(values, owned),
            problem=f"{what} {log_path}: {check.problem}",
            differing=check.differing,
        )
    return MeasureResult(MeasureState.VERIFIED, log_path, _subset(values, owned))


def _compare(events: Sequence[Event], values: Mapping[int, bytes], pcrs: frozenset[int]) -> _Check:
    try:
        diffs = tcglog.diff(events, values, pcrs=pcrs)
    except tcglog.TcgLogError as exc:
        return _Check(problem=f"cannot replay: {exc}")
    if not diffs:
        return _Check()
    differing = tuple(d.pcr for d in diffs)
    return _Check(
        problem=f"does not replay to the TPM's PCR(s) {_indexes(differing)}",
        differing=differing,
    )


def _staleness(log_path: Path, events: Sequence[Event]) -> str:
    """Which PCRs the current components would measure differently from the saved log."""
    try:
        saved = tcglog.parse(log_path.read_bytes()).events
    except (OSError, tcglog.TcgLogError):
        return ""
    pcrs = sorted(tcglog.touched_pcrs(events) | tcglog.touched_pcrs(saved))
    changed = [
        pcr
        for pcr in pcrs
        if tcglog.changed_events(saved, events, pcr) or tcglog.changed_events(events, saved, pcr)
    ]
    if not changed:
        return ""
    return (
        f"boot components changed since this power cycle was measured (PCR(s) "
        f"{_indexes(changed)}); they are measured after the next TPM reset"
    )


def _subset(values: Mapping[int, bytes], pcrs: frozenset[int]) -> dict[int, bytes]:
    return {i: values[i] for i in sorted(pcrs) if i in values}


def _indexes(pcrs: Sequence[int] | frozenset[int]) -> str:
    return ", ".join(str(i) for i in sorted(pcrs))
