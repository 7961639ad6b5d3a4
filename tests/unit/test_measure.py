"""agent.measure: the emulated firmware/boot loader (PCRs 0-9, 13) and measure-config (PCR 14)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path

import pytest

from agent.drivers.tpm_fake import FakeTpm
from agent.measure import MeasureState, PcrBank, attestation_log, gzip_log
from agent.measure.boot import BootComponents, boot_events, check_log, expected_pcrs, measure_boot
from agent.measure.configfs import CONFIG_PCR, config_files, measure_config
from agent.wire import tcglog

ZERO = bytes(32)


class StubTpm:
    """The two calls measuring needs, with real extend semantics; counts extends."""

    def __init__(self) -> None:
        self.pcrs = {i: (b"\xff" * 32 if 17 <= i <= 22 else ZERO) for i in range(24)}
        self.extends = 0

    def read_pcrs(self, pcrs: Sequence[int]) -> dict[int, bytes]:
        return {i: self.pcrs[i] for i in pcrs}

    def extend_pcr(self, index: int, digest: bytes) -> None:
        assert len(digest) == 32
        self.pcrs[index] = hashlib.sha256(self.pcrs[index] + digest).digest()
        self.extends += 1


@pytest.fixture(scope="module")
def fake_state() -> MutableMapping[str, bytes]:
    state: dict[str, bytes] = {}
    FakeTpm(state).provision()
    return state


@pytest.fixture(params=["stub", "fake"])
def tpm(
    request: pytest.FixtureRequest, fake_state: MutableMapping[str, bytes]
) -> Iterator[PcrBank]:
    if request.param == "stub":
        yield StubTpm()
    else:
        fake = FakeTpm(fake_state)  # a fresh FakeTpm on the same state: a power cycle
        yield fake
        fake.close()


def node(version: str = "1.0.0", **kwargs: object) -> BootComponents:
    return BootComponents.for_node(agent_version=version, **kwargs)  # type: ignore[arg-type]


def differing(a: BootComponents, b: BootComponents) -> set[int]:
    first, second = expected_pcrs(a), expected_pcrs(b)
    return {i for i in range(24) if first[i] != second[i]}


# --- boot ---------------------------------------------------------------------------------------


def test_boot_log_replays_exactly_to_the_tpm(tpm: PcrBank, tmp_path: Path) -> None:
    log_path = tmp_path / "boot" / "binary_bios_measurements"
    result = measure_boot(tpm, node(), log_path)
    assert result.state is MeasureState.MEASURED, result.problem
    assert result.ok
    parsed = tcglog.parse(log_path.read_bytes())
    replayed = tcglog.replay(parsed)
    actual = tpm.read_pcrs(list(range(24)))
    touched = tcglog.touched_pcrs(parsed)
    assert touched == frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13})
    for pcr in range(16):
        assert replayed[pcr] == actual[pcr], pcr
    assert dict(result.pcrs) == {i: actual[i] for i in sorted(touched)}
    # The log is a realistic one: separators on 0-7, the boot loader and kernel in PCR 4.
    types = {(e.pcr, e.type_name) for e in parsed.events}
    assert {(i, "EV_SEPARATOR") for i in range(8)} <= types
    assert (4, "EV_EFI_BOOT_SERVICES_APPLICATION") in types
    assert (0, "EV_S_CRTM_VERSION") in types
    assert (7, "EV_EFI_VARIABLE_DRIVER_CONFIG") in types
    grub = [e.data for e in parsed.events if e.pcr == 8]
    assert b"grub_cmd: boot\x00" in grub
    assert any(d.startswith(b"kernel_cmdline: /boot/kernel ") for d in grub)
    assert any(e.data.startswith(b"squash4 ") for e in parsed.events if e.pcr == 13)


def test_measuring_twice_in_one_power_cycle_extends_once(tmp_path: Path) -> None:
    tpm = StubTpm()
    log_path = tmp_path / "bios"
    assert measure_boot(tpm, node(), log_path).state is MeasureState.MEASURED
    extends, pcrs, log_bytes = tpm.extends, dict(tpm.pcrs), log_path.read_bytes()
    assert extends == len(boot_events(node()))
    again = measure_boot(tpm, node(), log_path)
    assert again.state is MeasureState.ALREADY_MEASURED
    assert again.ok and not again.stale
    assert tpm.extends == extends and tpm.pcrs == pcrs
    assert log_path.read_bytes() == log_bytes


def test_power_cycle_measures_again(fake_state: MutableMapping[str, bytes], tmp_path: Path) -> None:
    log_path = tmp_path / "bios"
    first = FakeTpm(fake_state)
    assert measure_boot(first, node("1.0.0"), log_path).state is MeasureState.MEASURED
    before = first.read_pcrs(list(range(16)))
    first.close()
    second = FakeTpm(fake_state)
    assert measure_boot(second, node("2.0.0"), log_path).state is MeasureState.MEASURED
    after = second.read_pcrs(list(range(16)))
    assert {i for i in range(16) if before[i] != after[i]} == {4, 9, 13}
    second.close()


@pytest.mark.parametrize(
    ("change", "pcrs"),
    [
        ({"firmware": "vendor firmware 2.0"}, {0}),
        ({"platform": {"memory": "4096M"}}, {1}),
        ({"boot_options": ["EVE", "USB stick"]}, {1}),
        ({"bootloader": "GRUB 2.14"}, {4}),
        ({"kernel": "another kernel"}, {4, 9}),
        ({"kernel_cmdline": "console=ttyS1"}, {8}),
        ({"secure_boot": True}, {7}),
    ],
)
def test_a_changed_component_changes_exactly_its_pcrs(
    change: dict[str, object], pcrs: set[int]
) -> None:
    assert differing(node(), node(**change)) == pcrs  # type: ignore[arg-type]


def test_a_new_agent_version_changes_the_rootfs_pcr_and_the_default_kernel(
    tmp_path: Path,
) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\x7fELF kernel image")
    # With a kernel file, only the rootfs (PCR 13) follows the agent version.
    assert differing(node("1.0", kernel=kernel), node("1.1", kernel=kernel)) == {13}
    # Without one, the kernel is identified by the agent version too.
    assert differing(node("1.0"), node("1.1")) == {4, 9, 13}
    # File contents are what counts.
    other = tmp_path / "vmlinuz2"
    other.write_bytes(b"\x7fELF kernel image, patched")
    assert differing(node(kernel=kernel), node(kernel=other)) == {4, 9}


def test_changed_components_in_the_same_power_cycle_are_reported_stale(tmp_path: Path) -> None:
    tpm = StubTpm()
    log_path = tmp_path / "bios"
    measure_boot(tpm, node(), log_path)
    extends = tpm.extends
    result = measure_boot(tpm, node(kernel_cmdline="quiet"), log_path)
    assert result.state is MeasureState.ALREADY_MEASURED
    assert "PCR(s) 8" in result.stale
    assert tpm.extends == extends


def test_a_log_that_no_longer_replays_is_reported(tmp_path: Path) -> None:
    tpm = StubTpm()
    log_path = tmp_path / "bios"
    measure_boot(tpm, node(), log_path)
    tpm.extend_pcr(4, bytes(32))  # something measured behind the log's back
    result = measure_boot(tpm, node(), log_path)
    assert result.state is MeasureState.MISMATCH
    assert not result.ok
    assert result.differing == (4,)
    assert "PCR(s) 4" in result.problem


def test_a_missing_or_corrupt_log_is_reported(tmp_path: Path) -> None:
    tpm = StubTpm()
    log_path = tmp_path / "bios"
    measure_boot(tpm, node(), log_path)
    extends = tpm.extends
    log_path.write_bytes(log_path.read_bytes()[:-3])
    corrupt = measure_boot(tpm, node(), log_path)
    assert corrupt.state is MeasureState.MISMATCH
    assert "corrupt" in corrupt.problem
    log_path.unlink()
    missing = measure_boot(tpm, node(), log_path)
    assert missing.state is MeasureState.MISMATCH
    assert "no boot log" in missing.problem
    assert tpm.extends == extends


def test_pcrs_measured_before_the_boot_chain_are_reported(tmp_path: Path) -> None:
    tpm = StubTpm()
    tpm.extend_pcr(3, bytes(32))
    result = measure_boot(tpm, node(), tmp_path / "bios")
    assert result.state is MeasureState.MISMATCH
    assert result.differing == (3,)
    assert tpm.extends == 1
    assert not (tmp_path / "bios").exists()


def test_check_log_verifies_a_log_someone_else_wrote(tmp_path: Path) -> None:
    """On hardware the kernel's binary_bios_measurements is only checked, never extended."""
    tpm = StubTpm()
    firmware_log = tmp_path / "binary_bios_measurements"
    events = boot_events(node(firmware="real firmware"))
    for event in events:
        digest = event.digest()
        assert digest is not None
        tpm.extend_pcr(event.pcr, digest)
    firmware_log.write_bytes(tcglog.write_log(events))
    extends = tpm.extends
    result = check_log(tpm, firmware_log)
    assert result.state is MeasureState.VERIFIED
    assert tpm.extends == extends
    tpm.extend_pcr(0, bytes(32))
    assert check_log(tpm, firmware_log).differing == (0,)


