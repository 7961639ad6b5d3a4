"""Per-object info for the controller: EVE's ``ZInfoApp``, ``ZInfoNetworkInstance``,
``ZInfoVolume`` and ``ZInfoContentTree`` built from the reconciler's roll-up by owner.

Pure message building; :mod:`agent.link.reporting` queues and delivers them.  An owner is what
``NodeReconciler.owners()`` returns (:class:`Owner` is the shape the link needs, so the link
does not import the reconciler).  The state mapping is :data:`SW_STATES`; a deleted object is a
message with only its ID, as EVE sends (``handlemetrics.go`` ``PublishAppInfoToZedCloud``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from agent.util.ids import parse_uuid
from agent.wire.pb.info import common_pb2, info_pb2


def timestamp(seconds: float) -> Timestamp:
    # Whole seconds and the fraction apart: seconds * 1e9 as a float loses the nanoseconds.
    whole = math.floor(seconds)
    nanos = min(round((seconds - whole) * 1e9), 999_999_999)
    return Timestamp(seconds=whole, nanos=nanos)


class Owner(Protocol):
    """One owner's roll-up as the reconciler reports it (``NodeReconciler.owners()`` items fit).

    The link layer does not import the reconciler: this names only what the reporter reads.
    """

    @property
    def kind(self) -> str:
        """``app``, ``networkinstance``, ``volume``, ``contenttree``; others are not reported."""
        ...

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> str:
        """``ok``, ``pending``, ``in-progress`` or ``error``."""
        ...

    @property
    def errors(self) -> tuple[tuple[str, float], ...]:
        """(message, wall-clock time; 0.0 when unknown) of each failure."""
        ...

    @property
    def pending(self) -> tuple[str, ...]:
        """Why items wait."""
        ...


#: The ZSwState an app, volume or content tree reports for each owner state.  EVE's own values
#: for the settled states (``types.SwState.ZSwState``): a running app is RUNNING, a created
#: volume CREATED_VOLUME, a loaded content tree DELIVERED (EVE maps its LOADED to DELIVERED on
#: the wire).  Work under way shows the step EVE shows for it (BOOTING, CREATING_VOLUME,
#: DOWNLOAD_STARTED); waiting for a dependency or a condition is PENDING for an app (EVE's
#: "pending to start") and INITIAL for storage; any failure is ERROR.
SW_STATES: dict[str, dict[str, info_pb2.ZSwState]] = {
    "app": {
        "ok": info_pb2.RUNNING,
        "in-progress": info_pb2.BOOTING,
        "pending": info_pb2.PENDING,
        "error": info_pb2.ERROR,
    },
    "volume": {
        "ok": info_pb2.CREATED_VOLUME,
        "in-progress": info_pb2.CREATING_VOLUME,
        "pending": info_pb2.INITIAL,
        "error": info_pb2.ERROR,
    },
    "contenttree": {
        "ok": info_pb2.DELIVERED,
        "in-progress": info_pb2.DOWNLOAD_STARTED,
        "pending": info_pb2.INITIAL,
        "error": info_pb2.ERROR,
    },
}

#: A network instance has its own state enum; EVE reports ONLINE when activated, INIT while a
#: change is in progress, ERROR with an error (``handlenetworkinstance.go``).
NI_STATES: dict[str, info_pb2.ZNetworkInstanceState] = {
    "ok": info_pb2.ZNETINST_STATE_ONLINE,
    "in-progress": info_pb2.ZNETINST_STATE_INIT,
    "pending": info_pb2.ZNETINST_STATE_INIT,
    "error": info_pb2.ZNETINST_STATE_ERROR,
}

_ZTYPES = {
    "app": info_pb2.ZiApp,
    "networkinstance": info_pb2.ZiNetworkInstance,
    "volume": info_pb2.ZiVolume,
    "contenttree": info_pb2.ZiContentTree,
}


@dataclass(frozen=True)
class ObjectDetails:
    """What the workload kinds know beyond the roll-up: EVE's state name (``ZSwState``), a
    progress percentage and an app's boot time.  Empty for owners that have none."""

    phase: str = ""
    progress: int | None = None
    boot_time: float = 0.0
    version: str = ""
    refs: tuple[str, ...] = ()
    generation: int = 0
    #: (vif, ifname, mac, ip, gateway, app id) of an app's interfaces, or an instance's.
    vifs: tuple[tuple[str, str, str, str, str, str], ...] = ()
    bridge: str = ""
    bridge_ip: str = ""

    @classmethod
    def of(cls, owner: object) -> ObjectDetails:
        """Read from an owner that may or may not carry them (``OwnerReport`` does)."""
        progress = getattr(owner, "progress", None)
        return cls(
            phase=str(getattr(owner, "phase", "") or ""),
            progress=int(progress) if isinstance(progress, int) else None,
            boot_time=float(getattr(owner, "boot_time", 0.0) or 0.0),
            version=str(getattr(owner, "version", "") or "")[:256],
            refs=tuple(str(r)[:256] for r in (getattr(owner, "refs", ()) or ())[:64]),
            generation=int(getattr(owner, "generation", 0) or 0),
            vifs=tuple(
                (str(v.vif), str(v.ifname), str(v.mac), str(v.ip), str(v.gateway), str(v.app_id))
                for v in (getattr(owner, "vifs", ()) or ())[:64]
            ),
            bridge=str(getattr(owner, "bridge", "") or "")[:16],
            bridge_ip=str(getattr(owner, "bridge_ip", "") or "")[:64],
        )

    def state(self, fallback: info_pb2.ZSwState) -> info_pb2.ZSwState:
        if self.phase:
            try:
                value: info_pb2.ZSwState = info_pb2.ZSwState.Value(self.phase)  # type: ignore[assignment]
                return value
            except ValueError:
                pass
        return fallback


