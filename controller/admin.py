"""The operator's commands, working directly on the state directory.

There is no network admin API: these functions open ``controller.db`` (SQLite in WAL mode, so
they run safely beside a live ``serve``) and the certificate files.  Whoever can run them can
read the state directory, which is mode 0700; that is the whole access control.

Each function prints its result and raises AdminError for anything the operator must fix.
Listings print a table, or JSON with ``as_json``; stored messages always print as JSON lines.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from agent.wire import pki
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2
from controller import baseosreport, clusterwork, configs, configsecrets, deviceops
from controller.clusters import ClusterStore
from controller.records import (
    ConfigVersion,
    Device,
    ObjectKind,
    ObjectStatus,
    OnboardEntry,
    PcrPolicy,
    PcrReport,
    ReportKind,
    rfc3339,
)
from controller.state import StateDir
from controller.store import Store, UnknownDevice


class AdminError(Exception):
    """A problem the operator has to fix; printed without a traceback."""


@contextmanager
def open_store(state: StateDir) -> Iterator[Store]:
    """The state's database; refuses a directory that ``init`` never made."""
    if not state.database.exists():
        raise AdminError(f"no controller state in {state.root}: run 'eve-controller init' first")
    with Store.open(state.database) as store:
        yield store


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for line in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def resolve_device(store: Store, text: str) -> Device:
    """A device by full UUID or by a unique prefix of it."""
    exact = store.device(text.lower())
    if exact is not None:
        return exact
    matches = [d for d in store.list_devices() if d.uuid.startswith(text.lower())]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AdminError(f"no device {text}")
    raise AdminError(f"{text} matches {len(matches)} devices; give more of the UUID")


# --- onboarding ------------------------------------------------------------------------------


