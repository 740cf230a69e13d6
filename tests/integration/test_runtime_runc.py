"""Runc driver against the real runc, with busybox containers (root).

Every container gets a network namespace of its own (runc's or one the test made); nothing
touches the machine's network. Each test's fixture removes what it made and checks that no
mount, runc container, cgroup or zombie is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nsnet.errors import SystemError_
from nsnet.model import Image
from nsnet.runtime import NEW_NETNS, ImageStore, ProcessSpec, Runc, become_subreaper
from nsnet.testing.hosts import sh

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc"),
]


def _mounts_under(base: Path) -> list[str]:
    prefix = str(base) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == str(base) or p.startswith(prefix)]


@dataclass
class Env:
    base: Path
    store: ImageStore
    image: Image
    runc: Runc
    cids: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def cid(self) -> str:
        cid = "t" + secrets.token_hex(8)
        self.cids.append(cid)
        return cid

    def prepare(
        self,
        cid: str,
        args: list[str],
        netns: str | None = NEW_NETNS,
        binds: dict[str, Path] | None = None,
        cwd: str = "/",
    ) -> Path:
        return self.runc.prepare(
            cid,
            self.store.rootfs(self.image),
            ProcessSpec(args=args, env=list(self.image.env), cwd=cwd),
            hostname=cid[:12],
            netns_path=netns,
            bind_files=binds or {},
        )

    async def run(self, args: list[str], **kw: object) -> tuple[str, int]:
        cid = self.cid()
        self.prepare(cid, args, **kw)  # type: ignore[arg-type]
        pid = await self.runc.start(cid)
        self.pids.append(pid)
        return cid, pid


@pytest.fixture(scope="module", autouse=True)
def _subreaper() -> Iterator[None]:
    # Process-wide: undone afterwards so other modules' orphans are not left to pytest.
    become_subreaper()
    yield
    become_subreaper(False)


@pytest.fixture
def env() -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="nsnet-rt-", dir="/tmp"))
    runc = Runc(base / "exec", base / "data")
    made: Env | None = None
    try:
        store = ImageStore(base / "data" / "images")
        made = Env(base=base, store=store, image=store.ensure_busybox(), runc=runc)
        yield made
    finally:
        cids = set(runc.list_ids()) | set(made.cids if made else [])
        pids = made.pids if made else []

        async def cleanup() -> None:
            for cid in cids:
                with contextlib.suppress(Exception):
                    await runc.delete(cid)
                with contextlib.suppress(Exception):
                    runc.remove_data(cid)
            for pid in pids:
                # Reap what delete killed, so no zombie outlives the test.
                await asyncio.wait_for(runc.wait_exit(pid), 10)

        asyncio.run(cleanup())
        leaks = _mounts_under(base)
        for point in reversed(leaks):
            subprocess.run(["umount", "-l", point], check=False)
        listed = subprocess.run(
            ["runc", "--root", str(runc.state_root), "list", "-q"],
            capture_output=True,
            text=True,
        ).stdout.split()
        # cgroups_path of the empty id: this daemon's prefix, shared by all its containers.
        cgroups = list(Path("/sys/fs/cgroup/pids").glob(f"**/{runc.cgroups_path('')}*"))
        if not _mounts_under(base):
            shutil.rmtree(base, ignore_errors=True)
        assert leaks == [], "mounts left behind"
        assert listed == [], "runc containers left behind"
        assert cgroups == [], "cgroups left behind"


def test_exit_code_and_logs(env: Env) -> None:
    async def main() -> None:
        # A missing working directory is created, as Docker does.
        cid, pid = await env.run(
            ["sh", "-c", "echo out; pwd; echo err >&2; exit 3"], cwd="/work/dir"
        )
        assert await asyncio.wait_for(env.runc.wait_exit(pid), 10) == 3
        out, err = env.runc.log_paths(cid)
        assert out.read_text() == "out\n/work/dir\n"
        assert err.read_text() == "err\n"
        state = await env.runc.state(cid)
        assert state is not None and state["status"] == "stopped"
        assert await env.runc.state("nonexistent") is None
        # A stopped container can be signalled without error (stop races the exit).
        await env.runc.kill(cid, 15)

    asyncio.run(main())


def test_kill(env: Env) -> None:
    async def main() -> None:
        # sleep is the pid namespace's init: the kernel drops SIGTERM for it (no handler),
        # exactly as with Docker without --init. SIGKILL gets through.
        cid, pid = await env.run(["sleep", "100"])
        await env.runc.kill(cid, 15)
        await asyncio.sleep(0.3)
        state = await env.runc.state(cid)
        assert state is not None and state["status"] == "running"
        await env.runc.kill(cid, 9)
        assert await asyncio.wait_for(env.runc.wait_exit(pid), 10) == 137

        # An init that handles TERM, the usual shape of a well-behaved container.
        cid, pid = await env.run(["sh", "-c", "trap 'exit 143' TERM; sleep 100 & wait"])
        await asyncio.sleep(0.2)
        await env.runc.kill(cid, 15)
        assert await asyncio.wait_for(env.runc.wait_exit(pid), 10) == 143

    asyncio.run(main())


def test_start_failure_message(env: Env) -> None:
    async def main() -> None:
        cid = env.cid()
        env.prepare(cid, ["no-such-binary"])
        with pytest.raises(SystemError_) as e:
            await env.runc.start(cid)
        assert 'exec: "no-such-binary": executable file not found in $PATH' in e.value.message
        # runc's own error text is not left in the container's stderr log.
        assert env.runc.log_paths(cid)[1].read_text() == ""

    asyncio.run(main())


def test_exec(env: Env) -> None:
    async def main() -> None:
        cid, pid = await env.run(["sleep", "100"])
        proc = await env.runc.exec(cid, ProcessSpec(["echo", "hi"], env=env.image.env), False)
        out, err = await proc.communicate()
        assert (out, proc.returncode) == (b"hi\n", 0)

        proc = await env.runc.exec(cid, ProcessSpec(["sh", "-c", "exit 5"]), False)
        await proc.communicate()
        assert proc.returncode == 5

        proc = await env.runc.exec(cid, ProcessSpec(["no-such-binary"]), False)
        out, err = await proc.communicate()
        assert proc.returncode != 0
        assert b"executable file not found" in err
        assert err.startswith(b"exec failed: "), err

        proc = await env.runc.exec(cid, ProcessSpec(["id"], user="65534:65534", cwd="/tmp"), False)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert out.decode().startswith("uid=65534(nobody) gid=65534(nogroup)")

        proc = await env.runc.exec(cid, ProcessSpec(["id", "-u"], user="nobody"), False)
        out, _ = await proc.communicate()
        assert out == b"65534\n"

        # Docker's capability set (NET_RAW) lets root ping.
        ping = ProcessSpec(["ping", "-c", "1", "-W", "2", "127.0.0.1"])
        proc = await env.runc.exec(cid, ping, False)
        out, err = await proc.communicate()
        assert proc.returncode == 0, (out, err)
        # Docker's per-container sysctls (busybox ping itself only uses raw sockets).
        cat = ["cat", "/proc/sys/net/ipv4/ping_group_range"]
        cat += ["/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        proc = await env.runc.exec(cid, ProcessSpec(cat), False)
        out, err = await proc.communicate()
        assert out.split() == [b"0", b"2147483647", b"0"], err

        # Detached: returns once started; the process is reaped in the background.
        proc = await env.runc.exec(cid, ProcessSpec(["touch", "/tmp/detached"]), True)
        assert proc.returncode == 0
        for _ in range(50):
            check = await env.runc.exec(cid, ProcessSpec(["test", "-e", "/tmp/detached"]), False)
            await check.communicate()
            if check.returncode == 0:
                break
            await asyncio.sleep(0.05)
        assert check.returncode == 0
        with pytest.raises(SystemError_, match="executable file not found"):
            await env.runc.exec(cid, ProcessSpec(["no-such-binary"]), True)

        # The container's writes go to its upper layer, never to the image.
        assert not (env.store.rootfs(env.image) / "tmp" / "detached").exists()
        assert (env.runc.data_dir(cid) / "upper" / "tmp" / "detached").exists()

        await env.runc.kill(cid, 9)
        assert await asyncio.wait_for(env.runc.wait_exit(pid), 10) == 137
        await asyncio.sleep(0.1)  # let the background reaper of the detached exec run

    asyncio.run(main())


def test_netns_path_and_bind_files(env: Env, tmp_path: Path) -> None:
    ns = "nsnt-rt-" + secrets.token_hex(4)
    sh("ip", "netns", "add", ns)  # noted: the per-test leak check looks for it
    try:
        hosts = tmp_path / "hosts"
        hosts.write_text("127.0.0.1 localhost\n10.9.8.7 peer\n")

        async def main() -> None:
            cid, pid = await env.run(
                ["sleep", "100"], netns=f"/run/netns/{ns}", binds={"/etc/hosts": hosts}
            )
            # The container is in the test's namespace: same inode as /run/netns/<ns>.
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
            proc = await env.runc.exec(cid, ProcessSpec(["ip", "-o", "link"]), False)
            out, _ = await proc.communicate()
            links = [line.split(":")[1].strip() for line in out.decode().splitlines()]
            assert links == ["lo"]

            proc = await env.runc.exec(cid, ProcessSpec(["cat", "/etc/hosts"]), False)
            out, _ = await proc.communicate()
            assert out.decode() == hosts.read_text()
            # Rewritten in place by the engine later: visible inside at once.
            with open(hosts, "r+") as f:
                f.truncate(0)
                f.write("10.0.0.1 changed\n")
            proc = await env.runc.exec(cid, ProcessSpec(["cat", "/etc/hosts"]), False)
            out, _ = await proc.communicate()
            assert out == b"10.0.0.1 changed\n"

            await env.runc.kill(cid, 9)
            assert await asyncio.wait_for(env.runc.wait_exit(pid), 10) == 137

        asyncio.run(main())
    finally:
        sh("ip", "netns", "del", ns, check=False)


def test_config_network_modes(env: Env) -> None:
    """Host mode (None) must have no network namespace and no net sysctls; nothing runs."""
    for netns, expect_ns, expect_path in (
        (None, False, None),
        (NEW_NETNS, True, None),
        ("/run/netns/x", True, "/run/netns/x"),
    ):
        cid = env.cid()
        bundle = env.prepare(cid, ["true"], netns=netns)
        config = json.loads((bundle / "config.json").read_text())
        nets = [n for n in config["linux"]["namespaces"] if n["type"] == "network"]
        assert bool(nets) == expect_ns
        assert ("sysctl" in config["linux"]) == expect_ns
        if nets:
            assert nets[0].get("path") == expect_path
        caps = config["process"]["capabilities"]["bounding"]
        assert "CAP_NET_RAW" in caps and "CAP_SYS_ADMIN" not in caps
        assert config["process"]["terminal"] is False
        assert config["root"]["readonly"] is False
        asyncio.run(env.runc.delete(cid))
        env.runc.remove_data(cid)


def test_delete_leaves_nothing(env: Env) -> None:
    async def main() -> None:
        cid, pid = await env.run(["sleep", "100"])
        assert cid in env.runc.list_ids()
        assert _mounts_under(env.base) != []
        # delete -f on a running container kills it.
        await env.runc.delete(cid)
        assert await asyncio.wait_for(env.runc.wait_exit(pid), 10) == 137
        env.runc.remove_data(cid)
        # Idempotent, also for ids never seen.
        await env.runc.delete(cid)
        env.runc.remove_data(cid)
        await env.runc.delete("never-created")
        env.runc.remove_data("never-created")

        assert _mounts_under(env.base) == []
        assert env.runc.list_ids() == []
        listed = subprocess.run(
            ["runc", "--root", str(env.runc.state_root), "list", "-q"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert listed.strip() == ""
        assert not (env.base / "exec" / "containers" / cid).exists()
        assert not env.runc.data_dir(cid).exists()

    asyncio.run(main())


def test_wait_exit_not_our_child(env: Env) -> None:
    async def main() -> None:
        # A grandchild whose parent is alive is not ours to reap: 255 once it has ended.
        parent = await asyncio.create_subprocess_exec(
            "sh", "-c", "sleep 0.3 & echo $!; wait", stdout=asyncio.subprocess.PIPE
        )
        assert parent.stdout is not None
        grandchild = int((await parent.stdout.readline()).decode())
        t = time.monotonic()
        assert await asyncio.wait_for(env.runc.wait_exit(grandchild), 10) == 255
        assert time.monotonic() - t > 0.1
        assert await parent.wait() == 0
        # Gone already (reaped above): 255 at once.
        assert await env.runc.wait_exit(parent.pid) == 255

    asyncio.run(main())
