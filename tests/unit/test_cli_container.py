"""Container commands against the fake daemon: create bodies, the run/exec stream dance,
exit codes and docker's output shapes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nsnet.testing.fake_daemon import (
    FakeDaemon,
    Handler,
    Recorded,
    Reply,
    nsnet,
    running_fake,
    send_empty,
    send_error,
    send_json,
    send_stream,
    send_wait,
)

CID = "c0ffee" + "0" * 58


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    with running_fake() as daemon:
        yield daemon


def empty_endpoint(**overrides: Any) -> dict[str, Any]:
    ep = {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": None,
        "MacAddress": "",
        "DriverOpts": None,
        "GwPriority": 0,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }
    ep.update(overrides)
    return ep


def start_sets(event: threading.Event, reply: Reply | None = None) -> Reply:
    def handle(h: Handler, req: Recorded) -> None:
        (reply or send_empty(204))(h, req)
        event.set()

    return handle


def container_flow(
    fake: FakeDaemon, frames: list[tuple[int, bytes]], status: int = 0, upgrade: bool = True
) -> None:
    started = threading.Event()
    fake.on("POST", "/containers/create", send_json(201, {"Id": CID, "Warnings": []}))
    fake.on(
        "POST", f"/containers/{CID}/attach", send_stream(frames, after=started, upgrade=upgrade)
    )
    fake.on("POST", f"/containers/{CID}/wait", send_wait(status, started))
    fake.on("POST", f"/containers/{CID}/start", start_sets(started))


def test_run_detached_body_with_network(fake: FakeDaemon) -> None:
    container_flow(fake, [])
    result = nsnet(
        fake, "run", "-d", "--name", "web", "--network", "mynet", "--network-alias", "A",
        "-p", "8080:80", "--ip", "172.18.0.5", "busybox", "sleep", "300",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == CID + "\n"
    assert fake.summary() == [
        "POST /containers/create",
        f"POST /containers/{CID}/wait",
        f"POST /containers/{CID}/start",
    ]
    create = fake.requests[0]
    assert create.query == {"name": "web"}
    body = create.json
    assert body["Image"] == "busybox"
    assert body["Cmd"] == ["sleep", "300"]
    assert body["ExposedPorts"] == {"80/tcp": {}}
    assert (body["AttachStdout"], body["AttachStderr"], body["Tty"]) == (False, False, False)
    host = body["HostConfig"]
    assert host["NetworkMode"] == "mynet"
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert host["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert host["AutoRemove"] is False
    assert body["NetworkingConfig"] == {
        "EndpointsConfig": {
            "mynet": empty_endpoint(IPAMConfig={"IPv4Address": "172.18.0.5"}, Aliases=["A"])
        }
    }
    assert fake.requests[1].query == {"condition": "next-exit"}
    assert fake.requests[2].body == b""


def test_run_without_network_sends_default(fake: FakeDaemon) -> None:
    container_flow(fake, [])
    assert nsnet(fake, "run", "-d", "busybox").exit_code == 0
    body = fake.requests[0].json
    assert "name" not in fake.requests[0].query
    assert body["Cmd"] is None
    assert body["HostConfig"]["NetworkMode"] == "default"
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"default": empty_endpoint()}}


def test_run_lone_network_without_options_has_no_endpoint(fake: FakeDaemon) -> None:
    container_flow(fake, [])
    assert nsnet(fake, "run", "-d", "--network", "host", "busybox", "true").exit_code == 0
    body = fake.requests[0].json
    assert body["HostConfig"]["NetworkMode"] == "host"
    assert body["NetworkingConfig"] == {"EndpointsConfig": {}}


def test_run_advanced_network_syntax(fake: FakeDaemon) -> None:
    container_flow(fake, [])
    result = nsnet(
        fake, "run", "-d", "--network", "name=mynet,alias=x,ip=172.18.0.7", "--network",
        "plain", "busybox", "true",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = fake.requests[0].json
    assert body["HostConfig"]["NetworkMode"] == "mynet"
    assert body["NetworkingConfig"]["EndpointsConfig"] == {
        "mynet": empty_endpoint(IPAMConfig={"IPv4Address": "172.18.0.7"}, Aliases=["x"]),
        "plain": empty_endpoint(),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network-alias", "a"],
         "network-scoped aliases are only supported for user-defined networks"),
        (["--network", "n", "--network", "n"], 'network "n" is specified multiple times'),
        (["--network", "host", "--network", "n"],
         "conflicting options: cannot attach both user-defined and non-user-defined "
         "network-modes"),
        (["--network", "name=n,alias=x", "--network-alias", "y"],
         "conflicting options: cannot specify both --network-alias and per-network alias"),
        (["-p", "80/icmp"], "invalid proto: icmp"),
    ],
)  # fmt: skip
def test_run_client_side_errors_exit_125(fake: FakeDaemon, args: list[str], message: str) -> None:
    result = nsnet(fake, "run", "-d", *args, "busybox")
    assert result.exit_code == 125
    assert result.stderr == f"nsnet: {message}\n"
    assert fake.requests == []


def test_run_keeps_container_args_verbatim(fake: FakeDaemon) -> None:
    container_flow(fake, [])
    result = nsnet(fake, "run", "-d", "-e", "A=1", "bb", "sh", "-c", "ls -l", "--name", "x")
    assert result.exit_code == 0, result.output
    body = fake.requests[0].json
    assert body["Cmd"] == ["sh", "-c", "ls -l", "--name", "x"]
    assert body["Env"] == ["A=1"]
    assert "name" not in fake.requests[0].query


def test_run_foreground_streams_and_exits_with_status(fake: FakeDaemon) -> None:
    container_flow(fake, [(1, b"hi\n"), (2, b"warn\n"), (1, b"bye\n")], status=3)
    result = nsnet(fake, "run", "--rm", "busybox", "echo", "hi")
    assert result.exit_code == 3, result.output
    assert result.stdout == "hi\nbye\n"
    assert result.stderr == "warn\n"
    assert fake.summary() == [
        "POST /containers/create",
        f"POST /containers/{CID}/attach",
        f"POST /containers/{CID}/wait",
        f"POST /containers/{CID}/start",
    ]
    body = fake.requests[0].json
    assert (body["AttachStdout"], body["AttachStderr"]) == (True, True)
    assert body["HostConfig"]["AutoRemove"] is True
    attach = fake.requests[1]
    assert attach.query == {"stream": "1", "stdout": "1", "stderr": "1"}
    assert (attach.headers["connection"], attach.headers["upgrade"]) == ("Upgrade", "tcp")
    assert fake.requests[2].query == {"condition": "removed"}


def test_run_foreground_plain_200_stream(fake: FakeDaemon) -> None:
    container_flow(fake, [(1, b"plain\n")], status=0, upgrade=False)
    result = nsnet(fake, "run", "busybox")
    assert (result.exit_code, result.stdout) == (0, "plain\n")
    assert fake.requests[2].query == {"condition": "next-exit"}


def test_run_create_error_exit_125(fake: FakeDaemon) -> None:
    fake.on("POST", "/containers/create", send_error(404, "No such image: busybox:latest"))
    result = nsnet(fake, "run", "busybox")
    assert result.exit_code == 125
    assert result.stderr == "nsnet: Error response from daemon: No such image: busybox:latest\n"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('exec: "nope": executable file not found in $PATH', 127),
        ("open /bin/x: permission denied", 126),
        ("failed to set up container networking: network x not found", 125),
        # runc and the daemon's wrapping do not agree on case; the daemon records 126/127 for
        # these (nsnet.exit_codes), so the CLI must exit with the same code.
        ("exec /bin/x: Permission denied", 126),
        ("starting container process caused: No such file or directory", 127),
    ],
)
def test_run_start_error_codes(fake: FakeDaemon, message: str, code: int) -> None:
    container_flow(fake, [])
    fake.on("POST", f"/containers/{CID}/start", send_error(400, message))
    for args in (["-d"], []):
        result = nsnet(fake, "run", *args, "busybox", "nope")
        assert result.exit_code == code
        assert result.stderr == f"nsnet: Error response from daemon: {message}\n"


def test_create_prints_id(fake: FakeDaemon) -> None:
    fake.on("POST", "/containers/create", send_json(201, {"Id": CID, "Warnings": ["careful"]}))
    result = nsnet(fake, "create", "--name", "c1", "--hostname", "h", "-l", "a=b", "bb")
    assert result.exit_code == 0
    assert result.stdout == CID + "\n"
    assert result.stderr == "WARNING: careful\n"
    body = fake.requests[0].json
    assert (body["Hostname"], body["Labels"], body["AttachStdout"]) == ("h", {"a": "b"}, False)
    assert fake.summary() == ["POST /containers/create"]


def test_ps_empty_header_matches_docker(fake: FakeDaemon) -> None:
    fake.on("GET", "/containers/json", send_json(200, []))
    result = nsnet(fake, "ps")
    assert result.stdout == (
        "CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    PORTS     NAMES\n"
    )
    assert fake.requests[0].query == {}


def test_ps_table_and_filters(fake: FakeDaemon) -> None:
    now = int(time.time())
    fake.on(
        "GET",
        "/containers/json",
        send_json(
            200,
            [
                {
                    "Id": "a1" * 32,
                    "Names": ["/web"],
                    "Image": "busybox",
                    "Command": "sleep 300",
                    "Created": now - 7200,
                    "Ports": [
                        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}
                    ],
                    "State": "running",
                    "Status": "Up 2 hours",
                    "NetworkSettings": {"Networks": {"mynet": {}, "bridge": {}}},
                },
                {
                    "Id": "b2" * 32,
                    "Names": ["/db"],
                    "Image": "alpine:3.10",
                    "Command": "sh -c 'while true; do sleep 1; done'",
                    "Created": now - 30,
                    "Ports": [],
                    "State": "exited",
                    "Status": "Exited (0) 5 seconds ago",
                },
            ],
        ),
    )
    result = nsnet(fake, "ps", "-a", "-f", "network=mynet", "-f", "name=web")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines == [
        "CONTAINER ID   IMAGE         COMMAND                  CREATED          "
        "STATUS                     PORTS                  NAMES",
        'a1a1a1a1a1a1   busybox       "sleep 300"              2 hours ago      '
        "Up 2 hours                 0.0.0.0:8080->80/tcp   web",
        'b2b2b2b2b2b2   alpine:3.10   "sh -c \'while true; …"   30 seconds ago   '
        "Exited (0) 5 seconds ago                          db",
    ]
    assert fake.requests[0].query["all"] == "1"
    assert json.loads(fake.requests[0].query["filters"]) == {
        "network": {"mynet": True},
        "name": {"web": True},
    }
    quiet = nsnet(fake, "ps", "-q")
    assert quiet.stdout == "a1a1a1a1a1a1\nb2b2b2b2b2b2\n"
    listed = nsnet(fake, "ps", "--format", "json").stdout.splitlines()
    as_json = [json.loads(line) for line in listed]
    assert as_json[0]["Networks"] == "bridge,mynet"
    assert as_json[0]["Names"] == "web"
    assert as_json[0]["RunningFor"] == "2 hours ago"
    assert as_json[1]["Command"] == '"sh -c \'while true; …"'


def test_exec_streams_and_propagates_exit_code(fake: FakeDaemon) -> None:
    fake.on("GET", "/containers/web/json", send_json(200, {"Id": CID, "Config": {"Tty": False}}))
    fake.on("POST", "/containers/web/exec", send_json(201, {"Id": "e1"}))
    fake.on("POST", "/exec/e1/start", send_stream([(1, b"Name: A\n"), (2, b"oops\n")]))
    fake.on("GET", "/exec/e1/json", send_json(200, {"ExitCode": 3, "Running": False}))
    result = nsnet(fake, "exec", "-e", "X=1", "-w", "/tmp", "-u", "1000", "web", "nslookup",
                   "-type=a", "A")  # fmt: skip
    assert result.exit_code == 3
    assert result.stdout == "Name: A\n"
    assert result.stderr == "oops\n"
    assert fake.summary() == [
        "GET /containers/web/json",
        "POST /containers/web/exec",
        "POST /exec/e1/start",
        "GET /exec/e1/json",
    ]
    assert fake.requests[1].json == {
        "User": "1000",
        "Privileged": False,
        "Tty": False,
        "AttachStdin": False,
        "AttachStderr": True,
        "AttachStdout": True,
        "Detach": False,
        "DetachKeys": "",
        "Env": ["X=1"],
        "WorkingDir": "/tmp",
        "Cmd": ["nslookup", "-type=a", "A"],
    }
    assert fake.requests[2].headers["upgrade"] == "tcp"


def test_exec_detached_is_a_plain_request(fake: FakeDaemon) -> None:
    fake.on("GET", "/containers/web/json", send_json(200, {"Id": CID}))
    fake.on("POST", "/containers/web/exec", send_json(201, {"Id": "e2"}))
    fake.on("POST", "/exec/e2/start", send_empty(200))
    result = nsnet(fake, "exec", "-d", "web", "sleep", "1")
    assert (result.exit_code, result.stdout) == (0, "")
    create, start = fake.requests[1], fake.requests[2]
    assert (create.json["Detach"], create.json["AttachStdout"]) == (True, False)
    assert start.json == {"Detach": True, "Tty": False}
    assert "upgrade" not in start.headers


def test_exec_missing_container(fake: FakeDaemon) -> None:
    fake.on("GET", "/containers/nope/json", send_error(404, "No such container: nope"))
    result = nsnet(fake, "exec", "nope", "true")
    assert result.exit_code == 1
    assert result.stderr == "Error response from daemon: No such container: nope\n"


def test_logs(fake: FakeDaemon) -> None:
    fake.on("GET", "/containers/c/logs", send_stream([(1, b"a\n"), (2, b"b\n")], upgrade=False))
    result = nsnet(fake, "logs", "-f", "--tail", "10", "c")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "a\n", "b\n")
    assert fake.requests[0].query == {"stdout": "1", "stderr": "1", "follow": "1", "tail": "10"}


def test_stop_kill_continue_after_errors(fake: FakeDaemon) -> None:
    fake.on("POST", "/containers/a/stop", send_empty(204))
    fake.on("POST", "/containers/b/stop", send_error(404, "No such container: b"))
    result = nsnet(fake, "stop", "-t", "1", "a", "b")
    assert result.exit_code == 1
    assert result.stdout == "a\n"
    assert result.stderr == "Error response from daemon: No such container: b\n"
    assert fake.requests[0].query == {"t": "1"}
    fake.on("POST", "/containers/a/kill", send_empty(204))
    result = nsnet(fake, "kill", "-s", "HUP", "a")
    assert (result.exit_code, result.stdout) == (0, "a\n")
    assert fake.requests[-1].query == {"signal": "HUP"}


def test_rm_conflict_and_force_missing(fake: FakeDaemon) -> None:
    message = "container is running: stop the container before removing or force remove"
    fake.on("DELETE", "/containers/run1", send_error(409, message))
    fake.on("DELETE", "/containers/gone", send_error(404, "No such container: gone"))
    fake.on("DELETE", "/containers/ok", send_empty(204))
    result = nsnet(fake, "rm", "run1", "ok")
    assert result.exit_code == 1
    assert result.stdout == "ok\n"
    assert result.stderr == f"Error response from daemon: {message}\n"
    result = nsnet(fake, "rm", "-f", "gone")
    assert result.exit_code == 0
    assert result.stderr == "Error response from daemon: No such container: gone\n"
    assert fake.requests[-1].query == {"force": "1"}


def test_wait_prints_codes(fake: FakeDaemon) -> None:
    fake.on("POST", "/containers/a/wait", send_wait(0))
    fake.on("POST", "/containers/b/wait", send_wait(137))
    result = nsnet(fake, "wait", "a", "b")
    assert (result.exit_code, result.stdout) == (0, "0\n137\n")
    assert fake.requests[0].query == {}


def test_start_attach(fake: FakeDaemon) -> None:
    container_flow(fake, [(1, b"x\n")], status=5)
    fake.on("GET", "/containers/c1/json", send_json(200, {"Id": CID, "HostConfig": {}}))
    result = nsnet(fake, "start", "-a", "c1")
    assert (result.exit_code, result.stdout) == (5, "x\n")
    fake.on("POST", "/containers/(a|b)/start", send_empty(204))
    result = nsnet(fake, "start", "a", "b")
    assert (result.exit_code, result.stdout) == (0, "a\nb\n")


def test_inspect_falls_through_object_kinds(fake: FakeDaemon) -> None:
    fake.on("GET", "/containers/n1/json", send_error(404, "No such container: n1"))
    fake.on("GET", "/images/n1/json", send_error(404, "No such image: n1:latest"))
    fake.on("GET", "/networks/n1", send_json(200, {"Name": "n1"}))
    fake.on("GET", "/containers/c1/json", send_json(200, {"Id": CID, "Name": "/c1"}))
    result = nsnet(fake, "inspect", "c1", "n1", "zz")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [{"Id": CID, "Name": "/c1"}, {"Name": "n1"}]
    assert result.stderr == "Error: No such object: zz\n"
    result = nsnet(fake, "inspect", "--format", "json", "c1")
    assert result.stdout == json.dumps({"Id": CID, "Name": "/c1"}, separators=(",", ":")) + "\n"


def test_inspect_template_paths(fake: FakeDaemon) -> None:
    info = {
        "Id": CID,
        "State": {"Running": True, "Pid": 42},
        "NetworkSettings": {"Networks": {"lab": {"IPAddress": "10.0.0.2", "Aliases": ["a"]}}},
    }
    fake.on("GET", "/containers/web/json", send_json(200, info))
    result = nsnet(
        fake, "inspect", "-f",
        "{{.NetworkSettings.Networks.lab.IPAddress}} {{.State.Running}} {{.State.Pid}} "
        "{{.NetworkSettings.Networks.lab.Aliases}} {{.Nope}} {{json .State}}", "web",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == '10.0.0.2 true 42 [a] <no value> {"Running":true,"Pid":42}\n'


def test_ps_unknown_template_field(fake: FakeDaemon) -> None:
    fake.on("GET", "/containers/json", send_json(200, []))
    fake.on("GET", "/containers/json", send_json(200, [{"Id": CID, "Names": ["/x"]}]))
    result = nsnet(fake, "ps", "--format", "{{.Bogus}}")
    assert result.exit_code == 1
    assert result.stderr == (
        'Error: template: :1: executing "" at <.Bogus>: can\'t evaluate field Bogus\n'
    )
