"""What the engine needs of its collaborators below it, as protocols.

The services are handed these, never the concrete classes, so a unit test can give them a
``FakeKernel`` (nsnet.testing.fake_kernel), a memory store and a fake runtime, and the daemon
wires the real ones once (engine/wiring.py). ``Kernel`` and ``Store`` are the kernel's and the
store's own protocols; the runtime and image surfaces are defined here, where they are used.
"""

from __future__ import annotations

import asyncio
import builtins
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from nsnet.kernel.api import Kernel
from nsnet.model import Image
from nsnet.store.base import Store

if TYPE_CHECKING:
    from nsnet.runtime.runc import ProcessSpec

__all__ = ["Images", "Kernel", "Runtime", "Store"]


class Runtime(Protocol):
    """The OCI runtime as the container and session services use it (runtime/runc.py)."""

    def prepare(self, cid: str, rootfs_lower: Path, process: ProcessSpec, hostname: str,
                netns_path: str | None, bind_files: dict[str, Path]) -> Path: ...

    async def start(self, cid: str) -> int: ...

    async def wait_exit(self, pid: int) -> int: ...

    async def kill(self, cid: str, sig: int) -> None: ...

    async def delete(self, cid: str) -> None: ...

    def remove_data(self, cid: str) -> None: ...

    async def exec(self, cid: str, process: ProcessSpec,
                   detach: bool) -> asyncio.subprocess.Process: ...

    def take_detached(
        self, proc: asyncio.subprocess.Process
    ) -> tuple[int, asyncio.Task[int]] | None: ...

    def log_paths(self, cid: str) -> tuple[Path, Path]: ...

    # pause, unpause and top (issue 11)
    async def pause(self, cid: str) -> None: ...

    async def resume(self, cid: str) -> None: ...

    async def top(self, cid: str, ps_args: list[str]) -> tuple[list[str], list[list[str]]]: ...

    def list_ids(self) -> list[str]: ...


class Images(Protocol):
    """The image store (runtime/images.py): root filesystems imported from tarballs."""

    def list(self) -> list[Image]: ...

    def resolve(self, ref: str) -> Image: ...

    def rootfs(self, image: Image) -> Path: ...

    def ensure_busybox(self) -> Image: ...

    def import_tar(self, tar_path: Path, repo_tag: str | None) -> Image: ...

    def remove(self, ref: str, force: bool,
               in_use: bool) -> builtins.list[dict[str, str]]: ...
