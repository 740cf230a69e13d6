"""version, info, images, system reconcile, the error contract and docker's text helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from nsnet.cli.base import rewrite_bool_flags
from nsnet.cli.format import ellipsis, human_duration, human_size, tabwrite
from nsnet.cli.main import cli
from nsnet.testing.fake_daemon import (
    FakeDaemon,
    nsnet,
    running_fake,
    send_error,
    send_json,
    send_text,
)


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    with running_fake() as daemon:
        yield daemon


VERSION = {
    "Platform": {"Name": "nsnet"},
    "Version": "0.1.0",
    "ApiVersion": "1.45",
    "MinAPIVersion": "1.24",
    "Os": "linux",
    "Arch": "amd64",
    "KernelVersion": "6.18.0",
    "Experimental": False,
    "Components": [
        {
            "Name": "Engine",
            "Version": "0.1.0",
            "Details": {
                "ApiVersion": "1.45",
                "MinAPIVersion": "1.24",
                "Os": "linux",
                "Arch": "amd64",
                "Experimental": "false",
            },
        }
    ],
}


def test_version(fake: FakeDaemon) -> None:
    fake.on("GET", "/version", send_json(200, VERSION))
    result = nsnet(fake, "version")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("Client:\n Version:           0.1.0\n API version:       1.45\n")
    assert "\nServer: nsnet\n Engine:\n  Version:          0.1.0\n" in out
    assert "  API version:      1.45 (minimum version 1.24)\n" in out
    assert "  OS/Arch:          linux/amd64\n" in out
    assert "  Experimental:     false\n" in out


def test_version_without_daemon_still_prints_client(tmp_path: Any) -> None:
    sock = f"unix://{tmp_path}/none.sock"
    result = CliRunner().invoke(cli, ["-H", sock, "version"])
    assert result.exit_code == 1
    assert result.stdout.startswith("Client:\n")
    assert result.stderr == (
        f"Error: cannot connect to the nsnet daemon at {sock}: is nsnetd running?\n"
    )


def test_missing_daemon_is_one_line(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSNET_HOST", f"{tmp_path}/none.sock")
    result = CliRunner().invoke(cli, ["network", "ls"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: cannot connect to the nsnet daemon at unix://{tmp_path}/none.sock: "
        "is nsnetd running?\n"
    )


def test_run_go_style_bool_before_image_only(fake: FakeDaemon) -> None:
    fake.on("POST", "/containers/create", send_json(201, {"Id": "c1", "Warnings": []}))
    result = nsnet(fake, "create", "--rm=true", "img", "--rm=false")
    assert result.exit_code == 0, result.output
    body = fake.requests[0].json
    assert body["HostConfig"]["AutoRemove"] is True
    assert body["Cmd"] == ["--rm=false"]


def test_usage_errors_are_one_line() -> None:
    result = CliRunner().invoke(cli, ["network", "ls", "--bogus"])
    assert result.exit_code == 125
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: No such option")
    result = CliRunner().invoke(cli, ["network", "create", "--ipv6=maybe", "x"])
    assert result.exit_code == 125
    assert "strconv.ParseBool" in result.stderr
    result = CliRunner().invoke(cli, ["network", "inspect"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Missing argument")
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1


def test_no_arguments_prints_help() -> None:
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0
    assert "network" in result.stdout


def test_info(fake: FakeDaemon) -> None:
    fake.on(
        "GET",
        "/info",
        send_json(
            200,
            {
                "Containers": 3,
                "ContainersRunning": 1,
                "ContainersPaused": 0,
                "ContainersStopped": 2,
                "Images": 2,
                "ServerVersion": "0.1.0",
                "KernelVersion": "6.18.0",
                "Plugins": {"Network": ["bridge", "host", "macvlan", "null", "overlay"]},
                "DockerRootDir": "/var/lib/nsnet",
                "Warnings": ["WARNING: something"],
            },
        ),
    )
    result = nsnet(fake, "info")
    assert result.exit_code == 0
    assert (
        "Server:\n Containers: 3\n  Running: 1\n  Paused: 0\n  Stopped: 2\n Images: 2\n"
        " Server Version: 0.1.0\n Plugins:\n  Network: bridge host macvlan null overlay\n"
        " Kernel Version: 6.18.0\n Docker Root Dir: /var/lib/nsnet\n"
    ) in result.stdout
    assert result.stderr == "WARNING: something\n"


def test_images_table(fake: FakeDaemon) -> None:
    now = int(time.time())
    fake.on(
        "GET",
        "/images/json",
        send_json(
            200,
            [
                {"Id": "sha256:" + "a" * 64, "RepoTags": ["busybox:latest", "bb:1"],
                 "Created": now - 3 * 86400, "Size": 4261550},
                {"Id": "sha256:" + "b" * 64, "RepoTags": None, "Created": now - 10,
                 "Size": 999},
            ],
        ),
    )  # fmt: skip
    result = nsnet(fake, "images")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "REPOSITORY   TAG       IMAGE ID       CREATED          SIZE",
        "<none>       <none>    bbbbbbbbbbbb   10 seconds ago   999B",
        "busybox      latest    aaaaaaaaaaaa   3 days ago       4.26MB",
        "bb           1         aaaaaaaaaaaa   3 days ago       4.26MB",
    ]
    assert nsnet(fake, "image", "ls", "-q").stdout == "bbbbbbbbbbbb\naaaaaaaaaaaa\n"


def test_image_import_from_stdin(fake: FakeDaemon) -> None:
    fake.on(
        "POST",
        "/images/create",
        send_text(200, '{"status":"sha256:1234"}\r\n', "application/json"),
    )
    result = nsnet(fake, "image", "import", "-", "bb:1", input=b"tar bytes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "sha256:1234\n"
    req = fake.requests[0]
    assert req.query == {"fromSrc": "-", "repo": "bb:1"}
    assert req.body == b"tar bytes"
    assert req.headers["transfer-encoding"] == "chunked"


def test_image_import_missing_file(fake: FakeDaemon, tmp_path: Any) -> None:
    result = nsnet(fake, "image", "import", str(tmp_path / "nope.tar"))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot open ")


def test_rmi(fake: FakeDaemon) -> None:
    fake.on(
        "DELETE",
        "/images/bb:1",
        send_json(200, [{"Untagged": "bb:1"}, {"Deleted": "sha256:" + "a" * 64}]),
    )
    fake.on("DELETE", "/images/zz", send_error(404, "No such image: zz:latest"))
    result = nsnet(fake, "rmi", "-f", "bb:1", "zz")
    assert result.exit_code == 1
    assert result.stdout == f"Untagged: bb:1\nDeleted: sha256:{'a' * 64}\n"
    assert result.stderr == "Error response from daemon: No such image: zz:latest\n"
    assert fake.requests[0].query == {"force": "1"}


def test_system_reconcile(fake: FakeDaemon) -> None:
    summary = {"created": ["br-123"], "removed": []}
    fake.on("POST", "/nsnet/reconcile", send_json(200, summary))
    result = nsnet(fake, "system", "reconcile")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == summary
    assert fake.requests[0].raw_path == "/v1.45/nsnet/reconcile"


def test_tabwrite_like_go() -> None:
    assert tabwrite([["A", "BB", "C"], ["xxxxxxxxxxxx", "", "z"]]) == (
        "A" + " " * 14 + "BB" + " " * 8 + "C\n" + "xxxxxxxxxxxx" + " " * 13 + "z\n"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (150, "2 minutes"),
        (3600, "About an hour"),
        (5400, "2 hours"),
        (47 * 3600, "47 hours"),
        (3 * 86400, "3 days"),
        (15 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_sizes_and_ellipsis() -> None:
    assert [human_size(s) for s in (0, 999, 1000, 4261550, 12345678, 123456789)] == [
        "0B",
        "999B",
        "1kB",
        "4.26MB",
        "12.3MB",
        "123MB",
    ]
    assert ellipsis("abcdef", 4) == "abc…"
    assert ellipsis("abc", 4) == "abc"


def test_bool_rewrite_stops_at_the_image() -> None:
    from nsnet.cli.container import run

    args = ["--rm=false", "--name", "x", "img", "--rm=true", "-d"]
    assert rewrite_bool_flags(run, args, interspersed=False) == [
        "--name",
        "x",
        "img",
        "--rm=true",
        "-d",
    ]
