"""The pure checks behind issue 8 items 5 and 9: request fields, IPAM pools, signals."""

from __future__ import annotations

import pytest

from nsnet.api.parse import (
    endpoint_request,
    env_list,
    extra_hosts,
    hostname,
    links_list,
    mac_address,
    word_list,
)
from nsnet.api.unsupported import CONFIG, HOST_CONFIG, refuse_unsupported
from nsnet.engine.containers import _sig, _timeout
from nsnet.errors import Invalid
from nsnet.ipam.allocator import validate_pools
from nsnet.model import IPAMPool


@pytest.mark.parametrize("subnet,gateway,text", [
    ("127.0.0.0/8", None, "reserved range 127.0.0.0/8"),
    ("224.0.0.0/24", None, "reserved range 224.0.0.0/4"),
    ("0.0.0.0/0", None, "reserved range"),
    ("ff00::/8", None, "reserved range ff00::/8"),
    ("::ffff:10.0.0.0/120", None, "reserved range"),
    ("10.0.0.5/32", None, "too small"),
    ("10.0.0.4/31", None, "too small"),
    ("fd00::/127", None, "too small"),
    ("10.0.0.0/24", "10.0.0.0", "network address"),
    ("10.0.0.0/24", "10.0.0.255", "broadcast address"),
    ("fd00::/64", "fd00::", "network address"),
])
def test_pools_that_cannot_work_are_refused(subnet: str, gateway: str | None,
                                            text: str) -> None:
    with pytest.raises(Invalid, match=text):
        validate_pools([IPAMPool(subnet=subnet, gateway=gateway)])


def test_smallest_working_pools_and_non_strings() -> None:
    assert validate_pools([IPAMPool(subnet="10.0.0.0/30")])[0].subnet == "10.0.0.0/30"
    assert validate_pools([IPAMPool(subnet="fd00::/126", gateway="fd00::3")])[0].gateway == \
        "fd00::3"
    for bad in (167772160, True, ["10.0.0.0/8"]):
        with pytest.raises(Invalid):
            validate_pools([IPAMPool(subnet=bad)])  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["h" * 65, "a\nb", "a b", "-x.", "a..b", 5, ["x"], "é"])
def test_hostnames_that_sethostname_or_etc_hosts_would_choke_on(value: object) -> None:
    with pytest.raises(Invalid, match="Hostname"):
        hostname(value)


def test_good_hostnames() -> None:
    assert hostname(None) == ""
    assert hostname("h" * 63) == "h" * 63
    assert hostname("web-1.example.test") == "web-1.example.test"


@pytest.mark.parametrize("mac,text", [
    ("zz:zz", "not a MAC"), ("01:00:5e:00:00:01", "multicast"),
    ("ff:ff:ff:ff:ff:ff", "multicast"), ("00:00:00:00:00:00", "zero"),
    ("02:42:ac:11:00:02\n", "not a MAC")])
def test_bad_macs(mac: str, text: str) -> None:
    with pytest.raises(Invalid, match=text):
        mac_address(mac, "MacAddress")


def test_good_macs_and_endpoint_shapes() -> None:
    assert mac_address("02:42:AC:11:00:02", "m") == "02:42:AC:11:00:02"
    assert mac_address("", "m") is None
    er = endpoint_request({"Aliases": ["db"], "Links": ["a", "b:c"], "GwPriority": 3}, "ep")
    assert (er.aliases, er.links, er.gw_priority) == (["db"], ["a:a", "b:c"], 3)
    for bad in ({"GwPriority": True}, {"GwPriority": 1 << 40}, {"Aliases": ["a b"]},
                {"IPAMConfig": {"IPv4Address": 5}}, {"Links": ["x\ny"]}):
        with pytest.raises(Invalid):
            endpoint_request(bad, "ep")


def test_env_hosts_links_and_resolver_words() -> None:
    assert env_list(["A=1", "B"]) == ["A=1", "B"]
    for bad in (["=x"], [""], ["A=\x00"], [1]):
        with pytest.raises(Invalid, match="Env"):
            env_list(bad)
    assert extra_hosts(["db:192.0.2.1", "v6:::1", "eq=198.51.100.2", "br:[2001:db8::1]"]) == \
        ["db:192.0.2.1", "v6:::1", "eq:198.51.100.2", "br:2001:db8::1"]
    for bad in (["db:host-gateway"], ["db:nope"], ["a b:192.0.2.1"], ["db"]):
        with pytest.raises(Invalid, match="ExtraHosts"):
            extra_hosts(bad)
    assert links_list(["/web:w"], "Links") == ["/web:w"]
    with pytest.raises(Invalid, match="DnsSearch"):
        word_list(["a\nnameserver 1.2.3.4"], "DnsSearch")


def test_unsupported_fields_refused_only_when_they_ask_for_something() -> None:
    defaults = {"Privileged": False, "Binds": None, "CapAdd": [], "PidMode": "",
                "IpcMode": "shareable", "SecurityOpt": None, "Devices": [],
                "LogConfig": {"Type": "", "Config": {}}, "MemorySwappiness": -1,
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "MaskedPaths": None}
    refuse_unsupported(defaults, HOST_CONFIG, "HostConfig.")
    for field, value in (("Privileged", True), ("Binds", ["/:/x"]), ("PidMode", "host"),
                         ("IpcMode", "container:x"), ("MaskedPaths", []), ("Memory", 1),
                         ("RestartPolicy", {"Name": "on-failure", "MaximumRetryCount": 3}),
                         ("LogConfig", {"Type": "json-file", "Config": {"max-size": "1m"}})):
        with pytest.raises(Invalid, match=f"HostConfig.{field} is not supported by nsnet"):
            refuse_unsupported({**defaults, field: value}, HOST_CONFIG, "HostConfig.")
    refuse_unsupported({"StopSignal": "SIGTERM", "Volumes": {}, "Healthcheck": None}, CONFIG)
    with pytest.raises(Invalid, match="StopSignal"):
        refuse_unsupported({"StopSignal": "SIGUSR1"}, CONFIG)


def test_signals_and_timeouts_are_checked_before_use() -> None:
    assert (_sig(None, 15), _sig("kill", 15), _sig("SIGHUP", 15), _sig("9", 15)) == \
        (15, 9, 1, 9)
    for bad in ("99", "0", "SIGBOGUS", "٣", 65):
        with pytest.raises(Invalid, match="Invalid signal"):
            _sig(bad, 15)
    assert (_timeout(None), _timeout(-1), _timeout(3)) == (10.0, -1.0, 3.0)
    for t in (10 ** 400, 1e300, float("nan")):
        with pytest.raises(Invalid, match="timeout"):
            _timeout(t)
