"""What the reconcile engine works on: items, their references and owners, and configurators.

An *item* is one object on the system the agent manages: a runtime config value, a bridge, a
veth, a dnsmasq process, an nft chain, a volume, a container.  Each resource kind renders its
desired items from the model (pure) and brings one :class:`Configurator` that creates, modifies,
deletes and observes items of that kind.  This follows EVE's depgraph (``Item`` and
``Configurator`` in lf-edge/eve-libs' depgraph/reconciler) and kopf's handler model.

Items are frozen, comparable values: two items with the same ``ref`` that compare equal need no
work.  ``deps()`` names the items (or external conditions such as the vault or an uplink port)
that must be in place before this item can exist; the engine creates dependencies first and
deletes dependents first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

#: (kind, key): unique within one engine.  Kinds name configurators ("bridge", "container").
ItemRef = tuple[str, str]
#: (kind, id) of what an item belongs to: ("app", uuid), ("network", uuid), ("volume", uuid),
#: ("device", "") for node-wide items.  Failures roll up to the owner's report.
OwnerRef = tuple[str, str]

DEVICE_OWNER: OwnerRef = ("device", "")

#: The external condition "the vault is open": every item that keeps data at rest depends on it.
VAULT_READY: ItemRef = ("condition", "vault")


class Item(Protocol):
    """One desired or actual object.  Implementations are frozen dataclasses."""

    @property
    def ref(self) -> ItemRef: ...

    @property
    def owner(self) -> OwnerRef:
        """What this item belongs to, for error reports."""
        ...

    def deps(self) -> Iterable[ItemRef]:
        """Items or external conditions that must be in place before this one (and outlive it)."""
        ...

    def needs_recreate(self, old: Any) -> bool:
        """True when going from ``old`` (same ref, unequal) to self cannot be done in place."""
        ...


class NodeItem:
    """Base of the node-wide items (one per node: the firewall, the metadata server): ``ref``
    is ``(KIND, "node")``, owned by the device, no dependencies, changed in place."""

    KIND = ""

    @property
    def ref(self) -> ItemRef:
        return (self.KIND, "node")

    @property
    def owner(self) -> OwnerRef:
        return DEVICE_OWNER

    def deps(self) -> Iterable[ItemRef]:
        return ()

    def needs_recreate(self, old: Any) -> bool:
        return False


class Action(StrEnum):
    CREATE = "create"
    MODIFY = "modify"
    DELETE = "delete"


@dataclass(frozen=True)
class Op:
    """One operation on one item.  ``new`` is set for create/modify, ``old`` for modify/delete."""

    action: Action
    ref: ItemRef
    new: Any = None
    old: Any = None

    def __str__(self) -> str:
        return f"{self.action.value} {self.ref[0]}/{self.ref[1]}"


class Configurator(Protocol):
    """Applies one kind of item to the system.

    Contract for implementations:

    - every method is idempotent: ``create`` of something that already exists as asked, or
      ``delete`` of something already gone (raise or swallow ``NotFoundError``), succeeds;
    - failures raise the typed errors of :mod:`agent.drivers.errors`: ``TemporaryError``
      (retried with backoff), ``PermanentError`` (reported; retried only when the desired item
      changes), ``NotFoundError`` (the object is not there: success for delete; for modify the
      engine forgets it and creates it again).  Anything else counts as temporary;
    - ``observe`` lists the objects of this kind that carry the agent's ownership mark (name
      prefix, label, metadata), as items comparable with the rendered ones, and nothing else.
      Objects without the mark are never listed, so the engine never touches them.
    """

    async def create(self, item: Any) -> None: ...

    async def modify(self, old: Any, new: Any) -> None: ...

    async def delete(self, item: Any) -> None: ...

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        """What exists now, or ``None`` when this kind cannot be observed (keep what we know)."""
        ...

    def timeout(self, op: Op) -> float | None:
        """Seconds ``op`` may take before it is cancelled and counted as a temporary failure;
        ``None`` for the engine's default."""
        ...

    def flush(self) -> None:
        """Called after the engine has no operation of this kind in flight, so a kind that
        stages its changes can publish them at once (listeners never see half a config)."""
        ...

    def long_running(self, op: Op) -> bool:
        """True for an operation that takes minutes (an image pull, a VM boot): it runs under the
        engine's separate long-operation limit, so it never holds a slot quick work needs."""
        ...


class BaseConfigurator:
    """Defaults for the optional parts of :class:`Configurator`."""

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        return None

    def timeout(self, op: Op) -> float | None:
        return None

    def flush(self) -> None:
        return None

    def long_running(self, op: Op) -> bool:
        return False
