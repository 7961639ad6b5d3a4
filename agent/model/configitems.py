"""Runtime config items (EVE's global config): names, types, defaults and ranges as in EVE.

Source: ``eve:docs/CONFIG-PROPERTIES.md`` and ``pkg/pillar/types/global.go``.  The controller
sends them as ``EdgeDevConfig.configItems`` (key/value strings).  Like EVE, an out-of-range or
unparsable value is refused for that item alone (its default applies and an error is
reported), and an unknown key is kept and reported but has no effect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

UINT32_MAX = 2**32 - 1


class ItemKind(StrEnum):
    INT = "int"
    BOOL = "bool"
    STRING = "string"
    TRISTATE = "tristate"


@dataclass(frozen=True)
class ItemSpec:
    name: str
    kind: ItemKind
    default: int | bool | str
    minimum: int = 0
    maximum: int = UINT32_MAX

    def parse(self, text: str) -> int | bool | str:
        """The typed value of ``text``; raises ValueError saying why it is refused."""
        value = text.strip()
        if self.kind is ItemKind.INT:
            try:
                number = int(value, 10)
            except ValueError:
                raise ValueError(f"{self.name}: {text!r} is not an integer") from None
            if not self.minimum <= number <= self.maximum:
                raise ValueError(f"{self.name}: {number} outside [{self.minimum}, {self.maximum}]")
            return number
        if self.kind is ItemKind.BOOL:
            lowered = value.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"{self.name}: {text!r} is not a boolean")
        if self.kind is ItemKind.TRISTATE:
            lowered = value.lower()
            if lowered not in ("enabled", "disabled", "none", "true", "false"):
                raise ValueError(f"{self.name}: {text!r} is not enabled/disabled/none")
            return {"true": "enabled", "false": "disabled"}.get(lowered, lowered)
        if len(value) > 65536:
            raise ValueError(f"{self.name}: value longer than 64 KiB")
        return value


def _int(name: str, default: int, minimum: int = 0, maximum: int = UINT32_MAX) -> ItemSpec:
    return ItemSpec(name, ItemKind.INT, default, minimum, maximum)


def _bool(name: str, default: bool) -> ItemSpec:
    return ItemSpec(name, ItemKind.BOOL, default)


def _str(name: str, default: str = "") -> ItemSpec:
    return ItemSpec(name, ItemKind.STRING, default)


SPECS: dict[str, ItemSpec] = {
    s.name: s
    for s in (
        _int("timer.config.interval", 60, 5, 86400),
        _int("timer.metric.interval", 60, 5, 3600),
        _int("timer.deviceinfo.interval", 600, 30),
        _int("timer.cert.interval", 86400, 60),
        _int("timer.hardwarehealth.interval", 43200, 21600),
        _int("timer.location.cloud.interval", 3600, 300),
        _int("timer.ntpsources.interval", 600, 60),
        _int("timer.send.timeout", 120, 0, 3600),
        _int("timer.dial.timeout", 10, 0, 3600),
        _int("timer.reboot.no.network", 604800, 120),
        _int("timer.update.fallback.no.network", 300, 60),
        _int("timer.test.baseimage.update", 600, 30, 3600),
        _int("timer.download.retry", 600, 60),
        _int("timer.download.stalled", 600, 20),
        _int("timer.boot.retry", 600, 10),
        _int("timer.gc.vdisk", 3600, 60),
        _int("timer.gc.download", 600, 60),
        _int("timer.defer.content.delete", 0, 0),
        _int("blob.download.max.retries", 5, 1, 10),
        _int("timer.vault.ready.cutoff", 300, 60),
        # Bounds as EVE's (pkg/pillar/types/global.go); testinterval is not used yet.
        _int("timer.port.testinterval", 300, 300, 3600),
        _int("timer.port.testbetterinterval", 600, 0),
        _int("timer.port.testduration", 30, 10, 3600),
        _int("timer.port.timeout", 15, 0, 3600),
        _int("timer.appcontainer.stats.interval", 300, 1),
        _bool("maintenance.mode", False),
        _bool("airgap.mode", False),
        _str("debug.enable.ssh"),
        ItemSpec("debug.enable.usb", ItemKind.BOOL, False),
        ItemSpec("debug.enable.vga", ItemKind.BOOL, False),
        ItemSpec("debug.enable.console", ItemKind.BOOL, False),
        _bool("network.fallback.any.eth", True),
        _int("network.download.max.cost", 0, 0, 255),
        _str("debug.default.loglevel", "info"),
        _str("debug.default.remote.loglevel", "warning"),
        _int("newlog.allow.fastupload", 0, 0, 1),
        _bool("app.allow.vnc", False),
        _bool("process.cloud-init.multipart", False),
        _int("force.fallback.counter", 0),
    )
}


@dataclass(frozen=True)
class ItemError:
    key: str
    message: str


@dataclass(frozen=True)
class ConfigItems:
    """The effective runtime settings: defaults overlaid with valid controller values."""

    values: Mapping[str, int | bool | str] = field(default_factory=dict)
    #: Keys the controller sent that we do not know; kept so they show in status and reports.
    unknown: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[ItemError, ...] = ()

    def get(self, name: str) -> int | bool | str:
        if name in self.values:
            return self.values[name]
        return SPECS[name].default

    def int(self, name: str) -> int:
        value = self.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} is not an integer item")
        return value

    def bool(self, name: str) -> bool:
        value = self.get(name)
        if not isinstance(value, bool):
            raise TypeError(f"{name} is not a boolean item")
        return value

    def explicit(self) -> dict[str, str]:
        """The items set by the controller, as strings (for status output)."""
        out = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.values.items()}
        out.update(self.unknown)
        return out


def parse_items(pairs: Iterable[tuple[str, str]]) -> ConfigItems:
    """Validate controller key/value pairs.  Never raises: bad items become ``errors``."""
    values: dict[str, int | bool | str] = {}
    unknown: dict[str, str] = {}
    errors: list[ItemError] = []
    for key, text in pairs:
        spec = SPECS.get(key)
        if spec is None:
            unknown[key] = text
            # Per-agent keys (agent.<name>.debug.loglevel) are legitimate; others are typos.
            if not key.startswith("agent."):
                errors.append(ItemError(key, f"unknown config item {key!r} ignored"))
            continue
        try:
            values[key] = spec.parse(text)
        except ValueError as exc:
            errors.append(ItemError(key, str(exc)))
    return ConfigItems(values=values, unknown=unknown, errors=tuple(errors))
