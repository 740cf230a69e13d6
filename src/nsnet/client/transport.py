"""HTTP over the daemon's unix socket, with the stdlib only.

The CLI imports this on every invocation, so it stays on `http.client`: importing aiohttp
alone costs more than a whole `nsnet network ls`.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

from nsnet.client.errors import APIError, ClientError, DaemonUnreachable, ProtocolError

DEFAULT_SOCKET = "/run/nsnet/nsnet.sock"
DEFAULT_HOST = f"unix://{DEFAULT_SOCKET}"
API_VERSION = "1.45"
HOST_ENV = "NSNET_HOST"

STDIN = 0
STDOUT = 1
STDERR = 2

Frame = tuple[int, bytes]
Params = Mapping[str, str | int | bool | None]
FilterValue = str | Iterable[str] | Mapping[str, bool]
Filters = Mapping[str, FilterValue]


def socket_path_of(host: str | None) -> str:
    """Accept what docker accepts for a unix DOCKER_HOST, plus a bare path for convenience."""
    if host is None or host == "":
        host = os.environ.get(HOST_ENV) or DEFAULT_HOST
    if host.startswith("unix://"):
        path = host[len("unix://") :]
    elif "://" in host:
        scheme = host.split("://", 1)[0]
        raise ClientError(f"unsupported host {host!r}: only unix:// sockets are served ({scheme})")
    else:
        path = host
    if not path:
        raise ClientError(f"invalid host {host!r}: no socket path")
    return path


def host_url(path: str) -> str:
    return f"unix://{path}"


def encode_bool(value: bool) -> str:
    """The docker CLI spells booleans 1/0; the daemon accepts those and the Python spellings."""
    return "1" if value else "0"


def encode_filters(filters: Filters | None) -> str | None:
    """Encode like the docker CLI (`{"key": {"value": true}}`), or None when there is nothing.

    A value may be one string, several, or an already-built `{value: true}` map.
    """
    if not filters:
        return None
    out: dict[str, dict[str, bool]] = {}
    for key, value in filters.items():
        if isinstance(value, str):
            values: dict[str, bool] = {value: True}
        elif isinstance(value, Mapping):
            values = {str(k): bool(v) for k, v in value.items()}
        else:
            values = {str(v): True for v in value}
        if values:
            out.setdefault(key, {}).update(values)
    if not out:
        return None
    return json.dumps(out, separators=(",", ":"))


def encode_query(params: Params | None) -> str:
    if not params:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, encode_bool(value)))
        else:
            pairs.append((key, str(value)))
    if not pairs:
        return ""
    return "?" + urlencode(pairs)


def segment(value: str) -> str:
    """One path segment: names such as `test 01` or `kiwl$%^` must survive the trip."""
    return quote(value, safe="")


def image_segment(value: str) -> str:
    """Image references keep `:`, `/` and `@`, like the docker client sends them."""
    return quote(value, safe=":/@")


class UnixHTTPConnection(http.client.HTTPConnection):
    """`http.client` connection whose transport is an AF_UNIX stream socket."""

    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout, blocksize=65536)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            sock.close()
            raise DaemonUnreachable(
                f"cannot connect to the nsnet daemon at {host_url(self.socket_path)}: "
                "is nsnetd running?"
            ) from exc
        except PermissionError as exc:
            sock.close()
            raise DaemonUnreachable(
                "permission denied while trying to connect to the nsnet daemon socket at "
                f"{host_url(self.socket_path)}"
            ) from exc
        except OSError as exc:
            sock.close()
            raise DaemonUnreachable(
                f"cannot connect to the nsnet daemon at {host_url(self.socket_path)}: "
                f"{exc.strerror or exc}"
            ) from exc
        self.sock = sock


def error_message(status: int, reason: str, content_type: str, body: bytes) -> str:
    """The daemon's `message`, else whatever text it sent, else the status line."""
    text = body.decode("utf-8", "replace").strip()
    if text and ("json" in content_type or text[:1] in "{["):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
    if text:
        return text
    return f"{status} {reason}".strip()


def decode_body(content_type: str, body: bytes) -> Any:
    """JSON when it looks like JSON, text otherwise, None when empty."""
    if not body:
        return None
    if "json" in content_type or body[:1] in (b"{", b"["):
        try:
            return json.loads(body)
        except ValueError as exc:
            if "json" in content_type:
                raise ProtocolError(f"daemon sent invalid JSON: {exc}") from exc
    return body.decode("utf-8", "replace")


