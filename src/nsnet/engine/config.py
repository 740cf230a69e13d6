"""What the daemon tells the engine at start: where its state lives and what the host offers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EngineConfig:
    """Paths and names fixed for one daemon's life; every service reads, none writes."""

    data_root: Path
    exec_root: Path
    default_bridge: str = "nsnet0"
    host_resolv_conf: Path = Path("/etc/resolv.conf")
    host_hosts: Path = Path("/etc/hosts")
    extra: dict[str, Any] = field(default_factory=dict)
