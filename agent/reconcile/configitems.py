"""Reconciler for runtime config items: the first resource kind.

Desired items are the controller's valid ``configItems``; "applying" one makes it the effective
value that every timer reads on its next tick, so a new ``timer.config.interval`` takes effect
without a restart.  Listeners hear which keys changed (the config loop uses that to re-arm its
timer at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.model.configitems import ConfigItems
from agent.reconcile.items import DEVICE_OWNER, BaseConfigurator, Item, ItemRef, OwnerRef

log = logging.getLogger(__name__)

KIND = "configitem"


@dataclass(frozen=True)
class ConfigItemValue:
    key: str
    value: int | bool | str

    @property
    def ref(self) -> ItemRef:
        return (KIND, self.key)

    @property
    def owner(self) -> OwnerRef:
        return DEVICE_OWNER

    def deps(self) -> Iterable[ItemRef]:
        return ()

    def needs_recreate(self, old: Any) -> bool:
        return False


def render(items: ConfigItems) -> dict[ItemRef, ConfigItemValue]:
    """Desired items from the model.  Pure."""
    return {(KIND, k): ConfigItemValue(k, v) for k, v in items.values.items()}


class RuntimeItems:
    """The effective config items, shared read-only with every timer in the agent."""

    def __init__(self, initial: ConfigItems | None = None) -> None:
        self.current = initial or ConfigItems()
        self._listeners: list[Callable[[set[str]], None]] = []

    def subscribe(self, listener: Callable[[set[str]], None]) -> None:
        self._listeners.append(listener)

    def set_values(self, values: dict[str, int | bool | str], unknown: dict[str, str]) -> None:
        before = dict(self.current.values)
        self.current = ConfigItems(values=values, unknown=unknown, errors=self.current.errors)
        changed = {k for k in set(before) | set(values) if before.get(k) != values.get(k)}
        if changed:
            log.info("config items changed: %s", ", ".join(sorted(changed)))
            for listener in self._listeners:
                listener(changed)


class ConfigItemConfigurator(BaseConfigurator):
    """Applies one item at a time to a staging map; ``flush`` (called by the engine once no
    config item operation is in flight) publishes it at once, so listeners see a consistent set,
    never half a config.  The "system" observed is the published runtime set.
    """

    def __init__(self, runtime: RuntimeItems) -> None:
        self._runtime = runtime
        self._staged: dict[str, int | bool | str] = dict(runtime.current.values)
        self._unknown: dict[str, str] = dict(runtime.current.unknown)

    async def observe(self) -> Mapping[ItemRef, Item]:
        return render(self._runtime.current)

    def set_unknown(self, unknown: Mapping[str, str]) -> None:
        """Keys EVE knows but this agent does not use: published as they are, for reports."""
        if dict(unknown) != self._unknown:
            self._unknown = dict(unknown)
            self._runtime.set_values(dict(self._runtime.current.values), self._unknown)

    def flush(self) -> None:
        if self._staged != dict(self._runtime.current.values):
            self._runtime.set_values(dict(self._staged), self._unknown)

    async def create(self, item: ConfigItemValue) -> None:
        self._staged[item.key] = item.value

    async def modify(self, old: ConfigItemValue, new: ConfigItemValue) -> None:
        self._staged[new.key] = new.value

    async def delete(self, item: ConfigItemValue) -> None:
        self._staged.pop(item.key, None)

    def commit(self, items: ConfigItems) -> None:
        """Publish the staged values with ``items``' unknown keys now."""
        self._unknown = dict(items.unknown)
        self._runtime.set_values(dict(self._staged), self._unknown)