def read_exact(read: Callable[[int], bytes], size: int) -> bytes:
    """Read `size` bytes unless the stream ends first: readers may return short counts."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def iter_frames(read: Callable[[int], bytes]) -> Iterator[Frame]:
    """Split docker's multiplexed stream: `[stream, 0, 0, 0, len(u32 BE)]` then the payload."""
    while True:
        header = read_exact(read, 8)
        if not header:
            return
        if len(header) < 8:
            raise ProtocolError("stream ended inside a frame header")
        stream = header[0]
        size = int.from_bytes(header[4:8], "big")
        payload = read_exact(read, size) if size else b""
        if len(payload) < size:
            # The peer went away mid-frame: what arrived is still the program's output.
            if payload:
                yield stream, payload
            return
        yield stream, payload


class Response:
    """An open response whose body has not been read: the caller decides when and how."""

    def __init__(self, conn: UnixHTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.conn = conn
        self.raw = resp

    @property
    def status(self) -> int:
        return self.raw.status

    @property
    def content_type(self) -> str:
        return self.raw.getheader("Content-Type", "") or ""

    def read(self) -> bytes:
        try:
            return self.raw.read()
        except TimeoutError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"lost the connection to the daemon: {exc}") from exc
        finally:
            self.close()

    def json(self) -> Any:
        return decode_body(self.content_type, self.read())

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            self.conn.close()


class FrameStream:
    """Frames of a logs, attach or exec stream, upgraded (101) or plain (200).

    After a 101 the body is no longer HTTP: it is read from the connection's buffered reader,
    which already holds whatever arrived together with the header block.
    """

    def __init__(self, response: Response) -> None:
        self.response = response
        self.upgraded = response.status == 101
        raw = response.raw
        self._read: Callable[[int], bytes] = raw.fp.read if self.upgraded else raw.read

    def __iter__(self) -> Iterator[Frame]:
        try:
            yield from iter_frames(self._read)
        except (ConnectionResetError, BrokenPipeError):
            return
        except (OSError, http.client.HTTPException) as exc:
            if self.response.raw.closed:
                return
            raise ClientError(f"lost the connection to the daemon: {exc}") from exc
        finally:
            self.close()

    def close(self) -> None:
        # After a 101 http.client believes the body is empty; close the socket reader too.
        fp = self.response.raw.fp
        try:
            self.response.close()
        finally:
            if fp is not None:
                try:
                    fp.close()
                except OSError:
                    pass

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Transport:
    """Sends one request per connection: the CLI makes few, and a dead keep-alive is a trap."""

    def __init__(
        self,
        host: str | None = None,
        *,
        api_version: str = API_VERSION,
        timeout: float | None = None,
    ) -> None:
        self.socket_path = socket_path_of(host)
        self.host = host_url(self.socket_path)
        self.api_version = api_version
        self.timeout = timeout

    def url(self, path: str, params: Params | None = None) -> str:
        prefix = f"/v{self.api_version}" if self.api_version else ""
        return f"{prefix}{path}{encode_query(params)}"

    def open(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        *,
        body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        chunked: bool = False,
    ) -> Response:
        """Send a request and return after the status line and headers.

        `body` is sent as JSON; `data` as-is (bytes or a readable file). A status >= 400 raises
        APIError with the daemon's message.
        """
        all_headers: dict[str, str] = {"User-Agent": "nsnet-client"}
        payload: Any = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            all_headers["Content-Type"] = "application/json"
        elif data is not None:
            payload = data
        if chunked:
            all_headers["Transfer-Encoding"] = "chunked"
        if headers:
            all_headers.update(headers)
        conn = UnixHTTPConnection(self.socket_path, timeout=self.timeout)
        try:
            conn.request(
                method,
                self.url(path, params),
                body=payload,
                headers=all_headers,
                encode_chunked=chunked,
            )
            raw = conn.getresponse()
        except ClientError:
            conn.close()
            raise
        except http.client.RemoteDisconnected as exc:
            conn.close()
            raise ClientError(
                f"the nsnet daemon at {self.host} closed the connection without answering"
            ) from exc
        except http.client.HTTPException as exc:
            conn.close()
            raise ProtocolError(f"bad answer from the nsnet daemon at {self.host}: {exc}") from exc
        except OSError as exc:
            conn.close()
            raise ClientError(f"error talking to the nsnet daemon at {self.host}: {exc}") from exc
        response = Response(conn, raw)
        if raw.status >= 400:
            content = response.read()
            raise APIError(
                raw.status, error_message(raw.status, raw.reason, response.content_type, content)
            )
        return response

    def call(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        *,
        body: Any = None,
    ) -> Any:
        """One plain request: the decoded body (JSON, text or None)."""
        return self.open(method, path, params, body=body).json()

    def stream(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        *,
        body: Any = None,
        upgrade: bool = False,
    ) -> FrameStream:
        headers = {"Connection": "Upgrade", "Upgrade": "tcp"} if upgrade else None
        response = self.open(method, path, params, body=body, headers=headers)
        return FrameStream(response)
