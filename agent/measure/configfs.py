"""Measure the configuration partition into PCR 14, as EVE's ``measure-config`` does.

What EVE does (``pkg/measure-config/src/measurefs.go``), and so do we:

* every file under ``/config`` (recursively), plus the files of two fixed lists whether they
  exist or not, so that every device measures the same list of names;
* in byte order of the path (Go's ``sort.Strings``), each one as a separate event;
* the "exclude" list (``tpm_credential``, ``device.cert.pem``, ``device.key.pem``,
  ``onboard.cert.pem``, ``onboard.key.pem``, ``soft_serial``, ``ftpm.tar.xz``) has its presence
  measured but not its content, because those files differ from device to device;
* the "dangerous" list (``bootstrap-config.pb``, ``DevicePortConfig/override.json``,
  ``GlobalConfig/global.json``) is measured as absent when missing, so a file appearing later
  changes PCR 14;
* event data is ASCII ``file:<path> exist:true content-hash:<sha256 hex>`` for measured
  content, else ``file:<path> exist:<true|false>`` (no NUL); paths over 512 bytes are replaced by
  their base name; type ``EV_EFI_ACTION``; EVE uses TPM2_PCR_Event, so the SHA-256 bank is
  extended with SHA-256 of the event data, which is what we extend;
* the log is header-less ``TCG_PCR_EVENT2`` records with one SHA-256 digest each, written to
  ``/persist/status/measurefs_tpm_event_log``.

So ``server`` and ``root-certificate.pem`` are measured with their content (changing the
controller changes PCR 14 and locks the vault, as SECURITY-ARCHITECTURE.md says), and
``onboard.cert.pem`` only by presence.  Paths are always named ``/config/...`` whatever the
node's real config directory is, so emulated nodes on one host measure like EVE nodes.  One
addition for emulation: ``serial``, our stand-in for the DMI serial number EVE reads from the
hardware, is per device and joins the exclude list.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.measure import ZERO_PCR, MeasureResult, MeasureState, PcrBank
from agent.util.atomicfile import write_atomic
from agent.wire import tcglog
from agent.wire.tcglog import Event, make_event

log = logging.getLogger(__name__)

CONFIG_PCR = 14
EVE_CONFIG_ROOT = PurePosixPath("/config")
EXCLUDED: tuple[str, ...] = (
    "tpm_credential",
    "device.cert.pem",
    "device.key.pem",
    "onboard.cert.pem",
    "onboard.key.pem",
    "soft_serial",
    "ftpm.tar.xz",
    "serial",  # ours: the emulated hardware serial (EVE reads it from DMI, not /config)
)
"""Relative to the config directory: presence measured, content not (unique per device)."""
DANGEROUS: tuple[str, ...] = (
    "bootstrap-config.pb",
    "DevicePortConfig/override.json",
    "GlobalConfig/global.json",
)
"""Relative to the config directory: always measured, as absent when missing."""
MAX_EVENT_PATH = 512


class ConfigMeasureError(OSError):
    """A file of the configuration partition cannot be read."""


@dataclass(frozen=True)
class ConfigFile:
    """One measured name."""

    name: str
    """As EVE names it: ``/config/<relative path>``."""
    exists: bool
    content_hash: str | None
    """Hex SHA-256 of the content, when it is measured."""

    def event_data(self) -> bytes:
        shown = self.name if len(self.name) <= MAX_EVENT_PATH else PurePosixPath(self.name).name
        if self.content_hash is not None:
            return f"file:{shown} exist:true content-hash:{self.content_hash}".encode()
        return f"file:{shown} exist:{'true' if self.exists else 'false'}".encode()


def config_files(config_dir: Path) -> list[ConfigFile]:
    """The names measure-config measures for ``config_dir``, in measuring order.

    Raises ConfigMeasureError when a file cannot be read (measure-config fails then too).
    """
    found: dict[str, Path] = {}
    if config_dir.is_dir():
        for directory, dirs, files in os.walk(config_dir, onerror=_walk_error):
            # A symlink to a directory is not descended into; like Go's filepath.Walk we treat
            # it as a file, whose measurement then fails.
            links = [d for d in dirs if Path(directory, d).is_symlink()]
            for file_name in (*files, *links):
                path = Path(directory, file_name)
                relative = path.relative_to(config_dir).as_posix()
                found[relative] = path
    out: dict[str, ConfigFile] = {}
    for relative, path in found.items():
        name = str(EVE_CONFIG_ROOT / relative)
        if relative in EXCLUDED:
            out[name] = ConfigFile(name, True, None)
        else:
            out[name] = ConfigFile(name, True, _sha256_file(path))
    for relative in (*EXCLUDED, *DANGEROUS):
        name = str(EVE_CONFIG_ROOT / relative)
        out.setdefault(name, ConfigFile(name, False, None))
    return [out[name] for name in sorted(out, key=lambda n: n.encode())]


def config_events(config_dir: Path) -> list[Event]:
    """The PCR 14 records for ``config_dir``."""
    files = config_files(config_dir)
    return [make_event(CONFIG_PCR, tcglog.EV_EFI_ACTION, f.event_data()) for f in files]


def measure_config(tpm: PcrBank, config_dir: Path, log_path: Path) -> MeasureResult:
    """Measure ``config_dir`` into PCR 14 once per power cycle; write or check ``log_path``.

    PCR 14 reads zero: extend one record per file and write the header-less log (MEASURED).
    Otherwise the saved log must replay to PCR 14 (ALREADY_MEASURED, ``stale`` set when the
    files changed since: like on EVE they count from the next boot), else MISMATCH.

    Raises ConfigMeasureError, OSError (log not written) and the TPM driver's errors.
    """
    events = config_events(config_dir)
    current = tpm.read_pcrs([CONFIG_PCR])
    if current.get(CONFIG_PCR) == ZERO_PCR:
        write_atomic(log_path, tcglog.encode_events(events), mode=0o644)
        for event in events:
            digest = event.digest(tcglog.ALG_SHA256)
            assert digest is not None
            tpm.extend_pcr(CONFIG_PCR, digest)
        after = tpm.read_pcrs([CONFIG_PCR])
        if after.get(CONFIG_PCR) != tcglog.replay(events)[CONFIG_PCR]:
            return MeasureResult(
                MeasureState.MISMATCH,
                log_path,
                after,
                problem="PCR 14 changed while the configuration was measured",
                differing=(CONFIG_PCR,),
            )
        log.info("measured %d configuration files into PCR 14", len(events))
        return MeasureResult(MeasureState.MEASURED, log_path, after)

    try:
        saved = tcglog.parse_events(log_path.read_bytes())
    except FileNotFoundError:
        return _mismatch(log_path, current, f"PCR 14 is measured but there is no log {log_path}")
    except OSError as exc:
        return _mismatch(log_path, current, f"cannot read {log_path}: {exc}")
    except tcglog.TcgLogError as exc:
        return _mismatch(log_path, current, f"configuration log {log_path} is corrupt: {exc}")
    if any(e.pcr != CONFIG_PCR for e in saved):
        return _mismatch(log_path, current, f"configuration log {log_path} names other PCRs")
    try:
        replayed = tcglog.replay(saved)[CONFIG_PCR]
    except tcglog.TcgLogError as exc:
        return _mismatch(log_path, current, f"configuration log cannot be replayed: {exc}")
    if replayed != current.get(CONFIG_PCR):
        return _mismatch(
            log_path, current, f"configuration log {log_path} does not replay to PCR 14"
        )
    stale = ""
    changed = [
        e.data.decode("ascii", "replace")
        for e in (
            *tcglog.changed_events(events, saved, CONFIG_PCR),  # measured, since removed/changed
            *tcglog.changed_events(saved, events, CONFIG_PCR),  # on disk now, not measured
        )
    ]
    if changed:
        stale = (
            "the configuration partition changed since it was measured in this power cycle "
            f"({'; '.join(changed[:4])}{'; ...' if len(changed) > 4 else ''}); "
            "the change is measured after the next TPM reset"
        )
    return MeasureResult(MeasureState.ALREADY_MEASURED, log_path, current, stale=stale)


def _mismatch(log_path: Path, values: dict[int, bytes], problem: str) -> MeasureResult:
    return MeasureResult(
        MeasureState.MISMATCH, log_path, values, problem=problem, differing=(CONFIG_PCR,)
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 16):
                digest.update(chunk)
    except OSError as exc:
        raise ConfigMeasureError(f"cannot measure {path}: {exc}") from exc
    return digest.hexdigest()


def _walk_error(exc: OSError) -> None:
    raise ConfigMeasureError(f"cannot list the configuration partition: {exc}") from exc
