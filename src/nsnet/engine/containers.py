"""Container use-cases: create, start, stop, kill, wait, remove, and the exit of a process.

The lifecycle awaits runc, so each container's changes hold its lock (``Registry.lock_for``);
the exit of a process is watched by one task per running container, which records the exit,
tears the sandbox down and, for ``--rm``, removes the container once attached readers drained.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nsnet.engine.crashpoints import crash_point
from nsnet.engine.global_endpoints import Claim, GlobalEndpoints
from nsnet.engine.ports import Images, Runtime
from nsnet.engine.published_ports import PublishedPorts, check_request
from nsnet.engine.registry import NAME_RE, ContainerWaiters, Readers, Registry
from nsnet.engine.sandboxes import SandboxService, validate_endpoint_request
from nsnet.engine.sessions import StdinPipes, Terminals, tty_env
from nsnet.engine.shared_netns import check_create, joined_ref, resolve_owner
from nsnet.engine.undo import Undo
from nsnet.errors import Conflict, Invalid, NotFound, NotModified, Unavailable
from nsnet.exit_codes import classify_start_error
from nsnet.model import (
    Attachment,
    Container,
    EndpointRequest,
    new_id,
    now_rfc3339,
)
from nsnet.runtime.runc import ProcessSpec

log = logging.getLogger("nsnet.engine")


@dataclass
class ContainerCreate:
    """A ``POST /containers/create`` body reduced to what nsnet acts on."""

    image: str
    name: str = ""
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    hostname: str = ""
    domainname: str = ""
    user: str = ""
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    network_mode: str = "bridge"
    # Ordered: the NetworkMode network first, as Docker connects it first (eth0).
    endpoints: dict[str, EndpointRequest] = field(default_factory=dict)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    auto_remove: bool = False
    # Published ports (issue 12): HostConfig.PortBindings as api/parse.py normalised it,
    # Config.ExposedPorts' keys and HostConfig.PublishAllPorts (-P).
    port_bindings: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    publish_all_ports: bool = False


def _sig(value: str | int | None, default: int) -> int:
    """A signal the kernel will take, checked before anything is sent (runc would fail on 99
    after a stop had already begun)."""
    if value is None or value == "":
        return default
    v = str(value).upper()
    if isinstance(value, int) or (v.isascii() and v.isdigit()):
        n = int(v)
        if n not in _VALID_SIGNALS:
            raise Invalid(f"Invalid signal: {value}")
        return n
    if not v.startswith("SIG"):
        v = "SIG" + v
    try:
        return int(signal.Signals[v])
    except KeyError:
        raise Invalid(f"Invalid signal: {str(value)[:40]}") from None


_VALID_SIGNALS = {int(s) for s in signal.valid_signals()}


def _timeout(value: float | None) -> float:
    """Seconds to wait after the stop signal; negative waits for ever, as Docker's -1."""
    if value is None:
        return 10.0
    try:
        t = float(value)
    except (OverflowError, ValueError, TypeError):
        raise Invalid(f"invalid timeout: {value!r}") from None
    if t != t or abs(t) > 1e9:  # NaN, or beyond any real wait
        raise Invalid(f"invalid timeout: {value!r}")
    return t