#: Bounds on what one object's message carries (a driver's error may quote a lot of output).
MAX_ERROR_CHARS = 2048
MAX_ERRORS = 16


@dataclass(frozen=True)
class ReportedError:
    description: str
    time: float
    severity: common_pb2.Severity


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "\u2026"


def _error_info(target: common_pb2.ErrorInfo, error: ReportedError) -> None:
    target.description = _clip(error.description)
    if error.time > 0:
        target.timestamp.CopyFrom(timestamp(error.time))
    target.severity = error.severity


def _bounded(errors: Sequence[ReportedError]) -> list[ReportedError]:
    if len(errors) <= MAX_ERRORS:
        return list(errors)
    kept = list(errors[: MAX_ERRORS - 1])
    rest = errors[MAX_ERRORS - 1 :]
    kept.append(
        ReportedError(
            f"... and {len(rest)} more",
            max(e.time for e in rest),
            max(e.severity for e in rest),
        )
    )
    return kept


def _combined(errors: Sequence[ReportedError]) -> ReportedError:
    """One ErrorInfo for the kinds that have a single error field (volumes, content trees)."""
    return ReportedError(
        "\n".join(e.description for e in errors),
        max(e.time for e in errors),
        max(e.severity for e in errors),
    )


def object_info(
    device_uuid: str,
    kind: str,
    obj_id: str,
    state: str | None,
    *,
    name: str = "",
    errors: Sequence[ReportedError] = (),
    details: ObjectDetails | None = None,
) -> info_pb2.ZInfoMsg:
    """EVE's info message for one app, network instance, volume or content tree.

    ``state`` None means the object is gone: the message then carries only its ID, which is what
    EVE sends for a deleted object.  ``errors`` are reported in the kind's error field:
    ``appErr`` and ``networkErr`` one entry each, a volume's ``volumeErr`` and a content tree's
    ``err`` one entry joining them.
    """
    msg = info_pb2.ZInfoMsg(
        ztype=_ZTYPES[kind], devId=device_uuid, atTimeStamp=timestamp(time.time())
    )
    errors = _bounded(errors)
    details = details or ObjectDetails()
    if kind == "app":
        app = msg.ainfo
        app.AppID = obj_id
        if state is not None:
            app.AppName = name
            app.state = details.state(SW_STATES[kind].get(state, info_pb2.INITIAL))
            if details.boot_time > 0:
                app.bootTime.CopyFrom(timestamp(details.boot_time))
            app.appVersion = details.version
            app.volumeRefs.extend(details.refs)
            for vif, _ifname, mac, ip, gateway, _app in details.vifs:
                net = app.network.add(macAddr=mac, devName=vif, ipv4_up=bool(ip))
                if ip:
                    net.IPAddrs.append(ip)
                if gateway:
                    net.defaultRouters.append(gateway)
            for error in errors:
                _error_info(app.appErr.add(), error)
    elif kind == "networkinstance":
        ni = msg.niinfo
        ni.networkID = obj_id
        if state is not None:
            ni.displayname = name
            ni.state = NI_STATES.get(state, info_pb2.ZNETINST_STATE_INIT)
            ni.activated = state == "ok"
            ni.bridgeName = details.bridge
            ni.bridgeIPAddr = details.bridge_ip
            for vif, _ifname, mac, ip, _gateway, app_id in details.vifs:
                ni.vifs.add(vifName=vif, macAddress=mac, appID=app_id)
                if ip:
                    ni.ipAssignments.add(macAddress=mac, ipAddress=[ip])
            for error in errors:
                _error_info(ni.networkErr.add(), error)
    elif kind == "volume":
        vol = msg.vinfo
        vol.uuid = obj_id
        if state is not None:
            vol.displayName = name
            vol.state = details.state(SW_STATES[kind].get(state, info_pb2.INITIAL))
            if details.progress is not None:
                vol.progressPercentage = max(0, min(100, details.progress))
            vol.generation_count = details.generation
            if errors:
                _error_info(vol.volumeErr, _combined(errors))
    else:
        tree = msg.cinfo
        tree.uuid = obj_id
        if state is not None:
            tree.displayName = name
            tree.state = details.state(SW_STATES[kind].get(state, info_pb2.INITIAL))
            if details.progress is not None:
                tree.progressPercentage = max(0, min(100, details.progress))
            tree.generation_count = details.generation
            if details.refs:
                tree.sha256 = details.refs[0]
            if errors:
                _error_info(tree.err, _combined(errors))
    return msg


