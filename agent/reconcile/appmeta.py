"""What apps posted to the metadata server (EVE's AppInstMetaData: a K3s VM's kubeconfig, a
custom status), kept in the vault: the latest of each type per app, one file each
(``appmeta/<app>.<type>``, 0600).  A kubeconfig is a credential of the cluster: it stays at
rest only in the vault, and goes to the controller only inside the signed info message.

``save`` raises :class:`~agent.drivers.errors.TemporaryError` while the vault is locked (the app
posts again; EVE's K3s VM posts until it is taken).  ``forget`` drops the entries of apps the
config no longer has.  Thread-safe for one writer at a time (the event loop's).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.drivers.errors import TemporaryError
from agent.util.atomicfile import write_atomic

log = logging.getLogger(__name__)

_NAME = re.compile(r"^([0-9a-f-]{36})\.([0-9]{1,3})$")


class AppMetaStore:
    """The vault's ``appmeta/`` directory; ``root`` gives the open vault (None: locked)."""

    def __init__(self, root: Callable[[], Path | None]) -> None:
        self._root = root

    def _dir(self) -> Path:
        root = self._root()
        if root is None:
            raise TemporaryError("the vault is locked: app metadata is kept only in the vault")
        return root / "appmeta"

    def save(self, app_id: str, kind: int, data: bytes) -> bool:
        """Keep ``data`` as app ``app_id``'s metadata of type ``kind``.  False when it is what
        was kept already (nothing to report again).  Raises TemporaryError (vault locked),
        ValueError (a malformed app id), OSError (the disk)."""
        name = f"{app_id}.{kind}"
        if not _NAME.match(name):
            raise ValueError(f"app metadata name {name[:60]!r}")
        path = self._dir() / name
        try:
            if path.read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
        write_atomic(path, data, mode=0o600)
        return True

    def load(self) -> dict[tuple[str, int], bytes]:
        """Everything kept, by (app, type); empty while the vault is locked."""
        try:
            directory = self._dir()
        except TemporaryError:
            return {}
        out: dict[tuple[str, int], bytes] = {}
        if not directory.is_dir():
            return out
        for path in directory.iterdir():
            found = _NAME.match(path.name)
            if found is None:
                continue
            try:
                out[(found.group(1), int(found.group(2)))] = path.read_bytes()
            except OSError as exc:
                log.warning("app metadata %s unreadable: %s", path.name, exc)
        return out

    def forget(self, keep: Iterable[str]) -> list[tuple[str, int]]:
        """Remove the entries of apps not in ``keep``; what was removed.  Never raises for one
        file (logged)."""
        wanted = set(keep)
        gone = [key for key in self.load() if key[0] not in wanted]
        directory = self._dir() if gone else None
        for app_id, kind in gone:
            assert directory is not None
            try:
                (directory / f"{app_id}.{kind}").unlink(missing_ok=True)
            except OSError as exc:
                log.warning("app metadata of %s not removed: %s", app_id, exc)
        return gone