class ContainerService:
    """Runs containers in sandboxes; owns the exit watchers and the wait futures."""

    def __init__(self, registry: Registry, sandboxes: SandboxService, images: Images,
                 runtime: Runtime, readers: Readers) -> None:
        self.registry = registry
        self.sandboxes = sandboxes
        self.images = images
        self.runc = runtime
        self.readers = readers
        self.waiters: dict[str, ContainerWaiters] = {}
        self.exit_tasks: dict[str, asyncio.Task[None]] = {}
        # Containers inside a restart: their stop must not trigger auto-remove.
        self.restarting: set[str] = set()
        self.global_endpoints: GlobalEndpoints | None = None  # set with a cluster
        # Told of every exit (Docker's ``die`` event); set by the engine's facade.
        self.on_exit: Callable[[Container, int], None] | None = None
        # Told when a stop escalates to SIGKILL (Docker's second ``kill`` event, signal 9).
        self.on_escalate: Callable[[Container, int], None] | None = None
        self.published_ports = PublishedPorts(registry, sandboxes.drivers)

    async def _claim_global(self, c: Container) -> dict[str, Claim]:
        """Addresses and records of the global networks ``c`` joins (before the sandbox,
        which is synchronous); none without such a network."""
        if c.network_mode in ("host", "none") or joined_ref(c.network_mode) is not None:
            return {}
        wanted = []
        for a in c.attachments:
            if a.gateway_only:
                continue
            try:
                net = self.registry.find_network(a.network_id)
            except NotFound:
                continue  # setup_sandbox says so, with Docker's message
            if net.scope == "global":
                wanted.append((a, net))
        if not wanted:
            return {}
        if self.global_endpoints is None:
            raise Unavailable(f"network {wanted[0][1].name} is global and this daemon has "
                              "no cluster store")
        return await self.global_endpoints.prepare(c, wanted)

    # -- create -----------------------------------------------------------------------------

    def create_container(self, req: ContainerCreate) -> Container:
        image = self.images.resolve(req.image)
        name = req.name[1:] if req.name.startswith("/") else req.name
        if name:
            # fullmatch: "$" would let a trailing newline through ("web\n").
            if not NAME_RE.fullmatch(name):
                raise Invalid(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                              "are allowed")
            for other in self.registry.containers.values():
                if other.name == name:
                    raise Conflict(f'Conflict. The container name "/{name}" is already in use by '
                                   f'container "{other.id}". You have to remove (or rename) that '
                                   "container to be able to reuse that name.")
        joined = self._joined_mode(req)  # container:<id>, or None for any other mode
        mode = req.network_mode or "bridge"
        if mode == "default":
            mode = "bridge"
        endpoints = dict(req.endpoints)
        if "default" in endpoints:
            endpoints.setdefault("bridge", endpoints.pop("default"))
        if mode in ("host", "none"):
            others = [k for k in endpoints if k != mode]
            if others:
                raise Invalid(f"conflicting options: cannot attach both user-defined and "
                              f"non-user-defined network-modes ({mode} and {others[0]})")
            endpoints = {}
        elif joined is not None:
            mode, endpoints = joined, {}
        else:
            endpoints.setdefault(mode, EndpointRequest())
            # NetworkMode's network is eth0, whatever the map order.
            endpoints = {mode: endpoints[mode], **{k: v for k, v in endpoints.items()
                                                   if k != mode}}
        if req.links and mode != "bridge":
            # Docker allows --link on user networks as aliases; keep it simple and explicit.
            pass
        attachments = []
        for ref, er in endpoints.items():
            try:
                net = self.registry.find_network(ref)
            except NotFound:
                net = None  # Docker: a missing network surfaces at start, not at create.
            validate_endpoint_request(net, ref, er)
            attachments.append(Attachment(network_id=net.id if net else ref, request=er))
        cid = new_id()
        c = Container(
            id=cid, name=name or _random_name(self.registry), image=req.image, image_id=image.id,
            created=now_rfc3339(), cmd=req.cmd if req.cmd is not None else list(image.cmd),
            entrypoint=req.entrypoint, env=list(image.env) + req.env,
            working_dir=req.working_dir, hostname=req.hostname or cid[:12],
            domainname=req.domainname, user=req.user, tty=req.tty,
            open_stdin=req.open_stdin, stdin_once=req.stdin_once, labels=dict(req.labels),
            network_mode=mode, attachments=attachments, dns=req.dns,
            dns_search=req.dns_search, dns_options=req.dns_options,
            extra_hosts=req.extra_hosts, links=req.links, auto_remove=req.auto_remove,
            port_bindings=req.port_bindings, publish_all_ports=req.publish_all_ports,
            exposed_ports=sorted(set(req.exposed_ports) | set(req.port_bindings)),
        )
        check_request(c, (self.registry.networks.get(a.network_id) for a in attachments))
        if mode == "host":
            c.hostname = req.hostname or _host_hostname()
        self.registry.save_container(c)
        crash_point("create.saved")
        self.waiters[c.id] = ContainerWaiters()
        return c

    def _joined_mode(self, req: ContainerCreate) -> str | None:
        """``container:<name|id>`` (issue 11): moby's refusals first, then the owner by
        ID (engine/shared_netns.py); None for any other network mode."""
        if joined_ref(req.network_mode) is None:
            return None
        check_create(req, req.endpoints)
        return resolve_owner(self.registry, req.network_mode)

    # -- start ------------------------------------------------------------------------------

    async def start_container(self, ref: str) -> None:
        c = self.registry.find_container(ref)
        async with self.registry.lock_for(c.id):
            if c.id not in self.registry.containers:
                raise NotFound(f"No such container: {ref}")
            if c.state.status == "running":
                raise NotModified("container already started")
            image = self.images.resolve(c.image_id)
            args = list(c.entrypoint or []) + list(c.cmd or [])
            if not args:
                raise Invalid("no command specified")
            # A restart starts from a clean slate: runc state and overlay of the last run.
            await self.runc.delete(c.id)
            claims = await self._claim_global(c)
            undo = Undo()
            try:
                ns_path = self.sandboxes.setup_sandbox(c, undo, claims)
                self.published_ports.publish(c, undo)  # after the endpoints, before runc
                etc = self.sandboxes.files_dir(c)  # a dependent's are its owner's
                self.runc.prepare(
                    c.id, self.images.rootfs(image),
                    ProcessSpec(args=args, env=tty_env(c.env, c.tty),
                                cwd=c.working_dir or "/", user=c.user, tty=c.tty),
                    c.hostname, ns_path,
                    {"/etc/hosts": etc / "hosts", "/etc/resolv.conf": etc / "resolv.conf",
                     "/etc/hostname": etc / "hostname"},
                )
                crash_point("start.sandbox_ready")
                if c.open_stdin and not c.tty:
                    if not isinstance(self.runc, StdinPipes):
                        raise Invalid("this runtime gives a container no stdin (OpenStdin)")
                    self.runc.open_stdin(c.id)
                pid = await self.runc.start(c.id)
                crash_point("start.runc_started")
            except BaseException as e:
                undo.rollback()
                c.ports = []  # unpublished by the undo
                self.sandboxes.teardown_sandbox(c)
                if self.global_endpoints is not None:
                    self.global_endpoints.retire_claims(claims.values())
                try:
                    await self.runc.delete(c.id)  # the bundle and overlay of this attempt
                except Exception:
                    log.exception("removing the bundle of a failed start")
                c.state.error = str(e)
                # Docker records 127/126 for a command that cannot start.
                code = classify_start_error(str(e))
                if code is not None:
                    c.state.exit_code = code
                self.registry.save_container(c)
                raise
            finally:
                if self.global_endpoints is not None:
                    self.global_endpoints.done(claims.values())
            c.state.paused = False
            c.state.status = "running"
            c.state.pid = pid
            c.state.exit_code = 0
            c.state.error = ""
            c.state.started_at = now_rfc3339()
            c.state.finished_at = "0001-01-01T00:00:00Z"
            self.registry.save_container(c)
            crash_point("start.saved")
            self.waiters.setdefault(c.id, ContainerWaiters())
            self.exit_tasks[c.id] = asyncio.create_task(self.watch(c.id, pid))

    async def watch(self, cid: str, pid: int) -> None:
        code = await self.runc.wait_exit(pid)
        await self.container_exited(cid, code)

    async def container_exited(self, cid: str, code: int) -> None:
        c = self.registry.containers.get(cid)
        if c is None:
            return
        async with self.registry.lock_for(cid):
            c.state.status = "exited"
            c.state.paused = False  # the freezer's cgroup went with the process
            c.state.exit_code = code
            c.state.pid = 0
            c.state.finished_at = now_rfc3339()
            try:
                self.published_ports.unpublish(c)  # while its endpoints are still known
                self.sandboxes.teardown_kernel(c)
                crash_point("exit.sandbox_removed")
                # Addresses freed once no link uses them, in the transaction that records the
                # exit: never free while a stored endpoint (or a live namespace) holds them. A
                # failed kernel teardown keeps them claimed; reconcile finishes it.
                self.sandboxes.forget_endpoints(c)
                crash_point("exit.saved")
                await self.runc.delete(cid)
                crash_point("exit.runc_deleted")
            except Exception:
                log.exception("cleaning up after %s exited (reconcile will retry)", c.short_id)
            finally:
                if cid in self.registry.containers:
                    self.registry.save_container(c)
        self.exit_tasks.pop(cid, None)
        w = self.waiters.get(cid)
        if w:
            w.exited(code)
        log.info("container %s exited with %d", c.short_id, code)
        if self.on_exit is not None:
            self.on_exit(c, code)
        if c.auto_remove and cid not in self.restarting:
            # Let attached clients (docker run --rm) read the last output before it goes.
            deadline = asyncio.get_running_loop().time() + 5
            while self.readers.attached(cid) > 0 and \
                    asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            await self.remove_container(cid, force=True)

    # -- stop / kill / wait -----------------------------------------------------------------

    async def stop_container(self, ref: str, timeout: float | None = None,
                             sig: str | None = None) -> None:
        c = self.registry.find_container(ref)
        # Everything checked before the signal goes: a refusal must change nothing.
        t = _timeout(timeout)
        first = _sig(sig, signal.SIGTERM)
        if c.state.status != "running":
            raise NotModified("container already stopped")
        task = self.exit_tasks.get(c.id)
        await self.runc.kill(c.id, first)
        crash_point("stop.signalled")
        await self._thaw_after_signal(c)
        if task is not None:
            if t >= 0:
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=t)
                    return
                except TimeoutError:
                    pass
            else:
                await asyncio.shield(task)
                return
            if self.on_escalate is not None:
                self.on_escalate(c, signal.SIGKILL)
            await self.runc.kill(c.id, signal.SIGKILL)
            await asyncio.shield(task)

    async def kill_container(self, ref: str, sig: str | None = None) -> None:
        c = self.registry.find_container(ref)
        n = _sig(sig, signal.SIGKILL)
        if c.state.status != "running":
            raise Conflict(f"Cannot kill container: {c.id}: container {c.id} is not running")
        await self.runc.kill(c.id, n)
        await self._thaw_after_signal(c)

    async def wait_container(self, ref: str, condition: str = "not-running") -> int:
        c = self.registry.find_container(ref)
        w = self.waiters.setdefault(c.id, ContainerWaiters())
        loop = asyncio.get_running_loop()
        if condition in ("", "not-running"):
            if c.state.status != "running":
                return c.state.exit_code
            fut: asyncio.Future[int] = loop.create_future()
            w.next_exit.append(fut)
            return await fut
        if condition == "next-exit":
            fut = loop.create_future()
            w.next_exit.append(fut)
            return await fut
        if condition == "removed":
            fut = loop.create_future()
            w.removed.append(fut)
            return await fut
        raise Invalid(f"invalid condition: {condition!r}")

    async def restart_container(self, ref: str, timeout: float | None = None) -> None:
        """Docker keeps an auto-remove container across a restart's stop."""
        c = self.registry.find_container(ref)
        _timeout(timeout)
        self.restarting.add(c.id)
        try:
            if c.state.status == "running":
                await self.stop_container(c.id, timeout)
        finally:
            self.restarting.discard(c.id)
        await self.start_container(c.id)

    # -- pause / unpause / rename / top / resize (issue 11) ----------------------------------

    @staticmethod
    def is_paused(c: Container) -> bool:
        """Docker's State.Paused: frozen, and still running (an exit clears the mark)."""
        return c.state.status == "running" and c.state.paused

    async def _thaw_after_signal(self, c: Container) -> None:
        """moby's killWithSignal: a paused container is resumed right after the stop or kill
        signal, so the signal is delivered and the process can exit (``docker stop``, ``kill``
        and ``rm -f`` of a paused container work, and leave it unpaused)."""
        if not c.state.paused:
            return
        try:
            await self.runc.resume(c.id)
        except Exception:
            # Gone meanwhile (SIGKILL reaches frozen tasks on cgroup v2): nothing to thaw.
            log.warning("resuming %s after a signal failed", c.short_id, exc_info=True)
        self._mark_paused(c, False)

    def _mark_paused(self, c: Container, paused: bool) -> None:
        """Stored at once: a daemon restarted while the container is frozen must still say
        so (reconcile then checks the mark against runc)."""
        c.state.paused = paused
        if c.id in self.registry.containers:
            self.registry.save_container(c)

    async def pause_container(self, ref: str) -> None:
        c = self.registry.find_container(ref)
        async with self.registry.lock_for(c.id):
            if c.state.status != "running":
                raise Conflict(f"Container {c.id} is not running")
            if c.state.paused:
                raise Conflict(f"Container {c.id} is already paused")
            await self.runc.pause(c.id)
            self._mark_paused(c, True)

    async def unpause_container(self, ref: str) -> None:
        c = self.registry.find_container(ref)
        async with self.registry.lock_for(c.id):
            if not self.is_paused(c):
                raise Conflict(f"Container {c.id} is not paused")
            await self.runc.resume(c.id)
            self._mark_paused(c, False)

    async def rename_container(self, ref: str, new_name: str) -> None:
        """moby's ContainerRename, checks in its order. The container's DNS names on its
        user-defined networks follow at once when it runs (the next start derives them from
        the new name anyway), and the links other containers hold to it by name are carried
        over, as Docker keeps links by ID: their /etc/hosts and resolvers follow."""
        if not ref or not new_name:
            raise Invalid("Neither old nor new names may be empty")
        name = new_name[1:] if new_name.startswith("/") else new_name
        c = self.registry.find_container(ref)
        async with self.registry.lock_for(c.id):
            if c.id not in self.registry.containers:
                raise NotFound(f"No such container: {ref}")
            if c.name == name:
                raise Invalid("Renaming a container with the same name as its current name")
            if not NAME_RE.fullmatch(name):
                raise Invalid(f"Error when allocating new name: Invalid container name "
                              f"(/{name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            for other in self.registry.containers.values():
                if other.name == name:
                    raise Conflict(f'Error when allocating new name: Conflict. The container '
                                   f'name "/{name}" is already in use by container '
                                   f'"{other.id}". You have to remove (or rename) that '
                                   "container to be able to reuse that name.")
            old = c.name
            c.name = name
            self.registry.save_container(c)
            if c.state.status == "running":
                self._rename_endpoints(c)
                if self.global_endpoints is not None:
                    self.global_endpoints.republish(c)  # other hosts' DNS follows
            self._follow_links(old, name)
        log.info("container %s renamed from %s to %s", c.short_id, old, name)

    def _rename_endpoints(self, c: Container) -> None:
        """Each live endpoint leaves the resolver under its old names and comes back under
        the new ones, as libnetwork's endpoint rename does with its service records."""
        resolver = self.sandboxes.resolver
        for a in c.attachments:
            ep = a.endpoint
            if ep is None or a.gateway_only:
                continue
            net = self.registry.networks.get(a.network_id)
            if net is None:
                continue
            resolver.endpoint_down(c, net, ep)
            ep.dns_names = self.sandboxes.dns_names(c, net, a.request)
            resolver.endpoint_up(c, net, ep)
        self.registry.save_container(c)

    def _follow_links(self, old: str, new: str) -> None:
        """Links naming ``old`` (``--link old:alias``, EndpointsConfig links) now name
        ``new``; running holders get their /etc/hosts and link table rewritten."""
        for other in list(self.registry.containers.values()):
            changed = False
            other.links, hit = _relink(other.links, old, new)
            changed |= hit
            for a in other.attachments:
                if a.request.links:
                    a.request.links, hit = _relink(a.request.links, old, new)
                    changed |= hit
            if not changed:
                continue
            self.registry.save_container(other)
            if other.state.status != "running":
                continue
            try:
                self.sandboxes.write_etc_files(other, hosts_only=True)
                for a in other.attachments:
                    net = self.registry.networks.get(a.network_id)
                    if a.endpoint is not None and net is not None and not a.gateway_only:
                        self.sandboxes.resolver.endpoint_up(other, net, a.endpoint)
            except Exception:
                log.exception("refreshing the links of %s after a rename", other.short_id)

    async def top_container(self, ref: str, ps_args: str) -> tuple[list[str], list[list[str]]]:
        """``ps`` over the container's processes; a paused container can be listed."""
        c = self.registry.find_container(ref)
        args = top_args(ps_args)
        if c.state.status != "running":
            raise Conflict(f"Container {c.id} is not running")
        return await self.runc.top(c.id, args)

    def resize_container(self, ref: str, height: int, width: int) -> None:
        """A TTY container's window size (TIOCSWINSZ on its pty); without a TTY there is no
        terminal to size: accepted and nothing changes, as containerd answers."""
        c = self.registry.find_container(ref)
        if c.state.status != "running":
            raise Conflict(f"Container {c.id} is not running")
        if isinstance(self.runc, Terminals):
            self.runc.resize_console(c.id, height, width)

    # -- remove -----------------------------------------------------------------------------

    async def remove_container(self, ref: str, force: bool = False) -> None:
        c = self.registry.find_container(ref)
        for _ in range(5):
            if c.state.status == "running":
                if not force:
                    if self.is_paused(c):
                        raise Conflict(f"cannot remove container \"/{c.name}\": container is "
                                       "paused: unpause and then stop the container before "
                                       "removing or force remove")
                    raise Conflict(f"cannot remove container \"/{c.name}\": container is "
                                   "running: stop the container before removing or force "
                                   "remove")
                task = self.exit_tasks.get(c.id)
                await self.runc.kill(c.id, signal.SIGKILL)
                await self._thaw_after_signal(c)
                if task is not None:
                    await asyncio.shield(task)
                if c.id not in self.registry.containers:
                    return  # auto-remove already took it
            async with self.registry.lock_for(c.id):
                if c.id not in self.registry.containers:
                    return
                if c.state.status == "running":
                    continue  # started while we waited for the lock: stop it first
                self.published_ports.unpublish(c)
                self.sandboxes.teardown_sandbox(c)
                await self.runc.delete(c.id)
                crash_point("rm.runc_deleted")
                self.runc.remove_data(c.id)
                _rmtree(self.sandboxes.etc_dir(c))
                crash_point("rm.data_removed")
                self.registry.store.delete("container", c.id)
                crash_point("rm.forgotten")
                self.registry.containers.pop(c.id, None)
                break
        else:
            raise Conflict(f"container {c.id} keeps being restarted: not removed")
        lock = self.registry.locks.get(c.id)
        if lock is not None and not lock.locked():
            self.registry.locks.pop(c.id, None)
        w = self.waiters.pop(c.id, None)
        if w:
            w.gone(c.state.exit_code)


def _rmtree(path: Path) -> None:
    shutil.rmtree(str(path), ignore_errors=True)


def _host_hostname() -> str:
    return socket.gethostname()


_ADJ = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "quiet", "sharp", "vivid")
_NOUN = ("lovelace", "turing", "hopper", "ritchie", "thompson", "torvalds", "knuth", "liskov",
         "kay", "perlman")