def onboard_add(state: StateDir, cert_file: Path, serials: Sequence[str], any_serial: bool) -> None:
    """Allow ``cert_file`` to register devices with ``serials`` (or any serial)."""
    try:
        cert = pki.load_cert(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise AdminError(f"{cert_file}: cannot read a certificate: {exc}") from exc
    sha = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    with open_store(state) as store:
        entry = store.add_onboard(
            cert_pem=cert.public_bytes(Encoding.PEM),
            cert_sha256=sha,
            subject=cert.subject.rfc4514_string(),
            serials=serials,
            any_serial=any_serial,
        )
    print(f"{entry.cert_sha256} {entry.subject}: {_serials_text(entry)}")


def onboard_list(state: StateDir, *, as_json: bool) -> None:
    with open_store(state) as store:
        entries = store.list_onboard()
    if as_json:
        _print_json([_onboard_json(e) for e in entries])
        return
    _print_table(
        ("SHA256", "SUBJECT", "SERIALS"),
        [(e.cert_sha256, e.subject, _serials_text(e)) for e in entries],
    )


def onboard_remove(
    state: StateDir, *, cert_file: Path | None, sha256: str | None, serials: Sequence[str]
) -> None:
    """Remove an onboarding certificate (or only some serials of it) from the allow-list."""
    if cert_file is not None:
        try:
            der = pki.load_cert(cert_file.read_bytes()).public_bytes(Encoding.DER)
        except (OSError, ValueError) as exc:
            raise AdminError(f"{cert_file}: cannot read a certificate: {exc}") from exc
        sha256 = hashlib.sha256(der).hexdigest()
    assert sha256 is not None
    with open_store(state) as store:
        if not store.remove_onboard(sha256.lower(), serials):
            raise AdminError(f"onboarding certificate {sha256} is not on the allow-list")
    what = f"serials {', '.join(serials)} of" if serials else "onboarding certificate"
    print(f"removed {what} {sha256}")


def _serials_text(entry: OnboardEntry) -> str:
    if entry.any_serial:
        return "any serial"
    return ", ".join(entry.serials) or "(none)"


def _onboard_json(entry: OnboardEntry) -> dict[str, Any]:
    return {
        "cert_sha256": entry.cert_sha256,
        "subject": entry.subject,
        "any_serial": entry.any_serial,
        "serials": list(entry.serials),
        "added_at": rfc3339(entry.added_at),
    }


# --- devices ---------------------------------------------------------------------------------


def device_list(state: StateDir, *, as_json: bool) -> None:
    with open_store(state) as store:
        devices = store.list_devices()
        tags = ClusterStore(store.connection, store.clock).all_tags()
    if as_json:
        _print_json([{**_device_summary(d), "tags": tags.get(d.uuid, {})} for d in devices])
        return
    _print_table(
        ("UUID", "SERIAL", "REGISTERED", "LAST SEEN", "ATTESTATION", "TAGS"),
        [
            (
                d.uuid,
                d.serial or "-",
                rfc3339(d.registered_at) or "-",
                rfc3339(d.last_seen) or "-",
                str(d.attest_state),
                _tags_text(tags.get(d.uuid, {})),
            )
            for d in devices
        ],
    )


def _tags_text(tags: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "-"


def device_show(state: StateDir, device_text: str, *, as_json: bool) -> None:
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        current = store.current_config(device.uuid)
        counts = store.report_counts(device.uuid)
        logs = store.log_count(device.uuid)
        certs = store.device_certs(device.uuid)
        keys = len(store.storage_keys(device.uuid))
        policy = store.pcr_policy(device.uuid)
        pcr_report = store.pcr_report(device.uuid)
        objects = store.object_statuses(device.uuid)
        clusters = ClusterStore(store.connection, store.clock)
        tags = clusters.tags(device.uuid)
        member = clusters.membership(device.uuid)
        cluster = clusters.cluster(member.cluster_id) if member else None
        power = deviceops.power_summary(store, device.uuid)
        partitions = baseosreport.device_partitions(store.connection, device.uuid)
    detail = {
        **_device_summary(device),
        "tags": tags,
        "cluster": (
            {"name": cluster.name, "id": cluster.id, "role": member.role.value}
            if cluster and member
            else None
        ),
        "cert_sha256": device.cert_sha256.hex(),
        "require_attestation": device.require_attestation,
        "allow_no_tpm": device.allow_no_tpm,
        "attestation": {
            "state": str(device.attest_state),
            "reason": device.attest_reason,
            "at": rfc3339(device.attest_at),
            "integrity_token": device.integrity_token is not None,
            "escrowed_keys": keys,
            "pcr_policy": _policy_summary(policy, pcr_report),
        },
        "device_certs": [
            {
                "type": _cert_type_name(c.cert_type),
                "is_mutable": c.is_mutable,
                "is_tpm": c.is_tpm,
            }
            for c in certs
        ],
        "config": None if current is None else _config_json(current),
        "counts": {**{k.value: n for k, n in counts.items()}, "logs": logs},
        "objects": _objects_summary(objects),
        "power": power,
        "baseos": partitions,
    }
    if as_json:
        _print_json(detail)
        return
    attestation = detail["attestation"]
    rows = [
        ("uuid", device.uuid),
        ("device cert sha256", detail["cert_sha256"]),
        ("serial", device.serial or "-"),
        ("onboarding cert", device.onboard_sha256 or "-"),
        ("registered", rfc3339(device.registered_at) or "-"),
        ("last seen", rfc3339(device.last_seen) or "-"),
        ("require attestation", _yes(device.require_attestation)),
        ("require TPM", _yes(not device.allow_no_tpm)),
        ("attestation", f"{attestation['state']} {attestation['reason']}".strip()),
        ("attested at", attestation["at"] or "-"),
        ("integrity token", _yes(device.integrity_token is not None)),
        ("escrowed keys", str(keys)),
        ("PCR policy", _policy_text(policy, pcr_report)),
        ("device certs", ", ".join(c["type"] for c in detail["device_certs"]) or "-"),
        ("tags", _tags_text(tags)),
        ("cluster", f"{cluster.name} ({member.role})" if cluster and member else "-"),
    ]
    if current is not None:
        rows.append(
            (
                "config",
                f"version {current.version} {current.config_hash} {current.config_timestamp}",
            )
        )
    counts_text = ", ".join(f"{k} {n}" for k, n in detail["counts"].items())
    rows.append(("stored", counts_text))
    rows.append(("objects", _objects_text(detail["objects"])))
    rows.append(("power", deviceops.power_text(power)))
    base_lines = baseosreport.partitions_text(partitions).splitlines()
    rows += [("base OS" if i == 0 else "", line) for i, line in enumerate(base_lines)]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")


def device_set(
    state: StateDir,
    device_text: str,
    *,
    require_tpm: bool | None,
    require_attestation: bool | None,
) -> None:
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        device = store.set_device_policy(
            device.uuid,
            require_attestation=require_attestation,
            allow_no_tpm=None if require_tpm is None else not require_tpm,
        )
    print(
        f"{device.uuid}: require attestation {_yes(device.require_attestation)}, "
        f"require TPM {_yes(not device.allow_no_tpm)}"
    )


def device_remove(state: StateDir, device_text: str) -> None:
    """Forget a device; it can register again with its onboarding certificate."""
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        clusterwork.forget_device(store, device.uuid)  # its cluster's history says why it left
        store.remove_device(device.uuid)
    print(f"removed {device.uuid}")


# --- attestation PCR policy ----------------------------------------------------------------


def parse_pcr_list(text: str) -> tuple[int, ...] | None:
    """``0,1,2,4-7`` to PCR indexes (0-15, the quoted ones); ``default`` to None."""
    if text.strip().lower() == "default":
        return None
    pcrs: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise AdminError(f"bad PCR list {text!r}: use numbers like 0,1,2,4-7") from None
        if not 0 <= first <= last <= 15:
            raise AdminError(f"PCR {part} is out of range: a policy checks quoted PCRs 0-15")
        pcrs.update(range(first, last + 1))
    if not pcrs:
        raise AdminError("the policy must check at least one PCR")
    return tuple(sorted(pcrs))


def attest_policy(
    state: StateDir,
    device_text: str,
    *,
    accept_current: bool = False,
    reset: bool = False,
    pcrs: str | None = None,
    as_json: bool = False,
) -> None:
    """Show a device's PCR policy, or change it (accept the last PCRs, forget, choose PCRs).

    Changes apply from the device's next attestation; a device that failed gets no config
    until it attests again (EVE retries by itself).
    """
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        if accept_current:
            if store.accept_reported_pcrs(device.uuid) is None:
                raise AdminError(
                    f"{device.uuid} has not sent a verified quote yet: nothing to accept"
                )
            print(f"{device.uuid}: the last reported PCR values are now the golden values")
        elif reset:
            store.set_golden(device.uuid, None, None, None)
            print(
                f"{device.uuid}: golden PCR values forgotten; the next verified quote sets "
                "them (trust on first use)"
            )
        elif pcrs is not None:
            chosen = parse_pcr_list(pcrs)
            policy = store.set_policy_pcrs(device.uuid, chosen)
            print(f"{device.uuid}: the policy checks PCRs {_pcr_ranges(policy.pcrs)}")
        policy = store.pcr_policy(device.uuid)
        report = store.pcr_report(device.uuid)
    if accept_current or reset or pcrs is not None:
        return
    if as_json:
        _print_json({"uuid": device.uuid, **_policy_json(policy, report)})
        return
    _print_policy(device, policy, report)


def _pcr_ranges(pcrs: Sequence[int]) -> str:
    """``0,1,2,3,4,6`` as ``0-4,6``."""
    runs: list[list[int]] = []
    for pcr in sorted(pcrs):
        if runs and runs[-1][-1] == pcr - 1:
            runs[-1].append(pcr)
        else:
            runs.append([pcr])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)


def _policy_summary(policy: PcrPolicy, report: PcrReport | None) -> dict[str, Any]:
    return {
        "pcrs": list(policy.pcrs),
        "default_pcrs": not policy.custom_pcrs,
        "golden_source": policy.golden_source.value if policy.golden_source else None,
        "golden_at": rfc3339(policy.golden_at),
        "last_quote_at": rfc3339(report.reported_at) if report else None,
        "mismatched_pcrs": list(report.mismatched) if report else [],
    }


def _policy_text(policy: PcrPolicy, report: PcrReport | None) -> str:
    text = f"PCRs {_pcr_ranges(policy.pcrs)}{'' if policy.custom_pcrs else ' (default)'}; "
    if policy.golden is None:
        text += "golden values: none yet (learnt at the next verified quote)"
    else:
        source = policy.golden_source.value if policy.golden_source else "set"
        text += f"golden values: {source} {rfc3339(policy.golden_at) or ''}".rstrip()
    if report is not None and report.mismatched:
        text += f"; last quote differs in PCR(s) {', '.join(map(str, report.mismatched))}"
    return text


def _policy_json(policy: PcrPolicy, report: PcrReport | None) -> dict[str, Any]:
    return {
        **_policy_summary(policy, report),
        "golden": (
            None
            if policy.golden is None
            else {str(i): v.hex() for i, v in sorted(policy.golden.items())}
        ),
        "reported": (
            None if report is None else {str(i): v.hex() for i, v in sorted(report.pcrs.items())}
        ),
        "quoted_pcrs": list(report.quoted) if report else [],
        "versions": [list(v) for v in report.versions] if report else [],
        "event_log_bytes": len(report.event_log) if report and report.event_log else 0,
        "detail": report.detail if report else "",
    }


def _print_policy(device: Device, policy: PcrPolicy, report: PcrReport | None) -> None:
    print(f"device            {device.uuid}")
    print(f"attestation       {device.attest_state} {device.attest_reason}".rstrip())
    print(f"policy            {_policy_text(policy, report)}")
    if report is None:
        print("last quote        none verified yet")
        return
    versions = ", ".join(f"{t}={v}" for t, v in report.versions) or "-"
    log_note = f"{len(report.event_log)} bytes" if report.event_log else "none"
    print(
        f"last quote        {rfc3339(report.reported_at)} (versions: {versions}; event log: "
        f"{log_note})"
    )
    golden = policy.golden or {}
    rows = []
    for pcr in sorted(set(report.pcrs) | set(golden)):
        mark = "*" if pcr in policy.pcrs else ""
        current = report.pcrs.get(pcr)
        expected = golden.get(pcr)
        state = ""
        if pcr in policy.pcrs and policy.golden is not None:
            state = "ok" if current == expected else "DIFFERS"
        rows.append(
            (
                f"{pcr}{mark}",
                expected.hex() if expected is not None else "-",
                current.hex() if current is not None else "-",
                state,
            )
        )
    print()
    _print_table(("PCR", "GOLDEN", "REPORTED", ""), rows)
    print("(* = checked by the policy)")
    if report.detail:
        print()
        print(report.detail)


def _device_summary(device: Device) -> dict[str, Any]:
    return {
        "uuid": device.uuid,
        "serial": device.serial,
        "onboard_sha256": device.onboard_sha256,
        "registered_at": rfc3339(device.registered_at),
        "last_seen": rfc3339(device.last_seen),
        "attest_state": str(device.attest_state),
    }


def _cert_type_name(cert_type: int) -> str:
    try:
        return certs_pb2.ZCertType.Name(cert_type)
    except ValueError:
        return str(cert_type)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# --- configuration ---------------------------------------------------------------------------


def _load_config(file: Path) -> devconfig_pb2.EdgeDevConfig:
    try:
        return configs.load_config_file(file)
    except OSError as exc:
        raise AdminError(f"{file}: {exc}") from exc
    except configs.ConfigFileError as exc:
        raise AdminError(str(exc)) from exc


def _controller_ecdh(state: StateDir) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """The controller's ECDH certificate (PEM bytes as served by /certs) and private key."""
    try:
        cert_pem = state.ecdh_cert.read_bytes()
        key = pki.load_key(state.ecdh_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise AdminError(f"controller ECDH certificate or key unusable: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AdminError(f"{state.ecdh_key} is not an EC key")
    return cert_pem, key


def _encrypt_for(
    state: StateDir, store: Store, device: Device, loaded: configs.ConfigFile
) -> devconfig_pb2.EdgeDevConfig:
    """``loaded``'s clear secrets encrypted for ``device`` (see controller.configsecrets)."""
    device_pem = configsecrets.device_ecdh_cert(store.device_certs(device.uuid))
    if device_pem is None:
        raise AdminError(
            f"{device.uuid} has not sent an ECDH certificate (ATTEST_REQ_CERT) yet: secrets can "
            "be encrypted for it once it has attested; nothing stored"
        )
    controller_pem, controller_key = _controller_ecdh(state)
    try:
        result = configsecrets.encrypt_secrets(
            loaded.config,
            cluster_token=loaded.cluster_token,
            device_ecdh_pem=device_pem,
            device_cert=device.cert,
            controller_ecdh_pem=controller_pem,
            controller_ecdh_key=controller_key,
        )
    except configsecrets.SecretsError as exc:
        raise AdminError(f"cannot encrypt secrets for {device.uuid}: {exc}") from exc
    if result.moved:
        print(
            f"{device.uuid}: encrypted for its ECDH certificate (cipher context "
            f"{result.context_id}): {', '.join(result.moved)}"
        )
    else:
        print(f"{device.uuid}: no clear-text secrets to encrypt", file=sys.stderr)
    return result.config


def config_set(
    state: StateDir,
    device_text: str,
    file: Path,
    *,
    timestamp: str | None,
    encrypt_secrets: bool = False,
) -> None:
    """Store ``file`` as the device's next config version; served from the next poll on.

    With ``encrypt_secrets`` the clear secrets in it (apps' userData, datastores' apiKey and
    password, the ``cluster.clusterToken`` side field) are first encrypted for the device's
    ECDH certificate; the device must have sent one (it does so when it attests).
    """
    try:
        loaded = configs.read_config_file(file)
    except OSError as exc:
        raise AdminError(f"{file}: {exc}") from exc
    except configs.ConfigFileError as exc:
        raise AdminError(str(exc)) from exc
    if loaded.cluster_token is not None and not encrypt_secrets:
        raise AdminError(
            f"{file}: cluster.clusterToken can only be sent encrypted: add --encrypt-secrets"
        )
    with open_store(state) as store:
        try:
            if timestamp is None:
                stamp = configs.timestamp_from_unix(store.now())
            else:
                stamp = configs.parse_rfc3339(timestamp)
        except ValueError as exc:
            raise AdminError(str(exc)) from exc
        device = resolve_device(store, device_text)
        deviceops.carry_counters(store, device.uuid, loaded.config)  # never lowered by a file
        if encrypt_secrets:
            config = _encrypt_for(state, store, device, loaded)
        else:
            config = loaded.config
            clear = configsecrets.clear_secrets(config)
            if clear:
                print(
                    f"note: secrets stored and sent in clear ({', '.join(clear)}); "
                    "--encrypt-secrets encrypts them for the device",
                    file=sys.stderr,
                )
        try:  # a cluster member keeps its cluster part (controller.clusterwork)
            config = clusterwork.with_cluster_part(store, state, device.uuid, config)
        except clusterwork.ClusterError as exc:
            raise AdminError(f"{device.uuid} is a cluster member: {exc}") from exc
        try:
            stored = store.add_config(
                device.uuid,
                lambda version: configs.stamp(
                    config, device_uuid=device.uuid, version=version, timestamp=stamp
                ),
            )
        except UnknownDevice as exc:  # removed between resolving and storing
            raise AdminError(str(exc)) from exc
    print(
        f"{device.uuid}: config version {stored.version} {stored.config_hash} "
        f"{stored.config_timestamp}"
    )


def config_default(state: StateDir, file: Path | None, *, clear: bool) -> None:
    """Set, clear or (neither) print the config that newly registered devices start with.

    Devices already registered keep their configs; the controller still sets id and
    config_timestamp on each device's copy.
    """
    with open_store(state) as store:
        if clear:
            store.set_default_config(None)
            print("default config cleared: new devices start with an empty config")
        elif file is not None:
            config = _load_config(file)
            config.ClearField("id")
            config.ClearField("config_timestamp")
            store.set_default_config(config.SerializeToString(deterministic=True))
            print(f"default config set from {file}")
        else:
            template = store.default_config()
            print(configs.config_to_json(template or b""))


def config_get(state: StateDir, device_text: str, *, version: int | None) -> None:
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        if version is None:
            found = store.current_config(device.uuid)
        else:
            found = store.config_version(device.uuid, version)
    if found is None:
        raise AdminError(f"{device.uuid} has no config version {version}")
    print(configs.config_to_json(found.config))


def config_history(state: StateDir, device_text: str, *, as_json: bool) -> None:
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        history = store.config_history(device.uuid)
    if as_json:
        _print_json([_config_json(c) for c in history])
        return
    _print_table(
        ("VERSION", "CONFIG TIMESTAMP", "HASH", "STORED"),
        [
            (str(c.version), c.config_timestamp, c.config_hash, rfc3339(c.created_at) or "-")
            for c in history
        ],
    )


def _config_json(version: ConfigVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "config_hash": version.config_hash,
        "config_timestamp": version.config_timestamp,
        "stored_at": rfc3339(version.created_at),
    }


# --- objects: apps, network instances, volumes, content trees --------------------------------


def device_objects(
    state: StateDir, device_text: str, *, kind: ObjectKind | None, as_json: bool
) -> None:
    """The last state the device reported for each of its apps, network instances, volumes and
    content trees, with their errors."""
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        found = store.object_statuses(device.uuid, kind)
    if as_json:
        _print_json([_object_json(o) for o in found])
        return
    _print_table(
        ("KIND", "UUID", "NAME", "STATE", "ERRORS", "REPORTED"),
        [
            (
                o.kind.value,
                o.object_id,
                _printable(o.name) or "-",
                _printable(o.state),
                str(len(o.errors)),
                rfc3339(o.reported_at or o.received_at) or "-",
            )
            for o in found
        ],
    )
    for o in found:
        if not o.errors:
            continue
        print(f"\n{o.kind.value} {_printable(o.name) or '-'} ({o.object_id}):")
        for error in o.errors:
            lines = error.description.split("\n")
            print(f"  {error.severity} {rfc3339(error.time) or '-'}  {_printable(lines[0])}")
            for line in lines[1:]:
                print(f"      {_printable(line)}")


def _object_json(o: ObjectStatus) -> dict[str, Any]:
    return {
        "kind": o.kind.value,
        "uuid": o.object_id,
        "name": o.name,
        "state": o.state,
        "errors": [
            {"description": e.description, "time": rfc3339(e.time), "severity": e.severity}
            for e in o.errors
        ],
        "reported": rfc3339(o.reported_at),
        "received": rfc3339(o.received_at),
    }


def _objects_summary(objects: Sequence[ObjectStatus]) -> dict[str, Any]:
    return {
        **{k.value: sum(1 for o in objects if o.kind is k) for k in ObjectKind},
        "with_errors": sum(1 for o in objects if o.errors),
    }


def _objects_text(summary: dict[str, Any]) -> str:
    counts = [f"{k.value} {summary[k.value]}" for k in ObjectKind if summary[k.value]]
    if not counts:
        return "-"
    return ", ".join(counts) + f"; {summary['with_errors']} with errors"


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a device's strings must not drive the
    operator's terminal."""
    return "".join(
        c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
        for c in text
    )


# --- stored reports and logs -----------------------------------------------------------------


def reports(state: StateDir, device_text: str, kind: ReportKind, *, last: int | None) -> None:
    """Print stored reports as JSON lines ``{"received": ..., "message": {...}}``."""
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        found = store.reports(device.uuid, kind, last=last)
    for report in found:
        line: dict[str, Any] = {"received": rfc3339(report.received_at)}
        if report.json is not None:
            line["message"] = json.loads(report.json)
        else:
            line["raw_bytes"] = len(report.raw)
        print(json.dumps(line, sort_keys=True), flush=True)


def _app_name(meta: str) -> str:
    """The app's display name an app log upload carried (its gzip header), or ""."""
    try:
        name = json.loads(meta).get("appName", "")
    except (ValueError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""


def logs(
    state: StateDir,
    device_text: str,
    *,
    app_uuid: str | None,
    last: int | None,
    follow: bool,
    poll_interval: float = 1.0,
) -> None:
    """Print log entries as JSON lines ``{"received", "app", "entry"}`` (``app`` null for the
    device's own; an app's also ``app_name``, from its upload); with ``follow``, keep polling
    until interrupted."""
    with open_store(state) as store:
        device = resolve_device(store, device_text)
        app = app_uuid.lower() if app_uuid else None
        after = 0
        batch = store.log_entries(device.uuid, app_uuid=app, last=last)
        while True:
            for record in batch:
                line = {
                    "received": rfc3339(record.received_at),
                    "app": record.app_uuid,
                    "entry": json.loads(record.entry),
                }
                if record.app_uuid is not None:
                    line["app_name"] = _app_name(record.meta)
                print(json.dumps(line, sort_keys=True), flush=True)
                after = record.id
            if not follow:
                return
            time.sleep(poll_interval)
            batch = store.log_entries(device.uuid, app_uuid=app, after_id=after)
