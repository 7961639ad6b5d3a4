# SPDX-License-Identifier: Apache-2.0
"""The base OS the controller wants (``EdgeDevConfig.baseos``, EVE's BaseOS) and how the node
reports its two partitions (``ZInfoDevSW``), as typed values.

``BaseOS { 1 content_tree_uuid; 2 retry_update: DeviceOpsCmd; 3 activate; 4 base_os_version }``:
EVE reads only this (field 26); the older ``base`` list (field 8) is obsolete and ignored here as
in EVE (``zedagent/parseconfig.go``).  Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: A version string the node accepts (the image's /etc/eve-release must match it exactly).
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class BaseOsConfig:
    """The wanted base OS: a content tree holding the root image, its version, whether to
    activate it (``False``: download and verify only) and the retry counter."""

    content_tree_id: str
    version: str
    activate: bool
    retry_counter: int


def parse_baseos(msg: Any) -> BaseOsConfig:
    """``BaseOS`` into a :class:`BaseOsConfig`.  ValueError names what is wrong (an empty
    version or content tree, a version with characters a file name or log line must not hold).
    The content tree's existence is checked by the caller (it drops dangling references)."""
    version = str(msg.base_os_version)
    if not VERSION.match(version):
        raise ValueError(f"base_os_version {version[:64]!r} is not a version string")
    tree = str(msg.content_tree_uuid)
    if not tree:
        raise ValueError("base OS names no content tree")
    return BaseOsConfig(
        content_tree_id=tree,
        version=version,
        activate=bool(msg.activate),
        retry_counter=int(msg.retry_update.counter),
    )


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition as ``ZInfoDevSW`` reports it.

    ``state`` is EVE's partition state (``active``, ``unused``, ``updating``, ``inprogress``);
    ``user_status`` a ``BaseOsStatus`` name (``NONE``, ``DOWNLOADING``, ``DOWNLOAD_DONE``,
    ``UPDATING``, ``UPDATED``, ``FALLBACK``, ``FAILED``), ``sub_status`` a ``BaseOsSubStatus``
    name; ``progress`` is a percentage or, while testing, the seconds left.
    """

    label: str
    state: str
    version: str
    activated: bool
    user_status: str = "NONE"
    sub_status: str = "NONE_SUBSTATUS"
    sub_status_text: str = ""
    progress: int = 0
    error: str = ""
    error_time: float = 0.0