def _random_name(registry: Registry) -> str:
    while True:
        n = f"{secrets.choice(_ADJ)}_{secrets.choice(_NOUN)}{secrets.randbelow(100)}"
        if all(c.name != n for c in registry.containers.values()):
            return n


def _relink(links: list[str], old: str, new: str) -> tuple[list[str], bool]:
    """``links`` with the target ``old`` (with or without a leading "/") named ``new``."""
    out: list[str] = []
    hit = False
    for spec in links:
        target, _, alias = spec.partition(":")
        if target.lstrip("/") == old:
            # Without an alias the old name stays the name the holder used (Docker's alias).
            spec = f"{new}:{alias or old}"
            hit = True
        out.append(spec)
    return out, hit


# moby's validatePSArgs: a column renamed to PID (``-o user=PID``) would fake the PID column
# the output is filtered by.
_PS_RENAME_RE = re.compile(r"\s+(\S*)=\s*(PID\S*)")


def top_args(ps_args: str) -> list[str]:
    """``ps_args`` as ps's argv: moby's default ``-ef``, split on blanks (no shell, so no
    quoting, globbing or substitution), and moby's refusal of a renamed PID column."""
    if not ps_args:
        ps_args = "-ef"
    for key, value in _PS_RENAME_RE.findall(ps_args):
        if key != "pid":
            raise Invalid(f'specifying "{key}={value}" is not allowed')
    args = ps_args.split()
    if not args:
        raise Invalid("ps_args: no arguments")
    return args
