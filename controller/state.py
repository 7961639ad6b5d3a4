"""The controller's state directory: where every file lives, and how files are written.

One directory holds everything the controller knows (``--state DIR``)::

    DIR/                      mode 0700
      certs/                  mode 0700, made by ``eve-controller init``
        root-certificate.pem  root.key.pem          the CA devices pin
        server.cert.pem       server.key.pem        HTTPS
        signing.cert.pem      signing.key.pem       CONTROLLER_SIGNING (signs every response)
        ecdh.cert.pem         ecdh.key.pem          CONTROLLER_ECDH_EXCHANGE
        onboard.cert.pem      onboard.key.pem       a convenience onboarding certificate
      controller.db           SQLite (WAL), see controller.db

The admin commands and the server both work on this directory; there is no network admin API.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/eve-controller")


@dataclass(frozen=True)
class StateDir:
    """Paths inside one state directory.  Building one touches nothing on disk."""

    root: Path

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def database(self) -> Path:
        return self.root / "controller.db"

    @property
    def root_cert(self) -> Path:
        return self.certs / "root-certificate.pem"

    @property
    def root_key(self) -> Path:
        return self.certs / "root.key.pem"

    @property
    def server_cert(self) -> Path:
        return self.certs / "server.cert.pem"

    @property
    def server_key(self) -> Path:
        return self.certs / "server.key.pem"

    @property
    def signing_cert(self) -> Path:
        return self.certs / "signing.cert.pem"

    @property
    def signing_key(self) -> Path:
        return self.certs / "signing.key.pem"

    @property
    def ecdh_cert(self) -> Path:
        return self.certs / "ecdh.cert.pem"

    @property
    def ecdh_key(self) -> Path:
        return self.certs / "ecdh.key.pem"

    @property
    def onboard_cert(self) -> Path:
        return self.certs / "onboard.cert.pem"

    @property
    def onboard_key(self) -> Path:
        return self.certs / "onboard.key.pem"

    def cert_files(self) -> tuple[Path, ...]:
        """Every file ``init`` makes, in the order it makes them."""
        return (
            self.root_cert,
            self.root_key,
            self.server_cert,
            self.server_key,
            self.signing_cert,
            self.signing_key,
            self.ecdh_cert,
            self.ecdh_key,
            self.onboard_cert,
            self.onboard_key,
        )

    def ensure(self) -> None:
        """Create the directory and ``certs/`` with mode 0700; tighten them if they exist.

        Idempotent.  The state holds private keys and escrowed vault keys, so it is never
        readable by other users, whatever the umask.
        """
        for path in (self.root, self.certs):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix.

    Temp file in the same directory, fsync, rename, fsync the directory.  The file gets ``mode``
    from the start (it may be a private key, so it is never briefly world-readable).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
