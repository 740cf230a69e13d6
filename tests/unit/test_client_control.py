"""Issue 11's client calls (rename, pause, unpause, top, resize, events) on the wire, and the
``nsnet`` commands that now go through them, against the fake daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from nsnet.client import APIError, Client, ClientError
from nsnet.testing.fake_daemon import (
    FakeDaemon,
    nsnet,
    running_fake,
    send_empty,
    send_error,
    send_json,
    send_text,
)


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    with running_fake() as daemon:
        yield daemon


def test_control_calls_send_docker_requests(fake: FakeDaemon) -> None:
    for action in ("rename", "pause", "unpause"):
        fake.on("POST", f"/containers/my web/{action}", send_empty(204))
    fake.on("POST", "/containers/w/resize", send_empty(200))
    fake.on("GET", "/containers/w/top",
            send_json(200, {"Titles": ["PID", "CMD"], "Processes": [["7", "sleep 9"]]}))
    c = Client(fake.host).containers
    c.rename("my web", "web2")
    c.pause("my web")
    c.unpause("my web")
    c.resize("w", height=24, width=80)
    assert c.top("w", "aux") == {"Titles": ["PID", "CMD"], "Processes": [["7", "sleep 9"]]}
    c.top("w")
    assert fake.one("POST", "/containers/my web/rename").query == {"name": "web2"}
    assert fake.one("POST", "/containers/my web/pause").query == {}
    assert fake.one("POST", "/containers/w/resize").query == {"h": "24", "w": "80"}
    tops = fake.calls("GET", "/containers/w/top")
    assert [t.query for t in tops] == [{"ps_args": "aux"}, {}]
    assert "%20" in fake.one("POST", "/containers/my web/unpause").raw_path  # path-escaped


def test_a_refused_pause_is_an_api_error(fake: FakeDaemon) -> None:
    fake.on("POST", "/containers/p/pause", send_error(409, "Container x is already paused"))
    with pytest.raises(APIError) as err:
        Client(fake.host).containers.pause("p")
    assert err.value.status == 409 and "already paused" in str(err.value)


def test_events_stream_messages_with_since_until_and_filters(fake: FakeDaemon) -> None:
    lines = [{"Type": "container", "Action": "pause", "Actor": {"ID": "c1"}, "time": 1},
             {"Type": "network", "Action": "create", "Actor": {"ID": "n1"}, "time": 2}]
    body = "".join(json.dumps(m) + "\n" for m in lines) + "\n"
    fake.on("GET", "/events", send_text(200, body, "application/json"))
    with Client(fake.host).events(since=10, until="2026-01-01T00:00:00Z",
                                  filters={"type": ["container", "network"]}) as stream:
        got = list(stream)
    assert got == lines
    q = fake.one("GET", "/events").query
    assert q["since"] == "10" and q["until"] == "2026-01-01T00:00:00Z"
    assert json.loads(q["filters"]) == {"type": {"container": True, "network": True}}
    Client(fake.host).events().close()
    assert "since" not in fake.calls("GET", "/events")[-1].query


def test_an_event_that_is_not_json_is_a_client_error(fake: FakeDaemon) -> None:
    fake.on("GET", "/events", send_text(200, "not json\n", "application/json"))
    with pytest.raises(ClientError, match="daemon sent an invalid event"):
        list(Client(fake.host).events())


def test_cli_commands_go_through_the_client(fake: FakeDaemon) -> None:
    for action in ("rename", "pause", "unpause"):
        fake.on("POST", f"/containers/a/{action}", send_empty(204))
    fake.on("POST", "/containers/b/pause", send_error(404, "No such container: b"))
    fake.on("GET", "/containers/a/top",
            send_json(200, {"Titles": ["PID", "CMD"], "Processes": [["7", "sleep 9"]]}))
    assert nsnet(fake, "rename", "a", "z").exit_code == 0
    paused = nsnet(fake, "pause", "a", "b")
    assert paused.exit_code == 1 and paused.stdout == "a\n"
    assert "No such container: b" in paused.stderr
    assert nsnet(fake, "unpause", "a").stdout == "a\n"
    top = nsnet(fake, "top", "a", "-o", "pid,comm")
    assert top.exit_code == 0 and top.stdout.splitlines()[1].split() == ["7", "sleep", "9"]
    assert fake.one("POST", "/containers/a/rename").query == {"name": "z"}
    assert fake.one("GET", "/containers/a/top").query == {"ps_args": "-o pid,comm"}


def test_cli_events_prints_docker_lines(fake: FakeDaemon) -> None:
    msg = {"Type": "container", "Action": "unpause", "time": 0, "timeNano": 5,
           "Actor": {"ID": "c1", "Attributes": {"name": "web", "image": "busybox"}}}
    fake.on("GET", "/events", send_text(200, json.dumps(msg) + "\n", "application/json"))
    out = nsnet(fake, "events", "--since", "1m", "-f", "type=container")
    assert out.exit_code == 0
    assert out.stdout.rstrip().endswith(" container unpause c1 (image=busybox, name=web)")
    q = fake.one("GET", "/events").query
    assert q["since"] == "1m" and json.loads(q["filters"]) == {"type": {"container": True}}
    fmt = nsnet(fake, "events", "--format", "{{.Action}}")
    assert fmt.stdout == "unpause\n"
