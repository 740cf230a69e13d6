"""`nsnet network ...` against the fake daemon: request bodies, output shapes, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from nsnet.cli.requests import ipam_config
from nsnet.testing.fake_daemon import (
    FakeDaemon,
    nsnet,
    running_fake,
    send_empty,
    send_error,
    send_json,
)

NET_ID = "f" * 64


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    with running_fake() as daemon:
        yield daemon


def test_create_with_every_flag_sends_dockers_body(fake: FakeDaemon) -> None:
    fake.on("POST", "/networks/create", send_json(201, {"Id": NET_ID, "Warning": ""}))
    result = nsnet(
        fake,
        "network", "create", "--driver", "bridge", "--subnet", "10.10.0.0/16",
        "--ip-range", "10.10.5.0/24", "--gateway", "10.10.5.254",
        "--aux-address", "a=10.10.1.5", "--aux-address", "b=10.10.1.6", "--ipv6",
        "--subnet", "fd00:1::/64", "--gateway", "fd00:1::1", "--internal", "--attachable",
        "--opt", "com.docker.network.bridge.name=br-test",
        "--opt", "com.docker.network.bridge.enable_icc=false",
        "--label", "env=test", "--label", "flag", "--ipam-driver", "default",
        "--ipam-opt", "foo=bar", "mynet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == NET_ID + "\n"
    req = fake.one("POST", "/networks/create")
    assert req.headers["content-type"] == "application/json"
    # The body docker CLI 28.2.2 was captured sending for the same command line.
    expected = json.loads(
        '{"Driver":"bridge","Scope":"","EnableIPv6":true,"IPAM":{"Driver":"default",'
        '"Options":{"foo":"bar"},"Config":[{"Subnet":"10.10.0.0/16","IPRange":"10.10.5.0/24",'
        '"Gateway":"10.10.5.254","AuxiliaryAddresses":{"a":"10.10.1.5","b":"10.10.1.6"}},'
        '{"Subnet":"fd00:1::/64","Gateway":"fd00:1::1"}]},"Internal":true,"Attachable":true,'
        '"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{'
        '"com.docker.network.bridge.enable_icc":"false",'
        '"com.docker.network.bridge.name":"br-test"},"Labels":{"env":"test","flag":""},'
        '"Name":"mynet"}'
    )
    assert req.json == expected
    assert list(req.json) == list(expected)


def test_plain_create_body(fake: FakeDaemon) -> None:
    fake.on("POST", "/networks/create", send_json(201, {"Id": NET_ID, "Warning": ""}))
    assert nsnet(fake, "network", "create", "x").exit_code == 0
    assert fake.requests[0].json == {
        "Driver": "bridge",
        "Scope": "",
        "IPAM": {"Driver": "default", "Options": {}, "Config": []},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "ConfigOnly": False,
        "ConfigFrom": None,
        "Options": {},
        "Labels": {},
        "Name": "x",
    }


def test_create_go_style_bool_flags(fake: FakeDaemon) -> None:
    fake.on("POST", "/networks/create", send_json(201, {"Id": NET_ID, "Warning": ""}))
    result = nsnet(fake, "network", "create", "--ipv4=false", "--ipv6", "--internal=true", "x")
    assert result.exit_code == 0, result.output
    body = fake.requests[0].json
    assert (body["EnableIPv4"], body["EnableIPv6"], body["Internal"]) == (False, True, True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gateway", "10.0.0.1"], "every ip-range or gateway must have a corresponding subnet"),
        (["--subnet", "10.0.0.0/24", "--gateway", "10.1.0.1"],
         "no matching subnet for gateway 10.1.0.1"),
        (["--subnet", "10.0.0.0/24", "--ip-range", "10.9.0.0/28"],
         "no matching subnet for range 10.9.0.0/28"),
        (["--subnet", "10.0.0.0/24", "--aux-address", "r=10.9.0.1"],
         "no matching subnet for aux-address 10.9.0.1"),
        (["--subnet", "10.0.0.0/16", "--subnet", "10.0.1.0/24"],
         "multiple overlapping subnet configuration is not supported"),
        (["--subnet", "10.0.0.0", "--gateway", "10.0.0.1"],
         "invalid subnet: invalid CIDR address: 10.0.0.0"),
        (["--subnet", "10.0.0.0/24", "--subnet", "10.1.0.0/24", "--gateway", "10.0.0.1",
          "--gateway", "10.0.0.2"],
         "cannot configure multiple gateways (10.0.0.2, 10.0.0.1) for the same subnet "
         "(10.0.0.0/24)"),
    ],
)  # fmt: skip
def test_create_client_side_errors(fake: FakeDaemon, args: list[str], message: str) -> None:
    result = nsnet(fake, "network", "create", *args, "x")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message}\n"
    assert fake.requests == []


def test_ipam_matches_each_address_to_its_subnet() -> None:
    config = ipam_config(
        ["fd00::/64", "10.0.0.0/24"], [], ["10.0.0.254", "fd00::1"], {"x": "fd00::5"}
    )
    assert config == [
        {"Subnet": "fd00::/64", "Gateway": "fd00::1", "AuxiliaryAddresses": {"x": "fd00::5"}},
        {"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.254"},
    ]


def test_create_conflict_is_one_line(fake: FakeDaemon) -> None:
    fake.on("POST", "/networks/create", send_error(409, "network with name x already exists"))
    result = nsnet(fake, "network", "create", "x")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "Error response from daemon: network with name x already exists\n"


def _net(i: str, name: str, driver: str = "bridge") -> dict[str, object]:
    return {
        "Name": name,
        "Id": i * 64,
        "Created": "2025-01-02T03:04:05.123456789Z",
        "Scope": "local",
        "Driver": driver,
        "EnableIPv4": True,
        "EnableIPv6": False,
        "Internal": False,
        "Labels": {"b": "2", "a": "1"} if name == "my2" else {},
    }


NETS = [
    _net("1", "bridge"),
    _net("3", "none", "null"),
    _net("4", "my10"),
    _net("2", "host", "host"),
    _net("5", "my2"),
]


def test_ls_table_sorted_naturally(fake: FakeDaemon) -> None:
    fake.on("GET", "/networks", send_json(200, NETS))
    result = nsnet(fake, "network", "ls")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "NETWORK ID     NAME      DRIVER    SCOPE\n"
        "111111111111   bridge    bridge    local\n"
        "222222222222   host      host      local\n"
        "555555555555   my2       bridge    local\n"
        "444444444444   my10      bridge    local\n"
        "333333333333   none      null      local\n"
    )
    assert "filters" not in fake.requests[0].query


def test_ls_quiet_no_trunc_and_filters(fake: FakeDaemon) -> None:
    fake.on("GET", "/networks", send_json(200, NETS[:1]))
    result = nsnet(
        fake, "network", "ls", "-q", "--no-trunc", "-f", "driver=bridge", "-f", "label=a=b",
        "-f", "name=my", "-f", "type=custom",
    )  # fmt: skip
    assert result.stdout == "1" * 64 + "\n"
    assert json.loads(fake.requests[0].query["filters"]) == {
        "driver": {"bridge": True},
        "label": {"a=b": True},
        "name": {"my": True},
        "type": {"custom": True},
    }


def test_ls_bad_filter(fake: FakeDaemon) -> None:
    result = nsnet(fake, "network", "ls", "-f", "driver")
    assert result.exit_code == 1
    assert result.stderr == "Error: bad format of filter (expected name=value)\n"


def test_ls_format_json_and_template(fake: FakeDaemon) -> None:
    fake.on("GET", "/networks", send_json(200, [NETS[4]]))
    result = nsnet(fake, "network", "ls", "--format", "json")
    line = json.loads(result.stdout)
    assert line == {
        "CreatedAt": "2025-01-02 03:04:05.123456 +0000 UTC",
        "Driver": "bridge",
        "ID": "555555555555",
        "IPv4": "true",
        "IPv6": "false",
        "Internal": "false",
        "Labels": "a=1,b=2",
        "Name": "my2",
        "Scope": "local",
    }
    result = nsnet(fake, "network", "ls", "--format", "{{.ID}} {{.Name}}")
    assert result.stdout == "555555555555 my2\n"
    result = nsnet(fake, "network", "ls", "--format", "table {{.Name}}\\t{{.Driver}}")
    assert result.stdout == "NAME      DRIVER\nmy2       bridge\n"


def test_inspect_prints_found_and_reports_missing(fake: FakeDaemon) -> None:
    fake.on("GET", "/networks/a", send_json(200, {"Name": "a", "Id": "1" * 64, "Labels": {}}))
    fake.on("GET", "/networks/b", send_error(404, "network b not found"))
    result = nsnet(fake, "network", "inspect", "a", "b")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [{"Name": "a", "Id": "1" * 64, "Labels": {}}]
    assert result.stdout.startswith('[\n    {\n        "Name": "a",')
    assert result.stderr == "Error response from daemon: network b not found\n"
    result = nsnet(fake, "network", "inspect", "b")
    assert (result.exit_code, result.stdout) == (1, "[]\n")


def test_connect_body_like_docker(fake: FakeDaemon) -> None:
    fake.on("POST", "/networks/n/connect", send_empty(200))
    result = nsnet(
        fake, "network", "connect", "--ip", "172.18.0.9", "--ip6", "fd00::9", "--alias", "a1",
        "--alias", "a2", "--link", "other:db", "--link-local-ip", "169.254.1.1",
        "--driver-opt", "k=v", "n", "c",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert fake.requests[0].json == {
        "Container": "c",
        "EndpointConfig": {
            "IPAMConfig": {
                "IPv4Address": "172.18.0.9",
                "IPv6Address": "fd00::9",
                "LinkLocalIPs": ["169.254.1.1"],
            },
            "Links": ["other:db"],
            "Aliases": ["a1", "a2"],
            "MacAddress": "",
            "DriverOpts": {"k": "v"},
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
        },
    }


def test_connect_without_flags(fake: FakeDaemon) -> None:
    fake.on("POST", "/networks/n/connect", send_empty(200))
    nsnet(fake, "network", "connect", "n", "c")
    cfg = fake.requests[0].json["EndpointConfig"]
    assert (cfg["IPAMConfig"], cfg["Aliases"], cfg["DriverOpts"], cfg["Links"]) == (
        {},
        [],
        {},
        None,
    )


def test_disconnect(fake: FakeDaemon) -> None:
    fake.on("POST", "/networks/n/disconnect", send_empty(200))
    assert nsnet(fake, "network", "disconnect", "-f", "n", "c").exit_code == 0
    assert nsnet(fake, "network", "disconnect", "n", "c").exit_code == 0
    assert [r.json for r in fake.requests] == [
        {"Container": "c", "Force": True},
        {"Container": "c", "Force": False},
    ]


def test_rm_continues_after_errors(fake: FakeDaemon) -> None:
    fake.on("DELETE", "/networks/a", send_empty(204))
    fake.on("DELETE", "/networks/b", send_error(404, "network b not found"))
    fake.on(
        "DELETE",
        "/networks/c",
        send_error(403, "error while removing network: network c has active endpoints"),
    )
    fake.on("DELETE", "/networks/d", send_empty(204))
    result = nsnet(fake, "network", "rm", "a", "b", "c", "d")
    assert result.exit_code == 1
    assert result.stdout == "a\nd\n"
    assert result.stderr == (
        "Error response from daemon: network b not found\n"
        "Error response from daemon: error while removing network: "
        "network c has active endpoints\n"
    )
    result = nsnet(fake, "network", "rm", "-f", "b")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_prune_prompts_and_prints_names(fake: FakeDaemon) -> None:
    fake.on("POST", "/networks/prune", send_json(200, {"NetworksDeleted": ["n1", "n2"]}))
    result = nsnet(fake, "network", "prune", input="n\n")
    assert result.exit_code == 0
    assert "Are you sure you want to continue? [y/N] " in result.stdout
    assert fake.requests == []
    result = nsnet(fake, "network", "prune", input="y\n")
    assert result.stdout.endswith("Deleted Networks:\nn1\nn2\n")
    result = nsnet(fake, "network", "prune", "-f", "--filter", "until=24h", "--filter",
                   "label=env=test")  # fmt: skip
    assert result.stdout == "Deleted Networks:\nn1\nn2\n"
    assert json.loads(fake.requests[-1].query["filters"]) == {
        "until": {"24h": True},
        "label": {"env=test": True},
    }
