"""The typed client: one method per Docker Engine API call nsnet serves.

Methods return the daemon's JSON as parsed (dicts and lists), not wrapper objects: the CLI
prints most of it as is, and docker's shapes are documented already (docker-api.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import IO, Any, Literal, Self, overload

from nsnet.client.errors import APIError, ClientError
from nsnet.client.transport import (
    API_VERSION,
    Filters,
    FrameStream,
    Params,
    Response,
    Transport,
    decode_body,
    encode_filters,
    image_segment,
    segment,
)

JSONDict = dict[str, Any]
JSONList = list[JSONDict]


class _OpenResponse:
    """A response read after the call returns; closing it (or leaving ``with``) ends it."""

    def __init__(self, response: Response) -> None:
        self.response = response

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PendingWait(_OpenResponse):
    """A `wait` whose headers arrived: the daemon is now watching, so `start` cannot race it.

    `docker run` relies on this order (wait before start); the body (the exit status) is read
    only once the output has ended.
    """

    def result(self, timeout: float | None = None) -> JSONDict:
        sock = self.response.conn.sock
        if timeout is not None and sock is not None:
            sock.settimeout(timeout)
        try:
            data = self.response.json()
        except TimeoutError as exc:
            self.close()
            raise ClientError("timed out waiting for the container") from exc
        if not isinstance(data, dict):
            raise ClientError(f"unexpected wait response: {data!r}")
        return data



class _Section:
    def __init__(self, transport: Transport) -> None:
        self._t = transport


class Networks(_Section):
    """`/networks`; names are path-escaped here because users name networks `test 01`."""

    def list(self, filters: Filters | None = None) -> JSONList:
        return list(self._t.call("GET", "/networks", {"filters": encode_filters(filters)}) or [])

    def inspect(self, network: str, *, verbose: bool = False, scope: str | None = None) -> JSONDict:
        params: dict[str, str | None] = {"verbose": "true" if verbose else None, "scope": scope}
        data: JSONDict = self._t.call("GET", f"/networks/{segment(network)}", params)
        return data

    def create(self, body: Mapping[str, Any]) -> JSONDict:
        data: JSONDict = self._t.call("POST", "/networks/create", body=dict(body))
        return data

    def remove(self, network: str) -> None:
        self._t.call("DELETE", f"/networks/{segment(network)}")

    def connect(
        self,
        network: str,
        container: str,
        endpoint_config: Mapping[str, Any] | None = None,
    ) -> None:
        body: JSONDict = {"Container": container}
        if endpoint_config is not None:
            body["EndpointConfig"] = dict(endpoint_config)
        self._t.call("POST", f"/networks/{segment(network)}/connect", body=body)

    def disconnect(self, network: str, container: str, *, force: bool = False) -> None:
        body = {"Container": container, "Force": force}
        self._t.call("POST", f"/networks/{segment(network)}/disconnect", body=body)

    def prune(self, filters: Filters | None = None) -> JSONDict:
        data = self._t.call("POST", "/networks/prune", {"filters": encode_filters(filters)})
        return data if isinstance(data, dict) else {"NetworksDeleted": None}


class Containers(_Section):
    """`/containers` and `/exec`: exec lives here because an exec only exists inside one."""

    def list(
        self,
        *,
        all: bool = False,
        filters: Filters | None = None,
        limit: int | None = None,
        size: bool = False,
    ) -> JSONList:
        params: Params = {
            "all": True if all else None,
            "limit": limit if limit and limit > 0 else None,
            "size": True if size else None,
            "filters": encode_filters(filters),
        }
        return list(self._t.call("GET", "/containers/json", params) or [])

    def create(self, body: Mapping[str, Any], name: str | None = None) -> JSONDict:
        params: Params = {"name": name or None}
        data: JSONDict = self._t.call("POST", "/containers/create", params, body=dict(body))
        return data

    def start(self, container: str) -> None:
        self._t.call("POST", f"/containers/{segment(container)}/start")

    def stop(self, container: str, *, t: int | None = None, signal: str | None = None) -> None:
        params: Params = {"t": t, "signal": signal or None}
        self._t.call("POST", f"/containers/{segment(container)}/stop", params)

    def kill(self, container: str, *, signal: str | None = None) -> None:
        params: Params = {"signal": signal or None}
        self._t.call("POST", f"/containers/{segment(container)}/kill", params)

    def wait_begin(self, container: str, condition: str | None = None) -> PendingWait:
        """Send `wait` and return once its headers arrived; see PendingWait."""
        params: Params = {"condition": condition or None}
        return PendingWait(self._t.open("POST", f"/containers/{segment(container)}/wait", params))

    def wait(self, container: str, condition: str | None = None) -> JSONDict:
        return self.wait_begin(container, condition).result()

    def remove(
        self, container: str, *, force: bool = False, volumes: bool = False, link: bool = False
    ) -> None:
        params: Params = {
            "v": True if volumes else None,
            "link": True if link else None,
            "force": True if force else None,
        }
        self._t.call("DELETE", f"/containers/{segment(container)}", params)

    def inspect(self, container: str) -> JSONDict:
        data: JSONDict = self._t.call("GET", f"/containers/{segment(container)}/json")
        return data

    def logs(
        self,
        container: str,
        *,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tail: int | str | None = None,
        timestamps: bool = False,
    ) -> FrameStream:
        params: Params = {
            "stdout": True if stdout else None,
            "stderr": True if stderr else None,
            "follow": True if follow else None,
            "timestamps": True if timestamps else None,
            "tail": "all" if tail is None else tail,
        }
        return self._t.stream("GET", f"/containers/{segment(container)}/logs", params)

    def attach(
        self,
        container: str,
        *,
        stream: bool = True,
        stdout: bool = True,
        stderr: bool = True,
        logs: bool = False,
    ) -> FrameStream:
        """Hijack the container's output; returns once the daemon accepted the upgrade."""
        params: Params = {
            "logs": True if logs else None,
            "stream": True if stream else None,
            "stdout": True if stdout else None,
            "stderr": True if stderr else None,
        }
        return self._t.stream(
            "POST", f"/containers/{segment(container)}/attach", params, upgrade=True
        )

    def rename(self, container: str, name: str) -> None:
        params: Params = {"name": name}
        self._t.call("POST", f"/containers/{segment(container)}/rename", params)

    def pause(self, container: str) -> None:
        self._t.call("POST", f"/containers/{segment(container)}/pause")

    def unpause(self, container: str) -> None:
        self._t.call("POST", f"/containers/{segment(container)}/unpause")

    def top(self, container: str, ps_args: str | None = None) -> JSONDict:
        """Docker's ``Titles`` and ``Processes``; ``ps_args`` goes to the host's ps (the
        daemon's default is ``-ef``)."""
        params: Params = {"ps_args": ps_args or None}
        data = self._t.call("GET", f"/containers/{segment(container)}/top", params)
        return data if isinstance(data, dict) else {"Titles": [], "Processes": []}

    def resize(self, container: str, *, height: int, width: int) -> None:
        """The container's terminal size (rows, columns); without a TTY nothing changes."""
        params: Params = {"h": height, "w": width}
        self._t.call("POST", f"/containers/{segment(container)}/resize", params)

    def exec_create(
        self,
        container: str,
        cmd: Sequence[str],
        *,
        env: Sequence[str] | None = None,
        workdir: str = "",
        user: str = "",
        detach: bool = False,
        privileged: bool = False,
    ) -> JSONDict:
        """Body shaped like the docker CLI's (docker-api.md §3.3), so the daemon sees one shape
        whichever client sent it."""
        body: JSONDict = {
            "User": user,
            "Privileged": privileged,
            "Tty": False,
            "AttachStdin": False,
            "AttachStderr": not detach,
            "AttachStdout": not detach,
            "Detach": detach,
            "DetachKeys": "",
            "Env": list(env) if env else None,
            "WorkingDir": workdir,
            "Cmd": list(cmd),
        }
        data: JSONDict = self._t.call("POST", f"/containers/{segment(container)}/exec", body=body)
        return data

    @overload
    def exec_start(self, exec_id: str, *, detach: Literal[False] = False) -> FrameStream: ...

    @overload
    def exec_start(self, exec_id: str, *, detach: Literal[True]) -> None: ...

    def exec_start(self, exec_id: str, *, detach: bool = False) -> FrameStream | None:
        """Attached: hijack and return the output frames. Detached: a plain request."""
        body = {"Detach": detach, "Tty": False}
        path = f"/exec/{segment(exec_id)}/start"
        if detach:
            self._t.call("POST", path, body=body)
            return None
        return self._t.stream("POST", path, body=body, upgrade=True)

    def exec_inspect(self, exec_id: str) -> JSONDict:
        data: JSONDict = self._t.call("GET", f"/exec/{segment(exec_id)}/json")
        return data


