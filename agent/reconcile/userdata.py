"""An app's cloud-init user data, as EVE reads it for VMs and containers.  Pure.

The controller sends ``userData`` base64-encoded (EVE's domainmgr decodes it before writing the
NoCloud seed); text that is not valid base64 is taken as it is, as EVE falls back to.

A VM gets the decoded bytes in its NoCloud seed unchanged.  A container has no cloud-init
daemon, so EVE applies the user data itself (``docs/CLOUD-INIT.md``):

- the *legacy* format: ``KEY=VALUE`` lines, each an environment variable;
- the *cloud-config* format (first line ``#cloud-config``): ``runcmd`` entries of the form
  ``KEY=VALUE`` set environment variables (any other command is an error), and ``write_files``
  entries (path, content, permissions, encoding) are written into the container before start.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import posixpath
import re
from dataclasses import dataclass

import yaml

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
MAX_FILES = 64
MAX_FILE_BYTES = 1024 * 1024


class UserDataError(ValueError):
    """The user data cannot be applied to a container; the message says which line or entry."""


@dataclass(frozen=True)
class InjectedFile:
    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class ContainerUserData:
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[InjectedFile, ...] = ()


def decode(user_data: str) -> bytes:
    """The user data's bytes: base64-decoded when it is base64, else the text itself."""
    text = user_data.strip()
    if not text:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return user_data.encode()


def _env_pair(line: str, where: str) -> tuple[str, str]:
    key, sep, value = line.partition("=")
    key = key.strip()
    if not sep or not _ENV_KEY.match(key):
        raise UserDataError(f"{where}: {line[:80]!r} is not KEY=VALUE")
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return key, value


def _file(entry: object, index: int) -> InjectedFile:
    where = f"write_files[{index}]"
    if not isinstance(entry, dict):
        raise UserDataError(f"{where} is not a mapping")
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise UserDataError(f"{where}: path must be an absolute path")
    norm = posixpath.normpath(path)
    if norm == "/" or "\x00" in norm:
        raise UserDataError(f"{where}: path {path[:80]!r} is not a file path")
    content = entry.get("content", "")
    if not isinstance(content, str):
        content = str(content)
    encoding = str(entry.get("encoding", "text")).lower()
    try:
        if encoding in ("b64", "base64"):
            data = base64.b64decode(content, validate=True)
        elif encoding in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
            data = gzip.decompress(base64.b64decode(content, validate=True))
        elif encoding in ("text", "text/plain"):
            data = content.encode()
        else:
            raise UserDataError(f"{where}: unknown encoding {encoding[:40]!r}")
    except (binascii.Error, ValueError, OSError, EOFError) as exc:
        if isinstance(exc, UserDataError):
            raise
        raise UserDataError(f"{where}: content does not decode as {encoding}") from None
    if len(data) > MAX_FILE_BYTES:
        raise UserDataError(f"{where}: content larger than {MAX_FILE_BYTES} bytes")
    perms = entry.get("permissions", "0644")
    try:
        mode = int(str(perms), 8)
    except ValueError:
        raise UserDataError(f"{where}: permissions {str(perms)[:20]!r} are not octal") from None
    if not 0 <= mode <= 0o7777:
        raise UserDataError(f"{where}: permissions out of range")
    return InjectedFile(norm, data, mode)


def for_container(user_data: str) -> ContainerUserData:
    """Environment and files for a container from the app's user data.

    Raises UserDataError naming the bad line or entry; nothing is applied then.
    """
    raw = decode(user_data)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise UserDataError("user data is not UTF-8 text") from None
    if not text.strip():
        return ContainerUserData()
    first = text.lstrip().split("\n", 1)[0].strip()
    if first != "#cloud-config":
        env = []
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                env.append(_env_pair(stripped, f"line {number}"))
        return ContainerUserData(env=tuple(env))
    try:
        doc = yaml.safe_load(text)
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise UserDataError("cloud-config is nested too deeply") from None
    except yaml.YAMLError as exc:
        raise UserDataError(f"cloud-config is not YAML: {str(exc)[:200]}") from None
    if doc is None:
        return ContainerUserData()
    if not isinstance(doc, dict):
        raise UserDataError("cloud-config is not a mapping")
    env = []
    runcmd = doc.get("runcmd") or []
    if not isinstance(runcmd, list):
        raise UserDataError("runcmd is not a list")
    for index, cmd in enumerate(runcmd):
        if not isinstance(cmd, str):
            raise UserDataError(f"runcmd[{index}]: only KEY=VALUE strings are supported")
        env.append(_env_pair(cmd.strip(), f"runcmd[{index}]"))
    files_doc = doc.get("write_files") or []
    if not isinstance(files_doc, list):
        raise UserDataError("write_files is not a list")
    if len(files_doc) > MAX_FILES:
        raise UserDataError(f"more than {MAX_FILES} write_files entries")
    files = tuple(_file(entry, index) for index, entry in enumerate(files_doc))
    return ContainerUserData(env=tuple(env), files=files)
