"""docs/openapi.yaml against the daemon: every served route documented, real answers valid.

Requests go over the unix socket with http.client, so the bytes on the wire are ours: both
filter encodings, the boolean spellings of the CLI and of docker-py, chunked uploads, unknown
body keys, versioned and unversioned paths. Every answer must have a documented status and,
when JSON, the exact ``Content-Type: application/json`` and a body matching the schema.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlencode

import pytest
from helpers import wait_for
from openapi_check import OpenAPI

from nsnet.api.backend import Backend
from nsnet.api.routes import build
from nsnet.testing.hosts import Daemon


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    return OpenAPI()


# -- the document ---------------------------------------------------------------------------


def test_every_served_route_is_documented_and_nothing_else(spec: OpenAPI) -> None:
    # The routes as the router holds them: registering needs no engine, only a backend to
    # close over, which no handler is called on here.
    api = build(cast(Backend, object()))
    served = {(method, re.sub(r"\{(\w+):[^}]+\}", r"{\1}", pattern))
              for method, pattern in api.router.routes()}
    assert served, "the router holds no routes"
    assert served == spec.operations()


def test_request_schemas_accept_what_real_clients_send(spec: OpenAPI) -> None:
    # The docker CLI's network create with every flag (docker-api.md §3.2).
    spec.validate({
        "Driver": "bridge", "Scope": "", "EnableIPv6": True,
        "IPAM": {"Driver": "default", "Options": {"foo": "bar"}, "Config": [
            {"Subnet": "10.10.0.0/16", "IPRange": "10.10.5.0/24", "Gateway": "10.10.5.254",
             "AuxiliaryAddresses": {"a": "10.10.1.5"}},
            {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1"}]},
        "Internal": True, "Attachable": True, "Ingress": False, "ConfigOnly": False,
        "ConfigFrom": None, "Options": {"com.docker.network.bridge.name": "br-test"},
        "Labels": {"env": "test", "flag": ""}, "Name": "mynet"},
        spec.request_schema("POST", "/networks/create"))
    # docker-py's IPAMPool(subnet=X): nested nulls.
    spec.validate({"Name": "n", "IPAM": {"Driver": "default", "Config": [
        {"Subnet": "10.1.0.0/24", "IPRange": None, "Gateway": None,
         "AuxiliaryAddresses": None}]}}, spec.request_schema("POST", "/networks/create"))
    # The CLI's connect body with no flags, and docker-py's.
    connect = spec.request_schema("POST", "/networks/n/connect")
    spec.validate({"Container": "c", "EndpointConfig": {
        "IPAMConfig": {}, "Links": None, "Aliases": [], "MacAddress": "", "DriverOpts": {},
        "GwPriority": 0, "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
        "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "DNSNames": None}}, connect)
    spec.validate({"Container": "c", "EndpointConfig": {}}, connect)
    # A CLI create body (trimmed; unknown keys are allowed) and docker-py's bare one.
    create = spec.request_schema("POST", "/containers/create")
    spec.validate({
        "Hostname": "", "Image": "busybox", "Cmd": ["sleep", "300"], "Env": None,
        "Entrypoint": None, "Labels": {}, "Tty": False, "OnBuild": None, "Volumes": {},
        "HostConfig": {"NetworkMode": "default", "PortBindings": {}, "Dns": [], "Links": None,
                       "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                       "ConsoleSize": [0, 0]},
        "NetworkingConfig": {"EndpointsConfig": {"default": {
            "IPAMConfig": None, "Links": None, "Aliases": None, "DriverOpts": None,
            "MacAddress": "", "GwPriority": 0}}}}, create)
    spec.validate({"Image": "alpine:3.10", "Cmd": ["top"], "AttachStdout": True,
                   "AttachStderr": True, "Tty": False, "OpenStdin": False, "StdinOnce": False,
                   "AttachStdin": False, "NetworkDisabled": False}, create)
    # The checker itself refuses what the schemas exclude.
    net = spec.schema("Network")
    with pytest.raises(AssertionError, match="missing required 'Id'"):
        spec.validate({"Name": "x"}, net)
    with pytest.raises(AssertionError, match="unexpected key 'Bogus'"):
        spec.validate({"Subnet": "10.0.0.0/8", "Bogus": 1}, spec.schema("IPAMConfig"))
    with pytest.raises(AssertionError, match="null is not allowed"):
        spec.validate({"message": None}, spec.schema("ErrorResponse"))
    with pytest.raises(AssertionError, match="expected integer"):
        spec.validate({"StatusCode": True, "Error": None}, spec.schema("ContainerWaitResponse"))


# -- the daemon -----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(60)
        s.connect(self.unix_path)
        self.sock = s


class Api:
    """Raw requests, each answer checked against the document."""

    def __init__(self, daemon: Daemon, spec: OpenAPI) -> None:
        self.socket = str(daemon.socket)
        self.spec = spec
        self.checked = 0

    def raw(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, chunks: list[bytes] | None = None) -> Reply:
        url = path + ("?" + urlencode(query) if query else "")
        hdrs = dict(headers or {})
        conn = UnixHTTP(self.socket)
        try:
            if chunks is not None:
                conn.request(method, url, body=iter(chunks), headers=hdrs, encode_chunked=True)
            elif body is None:
                conn.request(method, url, headers=hdrs)
            else:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
                conn.request(method, url, body=data, headers=hdrs)
            r = conn.getresponse()
            return Reply(r.status, r.headers, r.read())
        finally:
            conn.close()

    def __call__(self, method: str, path: str, body: Any = None, status: int = 200,
                 **kw: Any) -> Reply:
        r = self.raw(method, path, body, **kw)
        assert r.status == status, f"{method} {path}: {r.status} {r.body[:300]!r}"
        self.check(method, path, r)
        return r

    def check(self, method: str, path: str, r: Reply) -> None:
        bare = re.sub(r"^/v\d+\.\d+", "", path)
        doc = self.spec.response(method, bare, r.status)
        assert r.headers["Api-Version"] == "1.45" and r.headers["Ostype"] == "linux"
        assert r.headers["Docker-Experimental"] == "false"
        content = doc.get("content")
        ctype = r.headers.get("Content-Type", "")
        if not content:
            assert r.body == b"", f"{method} {path}: {r.status} has no documented body"
            self.checked += 1
            return
        if "application/json" in content:
            assert ctype == "application/json", f"{method} {path}: Content-Type {ctype!r}"
            schema = content["application/json"]["schema"]
            if method == "HEAD":
                assert r.body == b""
            elif bare == "/images/create" and r.status == 200:
                for line in r.body.decode().splitlines():
                    self.spec.validate(json.loads(line), schema)
            else:
                self.spec.validate(json.loads(r.body), schema)
        elif r.body or ctype:  # a detached exec start is an empty 200
            assert any(ctype.startswith(c) for c in content), \
                f"{method} {path}: Content-Type {ctype!r} not in {list(content)}"
        self.checked += 1

    def error(self, method: str, path: str, body: Any = None, status: int = 400,
              text: str = "", **kw: Any) -> str:
        r = self(method, path, body, status=status, **kw)
        msg = str(r.json()["message"])
        assert text in msg, f"{method} {path}: {msg!r} lacks {text!r}"
        return msg


@pytest.fixture
def api(daemon: Daemon, spec: OpenAPI) -> Iterator[Api]:
    a = Api(daemon, spec)
    yield a
    text = (daemon.root / "nsnetd.log").read_text(errors="replace")
    assert "Traceback" not in text, daemon.log_tail(60)


def filt(d: dict[str, list[str]], cli: bool) -> dict[str, str]:
    """Filters as the CLI (map of sets) or docker-py (map of lists) encodes them."""
    if cli:
        return {"filters": json.dumps({k: {v: True for v in vs} for k, vs in d.items()})}
    return {"filters": json.dumps(d)}


@pytest.mark.root
def test_system_and_network_responses_match_the_document(api: Api) -> None:
    # Ping: HEAD and GET, unversioned and versioned, with the negotiation headers.
    for method, path in (("HEAD", "/_ping"), ("GET", "/_ping"), ("GET", "/v1.41/_ping"),
                         ("HEAD", "/v1.45/_ping")):
        r = api(method, path)
        assert r.headers["Swarm"] == "inactive"
        assert r.body == (b"" if method == "HEAD" else b"OK")
    v = api("GET", "/version").json()
    assert (v["ApiVersion"], v["MinAPIVersion"]) == ("1.45", "1.24")
    api("GET", "/v1.24/version")
    info = api("GET", "/v1.45/info").json()
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    api.error("GET", "/v1.46/version", text="client version 1.46 is too new. Maximum "
              "supported API version is 1.45")
    api.error("GET", "/v1.23/version", text="client version 1.23 is too old. Minimum "
              "supported API version is 1.24")
    # Unknown routes and the objects nsnet does not have.
    r = api.raw("GET", "/v1.45/nosuch")
    assert (r.status, r.headers["Content-Type"], r.json()) == \
        (404, "application/json", {"message": "page not found"})
    for action in ("init", "leave", "join"):
        api.error("POST", f"/v1.45/swarm/{action}", {}, status=503,
                  text="This node is not part of a swarm", query={"force": "True"})
    api.error("GET", "/swarm", status=503)
    api.error("GET", "/volumes/x", status=404)
    api.error("GET", "/plugins/x/json", status=404)

    # Create with every field the CLI sends, plus keys nsnet does not know.
    full = api("POST", "/v1.45/networks/create", {
        "Name": "full", "Driver": "bridge", "Scope": "", "EnableIPv6": True,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [
            {"Subnet": "fd00:60::/64", "Gateway": "fd00:60::1"},
            {"Subnet": "10.60.0.0/16", "IPRange": "10.60.5.0/24", "Gateway": "10.60.5.254",
             "AuxiliaryAddresses": {"a": "10.60.1.5"}}]},
        "Internal": True, "Attachable": True, "Ingress": False, "ConfigOnly": False,
        "ConfigFrom": None, "CheckDuplicate": True,
        "Options": {"com.docker.network.bridge.enable_icc": "true"},
        "Labels": {"env": "test", "flag": ""}, "SomethingNew": {"x": 1}}, status=201).json()
    plain = api("POST", "/networks/create", {"Name": "plain-1", "IPAM": None, "Options": None,
                                             "Labels": None}, status=201).json()
    net = api("GET", f"/v1.45/networks/{full['Id']}").json()
    assert [c["Subnet"] for c in net["IPAM"]["Config"]] == ["10.60.0.0/16", "fd00:60::/64"]
    assert net["IPAM"]["Options"] is None
    # URL-encoded segments, trailing slash, ID prefix.
    assert api("GET", "/networks/" + quote("plain-1", safe="").replace("-", "%2D")).json()[
        "Id"] == plain["Id"]
    assert len(api("GET", "/v1.45/networks/").json()) == 5
    assert api("GET", f"/networks/{full['Id'][:8]}").json()["Name"] == "full"
    for verbose in ("true", "True", "1", "false"):
        api("GET", "/networks/full", query={"verbose": verbose, "scope": "local"})
    api.error("GET", "/networks/full", query={"verbose": "maybe"}, text="verbose")
    api.error("GET", "/networks/nosuch", status=404, text="network nosuch not found")
    # Filters, both encodings, same answers.
    for cli in (True, False):
        def names(f: dict[str, list[str]], cli: bool = cli) -> list[str]:
            return [n["Name"] for n in api("GET", "/networks", query=filt(f, cli)).json()]
        assert names({"name": ["full"]}) == ["full"]
        assert names({"type": ["custom"]}) == ["full", "plain-1"]
        assert names({"label": ["env=test"], "driver": ["bridge"]}) == ["full"]
        assert names({"id": [plain["Id"][:10]]}) == ["plain-1"]
        api.error("GET", "/networks", query=filt({"type": ["x"]}, cli), text="'type'='x'")
    # Refusals.
    api.error("POST", "/networks/create", {"Name": "full"}, status=409, text="already exists")
    for name in ("bridge", "host", "none", "default"):
        api.error("POST", "/networks/create", {"Name": name}, status=403,
                  text=f"operation is not permitted on predefined {name} network")
        if name != "default":
            api.error("DELETE", f"/networks/{name}", status=403, text="pre-defined network")
    api.error("POST", "/networks/create", {"Name": "x", "Driver": "nosuch"}, status=404)
    api.error("POST", "/networks/create", {"Name": "   "}, text="name is empty")
    api.error("POST", "/networks/create", b"{not json", text="invalid JSON")
    api.error("POST", "/networks/create", b'{"Name": "y"} trailing',
              text="unexpected content after JSON")
    api.error("POST", "/networks/create", b'{"Name": "y"}',
              headers={"Content-Type": "text/plain"}, text="unsupported Content-Type")
    api.error("POST", "/networks/create", b"", text="")

    # Connect and disconnect, prune, remove.
    cid = api("POST", "/containers/create", {
        "Image": "busybox", "Cmd": ["sleep", "300"], "HostConfig": {"NetworkMode": "plain-1"},
        "NetworkingConfig": {"EndpointsConfig": {"plain-1": {}}}}, status=201).json()["Id"]
    api("POST", f"/containers/{cid}/start", status=204)
    api("POST", "/networks/full/connect", {"Container": cid, "EndpointConfig": {
        "IPAMConfig": {"IPv4Address": "10.60.5.9"}, "Aliases": ["a1"], "Links": None,
        "DriverOpts": {"k": "v"}, "MacAddress": "", "GwPriority": 0, "Unknown": 1}})
    net = api("GET", "/networks/full").json()
    assert net["Containers"][cid]["IPv4Address"] == "10.60.5.9/16"
    ep = api("GET", f"/containers/{cid}/json").json()["NetworkSettings"]["Networks"]
    assert (ep["full"]["Aliases"], ep["full"]["DriverOpts"], ep["full"]["Links"]) == \
        (["a1"], {"k": "v"}, None)
    assert (ep["plain-1"]["Aliases"], ep["plain-1"]["DriverOpts"]) == (None, None)
    api.error("POST", "/networks/full/connect", {"Container": cid}, status=403,
              text="already exists")
    api.error("POST", "/networks/full/connect", {"Container": "nosuch"}, status=404,
              text="No such container: nosuch")
    api.error("POST", "/networks/full/connect", {}, text="Container")
    api.error("DELETE", "/networks/full", status=403, text="has active endpoints")
    api("POST", "/networks/full/disconnect", {"Container": cid, "Force": False})
    api.error("POST", "/networks/full/disconnect", {"Container": cid}, status=403,
              text="is not connected to network full")
    for cli in (True, False):
        api("POST", "/networks/create", {"Name": f"old{cli}", "Labels": {"gone": str(cli)}},
            status=201)
    for cli in (True, False):
        pruned = api("POST", "/networks/prune",
                     query=filt({"label": [f"gone={cli}"]}, cli)).json()
        assert pruned == {"NetworksDeleted": [f"old{cli}"]}
    api.error("POST", "/networks/prune", query=filt({"bogus": ["1"]}, True))
    api("DELETE", f"/containers/{cid}", query={"force": "1"}, status=204)
    assert api("POST", "/networks/prune").json() == {"NetworksDeleted": ["full", "plain-1"]}
    api.error("DELETE", "/networks/full", status=404)
    assert api.checked >= 50


def busybox_tar(text: str) -> bytes:
    buf = io.BytesIO()
    data = Path("/usr/bin/busybox").read_bytes()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, payload, mode in (("bin/busybox", data, 0o755),
                                    ("etc/greeting", text.encode(), 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(payload), mode
            tar.addfile(info, io.BytesIO(payload))
        info = tarfile.TarInfo("bin/sh")
        info.type, info.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(info)
    return buf.getvalue()


@pytest.mark.root
def test_container_exec_and_image_responses_match_the_document(api: Api) -> None:
    api("POST", "/networks/create", {"Name": "appnet"}, status=201)
    # The CLI's create: NetworkMode "default" and EndpointsConfig["default"], many nulls and
    # keys nsnet ignores.
    body = {
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
        "AttachStdout": True, "AttachStderr": True, "Tty": False, "OpenStdin": False,
        "StdinOnce": False, "Env": None, "Cmd": ["sh", "-c", "echo out; echo err >&2; "
                                                       "exec sleep 300"],
        "Image": "busybox", "Volumes": {}, "WorkingDir": "", "Entrypoint": None,
        "OnBuild": None, "Labels": {"k": "v"}, "MacAddress": "",
        "HostConfig": {"Binds": None, "NetworkMode": "default", "PortBindings": {},
                       "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                       "AutoRemove": False, "Dns": [], "DnsOptions": [], "DnsSearch": [],
                       "ExtraHosts": None, "Links": None, "LogConfig": {"Type": "",
                                                                        "Config": {}},
                       "ConsoleSize": [0, 0], "MemorySwappiness": -1, "Devices": [],
                       "Ulimits": [], "BlkioWeightDevice": []},
        "NetworkingConfig": {"EndpointsConfig": {"default": {
            "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "",
            "DriverOpts": None, "GwPriority": 0, "NetworkID": "", "EndpointID": "",
            "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "",
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": None}}},
    }
    web = api("POST", "/v1.45/containers/create", body, status=201,
              query={"name": "web"}).json()["Id"]
    info = api("GET", f"/containers/{web}/json").json()
    assert info["HostConfig"]["NetworkMode"] == "bridge"
    assert list(info["NetworkSettings"]["Networks"]) == ["bridge"]
    # NetworkMode "" and docker-py's malformed NetworkingConfig {"N": null}.
    empty = api("POST", "/containers/create", {"Image": "busybox", "HostConfig": {
        "NetworkMode": ""}}, status=201).json()["Id"]
    assert api("GET", f"/containers/{empty}/json").json()["HostConfig"]["NetworkMode"] == \
        "bridge"
    pyc = api("POST", "/containers/create", {"Image": "busybox", "Cmd": ["sleep", "300"],
                                             "HostConfig": {"NetworkMode": "appnet"},
                                             "NetworkingConfig": {"appnet": None}},
              status=201, query={"name": "pyc"}).json()["Id"]
    nets = api("GET", "/containers/pyc/json").json()["NetworkSettings"]["Networks"]
    assert list(nets) == ["appnet"] and nets["appnet"]["IPAddress"] == ""
    # Refusals at create.
    api.error("POST", "/containers/create", {"Image": "busybox", "NetworkingConfig": {
        "EndpointsConfig": {"appnet": None}}}, text="EndpointsConfig is nil")
    api.error("POST", "/containers/create", {"Image": "nosuch"}, status=404,
              text="No such image: nosuch:latest")
    api.error("POST", "/containers/create", {"Image": "busybox", "HostConfig": {
        "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "80800"}]}}},
        text="80800")
    api.error("POST", "/containers/create", body, status=409, query={"name": "web"},
              text='The container name "/web" is already in use')
    api.error("POST", "/containers/create", {"Cmd": ["true"]})

    # wait (headers first, body at exit), start, 304, logs.
    api("POST", f"/containers/{web}/start", status=204)
    api("POST", f"/containers/{web}/start", status=304)
    api("POST", "/containers/pyc/start", status=204)
    api.error("POST", "/containers/nosuch/start", status=404, text="No such container")
    for all_ in ("1", "True", "true"):
        assert len(api("GET", "/containers/json", query={"all": all_}).json()) == 3
    assert len(api("GET", "/containers/json").json()) == 2
    for cli in (True, False):
        got = api("GET", "/containers/json", query=filt({"name": ["pyc"]}, cli)).json()
        assert [c["Id"] for c in got] == [pyc]
        assert got[0]["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
    assert wait_for(lambda: api("GET", f"/containers/{web}/logs",
                                query={"stdout": "1", "stderr": "1"}).body.count(b"\n") == 2)
    logs = api("GET", f"/containers/{web}/logs", query={"stdout": "True", "stderr": "False",
                                                        "timestamps": "0", "follow": "0",
                                                        "tail": "all"}).body
    assert logs == b"\x01\x00\x00\x00\x00\x00\x00\x04out\n"
    api.error("GET", f"/containers/{web}/logs", text="you must choose at least one stream")

    # exec: create, start (no upgrade: 200 and a raw stream), inspect.
    eid = api("POST", f"/containers/{web}/exec", {
        "User": "", "Privileged": False, "Tty": False, "AttachStdin": False,
        "AttachStderr": True, "AttachStdout": True, "Detach": False, "DetachKeys": "",
        "Env": ["X=1"], "WorkingDir": "/tmp", "Cmd": ["sh", "-c", "echo $X $(pwd); exit 3"],
        "Container": web}, status=201).json()["Id"]
    assert api("GET", f"/exec/{eid}/json").json()["ExitCode"] is None
    r = api("POST", f"/exec/{eid}/start", {"Detach": False, "Tty": False})
    assert r.body == b"\x01\x00\x00\x00\x00\x00\x00\x07" + b"1 /tmp\n"
    done = api("GET", f"/exec/{eid}/json").json()
    assert (done["ExitCode"], done["Running"], done["ContainerID"]) == (3, False, web)
    api.error("POST", f"/exec/{eid}/start", {}, status=409, text="already been started")
    api.error("GET", "/exec/nosuch/json", status=404, text="No such exec instance")
    detached = api("POST", f"/containers/{web}/exec", {"Cmd": ["true"], "Detach": True},
                   status=201).json()["Id"]
    api("POST", f"/exec/{detached}/start", {"Detach": True})
    api.error("POST", f"/containers/{web}/exec", {"Cmd": []}, text="No exec command")

    # stop (304 when stopped), kill (409 when stopped), wait, remove with each boolean.
    api("POST", "/containers/pyc/kill", query={"signal": "KILL"}, status=204)
    assert api("POST", "/containers/pyc/wait").json()["StatusCode"] == 137
    api.error("POST", "/containers/pyc/kill", status=409, text="is not running")
    api("POST", "/containers/pyc/stop", status=304)
    api.error("POST", "/containers/pyc/wait", query={"condition": "bogus"})
    api("POST", f"/containers/{web}/stop", query={"t": "1"}, status=204)
    api.error("POST", f"/containers/{web}/exec", {"Cmd": ["true"]}, status=409,
              text="is not running")
    api("POST", f"/containers/{web}/restart", query={"t": "1"}, status=204)
    api.error("DELETE", f"/containers/{web}", status=409, text="container is running")
    api("DELETE", f"/containers/{web}", query={"force": "True", "v": "True",
                                                "link": "False"}, status=204)
    api("DELETE", "/containers/pyc", query={"force": "true"}, status=204)
    api("DELETE", f"/containers/{empty}", query={"force": "1"}, status=204)
    api.error("DELETE", "/containers/pyc", status=404)

    # Images: a chunked import (as docker import sends it), list, inspect, pull, delete.
    tar = busybox_tar("hi\n")
    r = api("POST", "/v1.45/images/create", query={"fromSrc": "-", "repo": "mini:1.0"},
            headers={"Content-Type": "text/plain"},
            chunks=[tar[i:i + 65536] for i in range(0, len(tar), 65536)])
    iid = json.loads(r.body.decode().splitlines()[-1])["status"]
    api("POST", "/images/create", query={"fromSrc": "-", "repo": "other", "tag": "2"},
        chunks=[busybox_tar("two\n")], headers={"Content-Type": "application/x-tar"})
    tags = sorted(t for i in api("GET", "/images/json").json() for t in i["RepoTags"])
    assert tags == ["busybox:latest", "mini:1.0", "other:2"]
    assert api("GET", "/images/mini:1.0/json").json()["Id"] == iid
    assert api("GET", f"/images/{iid}/json").json()["RepoTags"] == ["mini:1.0"]
    api("GET", "/images/docker.io/library/busybox:latest/json")
    api.error("GET", "/images/nosuch/json", status=404, text="No such image: nosuch:latest")
    msg = api.error("POST", "/images/create", query={"fromImage": "alpine", "tag": "latest"},
                    status=404, text="repository does not exist")
    assert "nsnet does not pull" in msg
    api.error("POST", "/images/create", query={"fromSrc": "http://example.invalid/x.tar"})
    assert api("DELETE", "/images/other:2").json()[0] == {"Untagged": "other:2"}
    api.error("DELETE", "/images/other:2", status=404)

    # nsnet's own routes.
    api("POST", "/nsnet/reconcile")
    assert b"nsnet_" in api("GET", "/metrics").body
    assert api.checked >= 50