class Images(_Section):
    """`/images`: no pull, since the engine never fetches images from the network."""

    def list(self, *, all: bool = False, filters: Filters | None = None) -> JSONList:
        params: Params = {"all": True if all else None, "filters": encode_filters(filters)}
        return list(self._t.call("GET", "/images/json", params) or [])

    def inspect(self, name: str) -> JSONDict:
        data: JSONDict = self._t.call("GET", f"/images/{image_segment(name)}/json")
        return data

    def import_tar(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        repo: str | None = None,
        *,
        message: str | None = None,
    ) -> JSONList:
        """Import a root filesystem tarball (`docker import`), sent chunked like the CLI does.

        The daemon answers with JSON lines; an `error` line raises APIError even though the
        status was 200, as docker's jsonmessage does.
        """
        params: Params = {"fromSrc": "-", "repo": repo or None, "message": message or None}
        headers = {"Content-Type": "text/plain"}
        if isinstance(source, str | os.PathLike):
            try:
                fh: IO[bytes] = open(source, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise ClientError(f"cannot open {os.fspath(source)}: {exc.strerror}") from exc
            close = True
        else:
            fh, close = source, False
        try:
            response = self._t.open(
                "POST", "/images/create", params, data=fh, headers=headers, chunked=True
            )
            content = response.read()
        finally:
            if close:
                fh.close()
        return _json_messages(response.content_type, content)

    def remove(self, name: str, *, force: bool = False, noprune: bool = False) -> JSONList:
        params: Params = {"force": True if force else None, "noprune": True if noprune else None}
        data = self._t.call("DELETE", f"/images/{image_segment(name)}", params)
        return list(data) if isinstance(data, list) else []


def _json_messages(content_type: str, content: bytes) -> JSONList:
    messages: list[JSONDict] = []
    for line in content.splitlines():
        line = line.strip()
        if not line:
            continue
        msg = decode_body("application/json", line)
        if not isinstance(msg, dict):
            continue
        error = msg.get("error") or (msg.get("errorDetail") or {}).get("message")
        if error:
            raise APIError(500, str(error))
        messages.append(msg)
    if not messages and content.strip() and "json" not in content_type:
        messages.append({"status": content.decode("utf-8", "replace").strip()})
    return messages


class EventStream(_OpenResponse):
    """``GET /events`` as it arrives: one message (a dict) per JSON line, read a line at a
    time so each event shows up while it happens. Ends when the daemon ends the stream
    (``until`` reached); close it (or use ``with``) to stop following early."""

    def __iter__(self) -> Iterator[JSONDict]:
        try:
            for raw in iter(self.response.raw.readline, b""):
                if not raw.strip():
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError as exc:
                    raise ClientError(f"daemon sent an invalid event: {exc}") from exc
                if not isinstance(msg, dict):
                    raise ClientError(f"daemon sent an invalid event: {msg!r}")
                yield msg
        finally:
            self.close()



class Client:
    """Synchronous client for nsnetd.

    `host` is `unix:///path` or a bare path; None means $NSNET_HOST, then the default socket.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        api_version: str = API_VERSION,
        timeout: float | None = None,
    ) -> None:
        self.transport = Transport(host, api_version=api_version, timeout=timeout)
        self.networks = Networks(self.transport)
        self.containers = Containers(self.transport)
        self.images = Images(self.transport)

    @property
    def host(self) -> str:
        return self.transport.host

    def ping(self) -> str:
        data = self.transport.call("GET", "/_ping")
        return "" if data is None else str(data)

    def version(self) -> JSONDict:
        data: JSONDict = self.transport.call("GET", "/version")
        return data

    def info(self) -> JSONDict:
        data: JSONDict = self.transport.call("GET", "/info")
        return data

    def events(
        self,
        since: str | float | None = None,
        until: str | float | None = None,
        filters: Filters | None = None,
    ) -> EventStream:
        """The daemon's events. ``since``/``until`` go to the daemon as given: it reads
        every form ``docker events`` accepts (unix seconds, RFC3339, ``10m``)."""
        params: Params = {
            "since": str(since) if since not in (None, "") else None,
            "until": str(until) if until not in (None, "") else None,
            "filters": encode_filters(filters),
        }
        return EventStream(self.transport.open("GET", "/events", params))

    def reconcile(self) -> Any:
        """nsnet's own route: bring the kernel back in line with the store now."""
        return self.transport.call("POST", "/nsnet/reconcile")

    def nodes(self) -> JSONList:
        """nsnet's own route: the hosts of this daemon's cluster (503 outside one)."""
        data: JSONList = self.transport.call("GET", "/nsnet/nodes")
        return data


def frames_text(frames: Iterable[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    """Collect a finished stream into (stdout, stderr): handy for scripts and tests."""
    out: list[bytes] = []
    err: list[bytes] = []
    for stream, data in frames:
        (err if stream == 2 else out).append(data)
    return b"".join(out), b"".join(err)
