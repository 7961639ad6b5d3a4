"""The agent's own nftables tables through libnftables' JSON API: :class:`LibNft`, the real
:class:`~agent.drivers.nft_api.Nft`.  The model, the naming and ownership rules and the input
checks are in :mod:`agent.drivers.nft_api` (re-exported here), the JSON commands and listings
in :mod:`agent.drivers.nft_json`.  Nothing here runs ``nft``.

Apply.  :meth:`LibNft.apply` is one libnftables command list (one netlink batch, one kernel
commit: no packet ever sees old rules gone and new ones missing), planned from the current
state read just before, in the same worker thread.  Two ways to change a table that exists:

- *replace*: only some chains are flushed and refilled (added when new, deleted when gone),
  and set and map elements are added and deleted one by one.  Chains left alone keep their
  rules and counters untouched;
- *rebuild*: ``flush table`` (every rule), ``flush`` each set and map that stays (``flush
  table`` leaves elements), ``delete`` those no longer wanted or whose definition changed (type,
  flags, default timeout) and chains likewise (hook, type, priority), then add every chain, set,
  map, element and rule.  Base chains that stay are never deleted: their hooks stay registered.

Whole tables (``replace_chains=None``) are read with ``list table`` and *replaced* chain by chain
where they differ from the desired table (an unchanged table costs the read and no commit);
they are *rebuilt* when sets or maps came, went or changed definition, or a chain changed
hook, type or priority.  A rule written in another form than libnftables prints it (see
:mod:`~agent.drivers.nft_api`) makes its chain differ every time: correct, only slower; netdev
chains always differ (their device is not listed).

``replace_chains={(table name, chain name), ...}``: the tables' chains, sets and maps are read
(``list chains/sets/maps`` of the family, not the rules) and only the named chains are
*replaced*, the elements synced (a table with no named chain gets only that).  The other chains
are assumed unchanged: the caller promises it, they are neither read nor checked.  A table that
is missing or empty, or that cannot be *replaced* as above, is applied whole.

Sets and maps with the ``timeout`` flag are never flushed nor pruned by apply (dnsmasq fills
them): their desired elements are added, the others expire or go through
:meth:`LibNft.delete_elements`.

Counters survive: a counted rule re-added with the same chain and comment starts from the
values read before the transaction (what is counted between that read and the commit is lost;
rules without a comment start from zero).

Namespaces.  libnftables acts in the calling thread's network namespace, so every call runs in
the driver's one worker thread, which entered ``netns`` (``/run/netns/<name>`` or a path; it
never creates one) before its first call, and enters it again (with a new libnftables context)
when the path names a new namespace.  A call cancelled while waiting still runs to the end in
the worker.  Call :meth:`LibNft.close`.

Errors.  Input is checked first (:func:`~agent.drivers.nft_api.check_request`).  When
libnftables or the kernel refuses a transaction, nothing of it is applied; the commands are
replayed as dry runs (``set_dry_run``: checked by libnftables and the kernel, never committed)
of growing prefixes to find the first one refused, and ``PermanentError`` names its table,
chain and rule.  EBUSY, ENOMEM, ENOBUFS, EINTR, EAGAIN and a namespace that cannot be entered
are ``TemporaryError``; the kernel says EBUSY for "chain still in use" too, which only a
broken ``replace_chains`` promise can cause here.  libnftables missing is ``PermanentError``.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import logging
import os
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agent.drivers.errors import DriverError, NotFoundError, PermanentError, TemporaryError
from agent.drivers.nft_api import (
    MAX_COMMENT,
    PREFIX,
    Chain,
    Counters,
    Elem,
    Expr,
    Family,
    Map,
    Naming,
    Nft,
    NftSettings,
    Rule,
    Set,
    Table,
    check_elements,
    check_request,
    elem_key,
    table_prefix,
    validate,
)
from agent.drivers.nft_json import (
    chain_cmd,
    container_cmd,
    counts_rules,
    describe,
    element_diff,
    elements_cmd,
    key_form,
    parse_container,
    parse_tables,
    rule_cmd,
    table_ref,
)

__all__ = [
    "MAX_COMMENT", "PREFIX", "Chain", "Counters", "Elem", "Expr", "Family", "LibNft", "Map",
    "Nft", "NftSettings", "Rule", "Set", "Table", "elem_key", "table_prefix", "validate",
]  # fmt: skip

log = logging.getLogger(__name__)

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_TEMPORARY = (
    "Device or resource busy",
    "Cannot allocate memory",
    "No buffer space available",
    "Interrupted system call",
    "Resource temporarily unavailable",
)
_MISSING = "No such file or directory"


# --- libnftables calls (worker thread) -----------------------------------------------------------


class _Refused(Exception):
    """libnftables returned an error; its error output."""

    def __init__(self, text: str) -> None:
        lines = (line.removeprefix("internal:0:0-0: ").strip() for line in text.splitlines())
        super().__init__("; ".join(line for line in lines if line) or "failed")

    @property
    def temporary(self) -> bool:
        return any(t in str(self) for t in _TEMPORARY)

    @property
    def missing(self) -> bool:
        return _MISSING in str(self)


def _error(exc: _Refused, what: str) -> DriverError:
    if exc.temporary:
        return TemporaryError(f"{what}: {exc}", retry_after=1.0)
    return PermanentError(f"{what}: {exc}")


class _Lib:
    """Two libnftables contexts: one for reads of whole tables and rulesets, whose cache then
    holds every rule (and freeing it costs ~10 ms per 5,000 rules on the context's next command),
    one for the rest, so that a small change after a big read stays small."""

    def __init__(self) -> None:
        try:
            import nftables

            self.main, self.bulk = nftables.Nftables(), nftables.Nftables()
        except (ImportError, OSError) as exc:
            raise PermanentError(f"libnftables unusable: {exc}") from exc
        self.main.set_json_output(True)
        self.bulk.set_json_output(True)


def _run(lib: _Lib, cmds: list[Expr], *, dry: bool = False) -> list[Expr]:
    """Run a command list; the objects of its output (one JSON document per list command)."""
    listing = cmds[0].get("list") if len(cmds) == 1 else None
    bulk = isinstance(listing, dict) and ("ruleset" in listing or "table" in listing)
    ctx = lib.bulk if bulk else lib.main
    if dry:
        ctx.set_dry_run(True)
    try:
        rc, out, err = ctx.cmd(json.dumps({"nftables": cmds}, separators=(",", ":")))
    finally:
        if dry:
            ctx.set_dry_run(False)
    if rc != 0:
        raise _Refused(err or out or f"libnftables returned {rc}")
    objects: list[Expr] = []
    decoder, text, at = json.JSONDecoder(), out.strip(), 0
    while at < len(text):
        doc, at = decoder.raw_decode(text, at)
        objects += [o for o in doc.get("nftables", ()) if "metainfo" not in o]
        while at < len(text) and text[at].isspace():
            at += 1
    return objects


def _enter(path: str) -> tuple[int, int]:
    """Move the calling thread into the network namespace at ``path``; its (st_dev, st_ino)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise TemporaryError(f"network namespace {path}: {exc.strerror}", retry_after=2.0) from exc
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            message = f"entering network namespace {path}: {os.strerror(code)}"
            raise PermanentError(message) if code == errno.EPERM else TemporaryError(message)
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    finally:
        os.close(fd)


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Worker:
    """The one thread running libnftables for a driver, in its namespace (None: the process's
    own), and the libnftables contexts it made there."""

    def __init__(self, netns: str | None) -> None:
        if netns is not None and (not netns or netns in (".", "..")):
            raise PermanentError(f"invalid network namespace {netns!r}")
        self.path = None if netns is None else netns if "/" in netns else f"/run/netns/{netns}"
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"nft-{netns or 'self'}")
        self._lib: _Lib | None = None
        self._entered: tuple[int, int] | None = None

    async def run(self, fn: Callable[[_Lib], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[_Lib], T]) -> T:
        if self.path is not None and (self._entered is None or _ns_id(self.path) != self._entered):
            self._lib = None  # its netlink sockets belong to the namespace left behind
            self._entered = _enter(self.path)
        if self._lib is None:
            self._lib = _Lib()
        return fn(self._lib)

    async def close(self) -> None:
        def drop() -> None:
            self._lib = None

        await asyncio.get_running_loop().run_in_executor(self._pool, drop)
        self._pool.shutdown(wait=True)