# --- configuration partition ------------------------------------------------------------------


def make_config(root: Path) -> Path:
    config = root / "config"
    config.mkdir()
    (config / "server").write_text("ctl.example:8443\n")
    (config / "root-certificate.pem").write_text("ROOT\n")
    (config / "onboard.cert.pem").write_text("ONBOARD CERT\n")
    (config / "onboard.key.pem").write_text("ONBOARD KEY\n")
    (config / "DevicePortConfig").mkdir()
    (config / "DevicePortConfig" / "override.json").write_text("{}")
    return config


def test_config_files_are_measured_as_eve_does(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    texts = [f.event_data().decode() for f in config_files(config)]
    server_hash = hashlib.sha256(b"ctl.example:8443\n").hexdigest()
    override_hash = hashlib.sha256(b"{}").hexdigest()
    assert texts == [
        f"file:/config/DevicePortConfig/override.json exist:true content-hash:{override_hash}",
        "file:/config/GlobalConfig/global.json exist:false",
        "file:/config/bootstrap-config.pb exist:false",
        "file:/config/device.cert.pem exist:false",
        "file:/config/device.key.pem exist:false",
        "file:/config/ftpm.tar.xz exist:false",
        "file:/config/onboard.cert.pem exist:true",
        "file:/config/onboard.key.pem exist:true",
        "file:/config/root-certificate.pem exist:true content-hash:"
        + hashlib.sha256(b"ROOT\n").hexdigest(),
        "file:/config/serial exist:false",
        f"file:/config/server exist:true content-hash:{server_hash}",
        "file:/config/soft_serial exist:false",
        "file:/config/tpm_credential exist:false",
    ]


def test_config_measurement_replays_and_runs_once(tpm: PcrBank, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    log_path = tmp_path / "persist" / "status" / "measurefs_tpm_event_log"
    result = measure_config(tpm, config, log_path)
    assert result.state is MeasureState.MEASURED, result.problem
    events = tcglog.parse_events(log_path.read_bytes())
    assert {e.pcr for e in events} == {CONFIG_PCR}
    assert {e.event_type for e in events} == {tcglog.EV_EFI_ACTION}
    value = tpm.read_pcrs([CONFIG_PCR])[CONFIG_PCR]
    assert tcglog.replay(events)[CONFIG_PCR] == value
    again = measure_config(tpm, config, log_path)
    assert again.state is MeasureState.ALREADY_MEASURED and not again.stale
    assert tpm.read_pcrs([CONFIG_PCR])[CONFIG_PCR] == value

    (config / "server").write_text("evil.example:8443\n")
    changed = measure_config(tpm, config, log_path)
    assert changed.state is MeasureState.ALREADY_MEASURED
    assert "changed" in changed.stale
    assert tpm.read_pcrs([CONFIG_PCR])[CONFIG_PCR] == value


def test_only_measured_content_changes_pcr14(tmp_path: Path) -> None:
    def pcr14(config: Path) -> bytes:
        tpm = StubTpm()
        measure_config(tpm, config, tmp_path / "log")
        return tpm.pcrs[CONFIG_PCR]

    config = make_config(tmp_path)
    baseline = pcr14(config)
    (config / "onboard.cert.pem").write_text("another device's onboarding cert\n")
    assert pcr14(config) == baseline  # presence only
    (config / "root-certificate.pem").write_text("ANOTHER ROOT\n")
    changed_root = pcr14(config)
    assert changed_root != baseline
    (config / "GlobalConfig").mkdir()
    (config / "GlobalConfig" / "global.json").write_text("{}")
    assert pcr14(config) != changed_root  # a "dangerous" file appearing


def test_config_log_mismatch_is_reported(tmp_path: Path) -> None:
    tpm = StubTpm()
    config = make_config(tmp_path)
    log_path = tmp_path / "log"
    measure_config(tpm, config, log_path)
    tpm.extend_pcr(CONFIG_PCR, bytes(32))
    result = measure_config(tpm, config, log_path)
    assert result.state is MeasureState.MISMATCH
    assert result.differing == (CONFIG_PCR,)
    log_path.unlink()
    assert "no log" in measure_config(tpm, config, log_path).problem


def test_attestation_log_is_one_log_for_pcrs_0_to_23(tpm: PcrBank, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    boot_log = tmp_path / "boot" / "binary_bios_measurements"
    config_log = tmp_path / "measurefs_tpm_event_log"
    assert measure_boot(tpm, node(), boot_log).ok
    assert measure_config(tpm, config, config_log).ok
    data = attestation_log(boot_log, config_log)
    assert data is not None
    parsed = tcglog.parse(data)
    assert tcglog.touched_pcrs(parsed) == frozenset({*range(10), 13, 14})
    assert tcglog.diff(parsed, tpm.read_pcrs(list(range(24)))) == []
    assert gzip_log(data) == gzip_log(data)  # deterministic (mtime 0)
    assert attestation_log(tmp_path / "missing") is None
    assert attestation_log(boot_log, tmp_path / "missing") == boot_log.read_bytes()