def without_times(msg: info_pb2.ZInfoMsg) -> bytes:
    """The message's content for change detection: no send time, no error times."""
    stable = info_pb2.ZInfoMsg()
    stable.CopyFrom(msg)
    stable.ClearField("atTimeStamp")
    # Only the member that is set: touching another one would switch the oneof to it.
    which = stable.WhichOneof("InfoContent")
    errors: list[common_pb2.ErrorInfo] = []
    if which == "ainfo":
        errors = list(stable.ainfo.appErr)
    elif which == "niinfo":
        errors = list(stable.niinfo.networkErr)
    elif which == "vinfo" and stable.vinfo.HasField("volumeErr"):
        errors = [stable.vinfo.volumeErr]
    elif which == "cinfo" and stable.cinfo.HasField("err"):
        errors = [stable.cinfo.err]
    for error in errors:
        error.ClearField("timestamp")
    return stable.SerializeToString(deterministic=True)


def object_key(owner: Owner) -> tuple[str, str] | None:
    """(outbox key, canonical UUID), or None for an owner that has no EVE info message: the
    device, kinds without one, an ID that is no UUID (an object the config got wrong, which
    ``eve-agent status`` shows).  The UUID check also keeps the key a safe file name."""
    if owner.kind not in _ZTYPES:
        return None
    try:
        obj_id = parse_uuid(owner.id)
    except ValueError:
        return None
    return f"{owner.kind}:{obj_id}", obj_id