# --- the driver ----------------------------------------------------------------------------------


class LibNft(Naming):
    """:class:`Nft` over libnftables; see the module docstring."""

    def __init__(self, settings: NftSettings) -> None:
        super().__init__(settings.node)
        self.settings = settings
        self._worker = _Worker(settings.netns)

    async def close(self) -> None:
        await self._worker.close()

    # --- apply
    async def apply(
        self, tables: Sequence[Table], *, replace_chains: Collection[tuple[str, str]] | None = None
    ) -> None:
        tables = list(tables)
        if not tables:
            check_request(self, tables, replace_chains)
            return
        await self._worker.run(lambda lib: self._apply(lib, tables, replace_chains))

    def _apply(
        self, lib: _Lib, tables: list[Table], replace_chains: Collection[tuple[str, str]] | None
    ) -> None:
        named = check_request(self, tables, replace_chains)  # here: off the event loop
        cmds: list[Expr] = []
        structure: dict[Family, dict[tuple[Family, str], tuple[Table, Counters]]] = {}
        for table in tables:
            if named is None:
                self._whole(lib, table, cmds)
            elif not self._incremental(lib, table, named.get(table.name, set()), cmds, structure):
                validate(table)  # only the named chains were checked
                self._whole(lib, table, cmds)
        if not cmds:
            return
        try:
            _run(lib, cmds)
        except _Refused as exc:
            raise self._explain(lib, cmds, exc) from exc

    def _read(self, lib: _Lib, family: Family, name: str) -> tuple[Table, Counters] | None:
        try:
            objects = _run(lib, [{"list": {"table": {"family": family.value, "name": name}}}])
        except _Refused as exc:
            if exc.missing:
                return None
            raise _error(exc, f"reading table {family} {name}") from exc
        found = parse_tables(objects, lambda f, n: n == name)
        return found.get((family, name), (Table(family, name), {}))

    def _whole(self, lib: _Lib, table: Table, cmds: list[Expr]) -> None:
        found = self._read(lib, table.family, table.name)
        if found is not None:
            current, counts = found
            if self._compatible(current, table, {c.name for c in table.chains}):
                changed = {c.name for c in table.chains if current.chain(c.name) != c}
                changed |= {c.name for c in current.chains if table.chain(c.name) is None}
                self._replace(table, current, changed, counts, cmds)
                return
        self._rebuild(table, found, cmds)

    def _incremental(
        self,
        lib: _Lib,
        table: Table,
        names: set[str],
        cmds: list[Expr],
        structure: dict[Family, dict[tuple[Family, str], tuple[Table, Counters]]],
    ) -> bool:
        """Add the commands replacing ``names`` and syncing elements; False when the table must
        be applied whole (nothing added then)."""
        if table.family not in structure:
            listing = [{"list": {k: {"family": table.family.value}}} for k in ("chains", "sets")]
            listing.append({"list": {"maps": {"family": table.family.value}}})
            try:
                objects = _run(lib, listing)
            except _Refused as exc:
                raise _error(exc, f"reading the {table.family} tables") from exc
            structure[table.family] = parse_tables(objects, lambda f, n: self.is_ours(n))
        found = structure[table.family].get((table.family, table.name))
        if found is None:
            log.debug("nft: table %s %s is missing or empty", table.family, table.name)
            return False
        current = found[0]  # chains without their rules
        if not self._compatible(current, table, names):
            return False
        existing = {c.name for c in current.chains}
        counted = sorted(n for n in names & existing if counts_rules(table.chain(n)))
        self._replace(table, current, names, self._chain_counters(lib, table, counted), cmds)
        return True

    @staticmethod
    def _compatible(current: Table, table: Table, names: Collection[str]) -> bool:
        """Whether ``current`` becomes ``table`` by replacing chains among ``names`` and
        adding and deleting elements: the same sets and maps with the same definitions, and
        no chain among ``names`` held in both with another hook, type or priority."""
        have = {o.name: o.definition for o in current.containers}
        if have != {o.name: o.definition for o in table.containers}:
            why = "sets or maps came, went or changed definition"
        else:
            old = {c.name: c.definition for c in current.chains}
            new = {c.name: c.definition for c in table.chains}
            moved = sorted(n for n in names if n in old and n in new and old[n] != new[n])
            if not moved:
                return True
            why = f"chain {moved[0]} changed hook, type or priority"
        log.debug(
            "nft: table %s %s cannot change chain by chain: %s", table.family, table.name, why
        )
        return False

    def _replace(
        self, table: Table, current: Table, names: Collection[str], counts: Counters,
        cmds: list[Expr],
    ) -> None:  # fmt: skip
        """Commands that flush and refill the chains ``names`` (adding and deleting chains)
        and bring every set and map to its elements; see :meth:`_compatible`."""
        existing = {c.name for c in current.chains}
        for name in sorted(names):
            new = table.chain(name)
            if new is not None:
                cmds.append(chain_cmd("add", table, new))
            if name in existing:
                cmds.append({"flush": {"chain": {**table_ref(table), "name": name}}})
        have = {o.name: o for o in current.containers}
        adds = []
        for obj in table.containers:
            deletes, new_elements = element_diff(have[obj.name], obj)
            if deletes:
                cmds.append(elements_cmd("delete", table, obj.name, deletes))
            if new_elements:
                adds.append(elements_cmd("add", table, obj.name, new_elements))
        gone = sorted(n for n in names if n in existing and table.chain(n) is None)
        cmds += [{"delete": {"chain": {**table_ref(table), "name": n}}} for n in gone]
        cmds += adds
        for name in sorted(names):
            new = table.chain(name)
            if new is not None:
                self._add_rules(table, new, counts, cmds)

    def _rebuild(
        self, table: Table, found: tuple[Table, Counters] | None, cmds: list[Expr]
    ) -> None:
        """Commands that make the table anew in place: ``flush table``, sets, maps and chains
        that changed definition deleted, every chain, set, map, element and rule added."""
        ref = {"family": table.family.value, "name": table.name}
        cmds.append({"add": {"table": ref}})
        kept: set[str] = set()
        counts: Counters = {}
        if found is not None:
            current, counts = found
            cmds.append({"flush": {"table": ref}})
            want = {o.name: o for o in table.containers}
            for obj in current.containers:
                wanted = want.get(obj.name)
                if wanted is None or wanted.definition != obj.definition:
                    cmds.append(container_cmd("delete", table, obj))
                else:
                    kept.add(obj.name)
                    if not obj.dynamic:
                        cmds.append(container_cmd("flush", table, obj))
            for chain in current.chains:
                new = table.chain(chain.name)
                if new is None or new.definition != chain.definition:
                    cmds.append(chain_cmd("delete", table, chain))
        cmds += [chain_cmd("add", table, chain) for chain in table.chains]
        for obj in table.containers:
            if obj.name not in kept:
                cmds.append(container_cmd("add", table, obj))
            elif obj.elements:
                cmds.append(elements_cmd("add", table, obj.name, obj.elements))
        for chain in table.chains:
            self._add_rules(table, chain, counts, cmds)

    @staticmethod
    def _add_rules(table: Table, chain: Chain, counts: Counters, cmds: list[Expr]) -> None:
        for rule in chain.rules:
            seed = None if rule.comment is None else counts.get((chain.name, rule.comment))
            cmds.append(rule_cmd(table, chain.name, rule, seed))

    def _chain_counters(self, lib: _Lib, table: Table, names: list[str]) -> Counters:
        counts: Counters = {}
        for name in names:  # one call each: libnftables 1.0.6 fails a second "list chain"
            try:
                objects = _run(lib, [{"list": {"chain": {**table_ref(table), "name": name}}}])
            except _Refused as exc:
                raise _error(exc, f"table {table.family} {table.name}: reading {name}") from exc
            for _, found in parse_tables(objects, lambda f, n: n == table.name).values():
                counts.update(found)
        return counts

    def _explain(self, lib: _Lib, cmds: list[Expr], exc: _Refused) -> DriverError:
        """The error for a refused transaction, naming the first command refused."""
        if exc.temporary:
            return _error(exc, "nftables transaction")
        try:
            _run(lib, cmds, dry=True)
        except _Refused:
            lo, hi = 1, len(cmds)
            while lo < hi:  # the shortest failing prefix
                mid = (lo + hi) // 2
                try:
                    _run(lib, cmds[:mid], dry=True)
                    lo = mid + 1
                except _Refused:
                    hi = mid
            return _error(exc, describe(cmds[lo - 1]))
        return _error(exc, "nftables transaction (refused at commit)")

    # --- the rest of the interface
    async def delete_table(self, family: Family, name: str) -> None:
        self.check_ours(family, name)

        def delete(lib: _Lib) -> None:
            try:
                _run(lib, [{"delete": {"table": {"family": Family(family).value, "name": name}}}])
            except _Refused as exc:
                if not exc.missing:
                    raise _error(exc, f"deleting table {family} {name}") from exc

        await self._worker.run(delete)

    async def list_owned(self) -> list[Table]:
        def listing(lib: _Lib) -> list[Table]:
            try:
                objects = _run(lib, [{"list": {"ruleset": None}}])
            except _Refused as exc:
                raise _error(exc, "listing the ruleset") from exc
            found = parse_tables(objects, lambda f, n: self.is_ours(n))
            return [table for _, (table, _) in sorted(found.items())]

        return await self._worker.run(listing)

    async def counters(self, family: Family, name: str) -> Counters:
        self.check_ours(family, name)

        def read(lib: _Lib) -> Counters:
            found = self._read(lib, Family(family), name)
            if found is None:
                raise NotFoundError(f"no table {family} {name}")
            return found[1]

        return await self._worker.run(read)

    def _held(self, lib: _Lib, table: Table, name: str) -> Set | Map | None:
        for kind in ("set", "map"):
            try:
                objects = _run(lib, [{"list": {kind: {**table_ref(table), "name": name}}}])
            except _Refused as exc:
                if exc.missing:
                    continue
                raise _error(exc, f"reading {kind} {name} of table {table.name}") from exc
            for obj in objects:
                return parse_container(next(iter(obj.values())))
        return None

    async def add_elements(
        self, family: Family, table: str, name: str, elements: Sequence[Any]
    ) -> None:
        self.check_ours(family, table)
        where = Table(family, table)

        def add(lib: _Lib) -> None:
            obj = self._held(lib, where, name)
            if obj is None:
                raise NotFoundError(f"table {family} {table}: no set or map {name}")
            check_elements(where, obj, elements, None)
            if elements:
                try:
                    _run(lib, [elements_cmd("add", where, name, elements)])
                except _Refused as exc:
                    raise _error(exc, f"table {family} {table}: adding to {name}") from exc

        await self._worker.run(add)

    async def delete_elements(
        self, family: Family, table: str, name: str, elements: Sequence[Any]
    ) -> None:
        self.check_ours(family, table)
        where = Table(family, table)
        keys = {elem_key(e[0] if isinstance(e, tuple) else e) for e in elements}

        def delete(lib: _Lib) -> None:
            for attempt in (1, 2):  # a timeout element may expire between reading and deleting
                obj = self._held(lib, where, name)
                if obj is None:
                    return
                held = [p[0] for p in obj.elements] if isinstance(obj, Map) else obj.elements
                present = [key_form(k) for k in held if elem_key(k) in keys]
                if not present:
                    return
                try:
                    _run(lib, [elements_cmd("delete", where, name, present)])
                    return
                except _Refused as exc:
                    if attempt == 2 or not obj.dynamic:
                        raise _error(exc, f"table {family} {table}: deleting from {name}") from exc

        await self._worker.run(delete)
