"""Static settings of one node: where its state lives and how the daemon runs.

These come from the command line (and later a file under /etc) and never change while the agent
runs.  Settings the controller pushes (``timer.config.interval`` and friends) are runtime config
items, kept apart in :mod:`agent.model.configitems`.

Every path derives from the node's own directories, so several emulated nodes can share a host.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodePaths:
    """The files of one node, laid out as on EVE (``/config``, ``/persist``) under a root."""

    config: Path
    persist: Path
    run: Path
    #: An emulated node's hardware description (boot components); unused on real hardware.
    platform: Path

    @classmethod
    def from_root(cls, root: Path | None) -> NodePaths:
        """``None`` means a real node: /config, /persist and /run/eve-agent."""
        if root is None:
            return cls(
                config=Path("/config"),
                persist=Path("/persist"),
                run=Path("/run/eve-agent"),
                platform=Path("/etc/eve-agent/platform"),
            )
        root = root.absolute()
        return cls(
            config=root / "config",
            persist=root / "persist",
            run=root / "run",
            platform=root / "platform",
        )

    # --- config partition: written by the installer, read-only for the agent
    @property
    def server(self) -> Path:
        return self.config / "server"

    @property
    def root_certificate(self) -> Path:
        return self.config / "root-certificate.pem"

    @property
    def onboard_cert(self) -> Path:
        return self.config / "onboard.cert.pem"

    @property
    def onboard_key(self) -> Path:
        return self.config / "onboard.key.pem"

    @property
    def soft_serial(self) -> Path:
        return self.config / "soft_serial"

    @property
    def serial(self) -> Path:
        """Hardware serial override; on hardware EVE reads it from DMI."""
        return self.config / "serial"

    # --- persist: the agent's own durable state
    @property
    def device_cert(self) -> Path:
        return self.persist / "certs" / "device.cert.pem"

    @property
    def device_key(self) -> Path:
        return self.persist / "certs" / "device.key.pem"

    @property
    def uuid(self) -> Path:
        return self.persist / "status" / "uuid"

    @property
    def hardware_model(self) -> Path:
        return self.persist / "status" / "hardwaremodel"

    @property
    def checkpoint(self) -> Path:
        return self.persist / "checkpoint"

    @property
    def outbox(self) -> Path:
        return self.persist / "outbox"

    @property
    def newlog(self) -> Path:
        return self.persist / "newlog"

    # --- run: gone after a reboot
    @property
    def status_file(self) -> Path:
        return self.run / "status.json"


@dataclass(frozen=True)
class AgentSettings:
    """Everything the daemon needs that is not pushed by the controller."""

    paths: NodePaths
    #: "none" (explicit software mode), "device" (the platform TPM) or "swtpm" (emulated node).
    tpm: str = "none"
    #: TCTI for "device" mode; default device:/dev/tpmrm0.
    tcti: str | None = None
    #: Upper bound for a clean shutdown after SIGTERM before tasks are cancelled.
    stop_grace: float = 10.0
    #: How often the status snapshot for ``eve-agent status`` is rewritten at most.
    status_interval: float = 2.0
    #: Agent version reported to the controller.
    version: str = "0.1.0"
    #: Run the apps the controller asks for (dockerd and libvirtd); off for link-only tests.
    workloads: bool = True
    #: Names this node's containers, domains and other host objects ("" derives one).
    node_name: str = ""
    #: Run the network instances the controller asks for (bridges, dnsmasq), in ``netns`` (a
    #: named network namespace: an emulated node's own) or the root namespace (None).
    networks: bool = True
    netns: str | None = None
    #: Seconds between flow log reports (EVE collects every 2 minutes); shorter in tests.
    flowlog_interval: float = 120.0

    @property
    def host_name(self) -> str:
        """The node's name on the host: ``node_name``, else ``node`` on a real node and a
        short hash of the persist directory for an emulated one (several share a host)."""
        if self.node_name:
            return self.node_name
        if self.paths.persist == Path("/persist"):
            return "node"
        return "n" + hashlib.sha256(str(self.paths.persist).encode()).hexdigest()[:10]

    @property
    def no_tpm(self) -> bool:
        return self.tpm == "none"
