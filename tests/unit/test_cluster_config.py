"""The --cluster-* flags: what is accepted, what is refused and with which words."""

from __future__ import annotations

from pathlib import Path

import pytest

from nsnet.cluster import config
from nsnet.cluster.config import ClusterConfig, StoreEndpoint, TlsFiles
from nsnet.errors import Invalid


def no_interfaces(name: str) -> str:
    raise AssertionError(f"looked up interface {name!r}")


def test_no_flags_means_no_cluster() -> None:
    assert config.from_flags(None, None, []) is None
    assert config.from_flags("", "", ()) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("etcd://192.0.2.1:2379", [("192.0.2.1", 2379)]),
        ("etcd://192.0.2.1", [("192.0.2.1", 2379)]),
        ("etcd://a.example:12379,b.example,192.0.2.3:2380",
         [("a.example", 12379), ("b.example", 2379), ("192.0.2.3", 2380)]),
        ("etcd://[2001:db8::1]:2379,2001:db8::2", [("2001:db8::1", 2379), ("2001:db8::2", 2379)]),
        ("etcd://localhost:2379", [("localhost", 2379)]),
    ],
)
def test_store_url(url: str, expected: list[tuple[str, int]]) -> None:
    assert config.parse_store_url(url) == tuple(StoreEndpoint(h, p) for h, p in expected)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("192.0.2.1:2379", "expected etcd://"),
        ("consul://192.0.2.1:8500", "'Consul': nsnet supports etcd only"),
        ("zk://192.0.2.1:2181", "'ZooKeeper'"),
        ("https://192.0.2.1:2379", "'https'"),
        ("etcd://192.0.2.1:2379/docker", "a path, query or user is not supported"),
        ("etcd://user@192.0.2.1:2379", "a path, query or user is not supported"),
        ("etcd://192.0.2.1:0", "port '0'"),
        ("etcd://192.0.2.1:65536", "port '65536'"),
        ("etcd://192.0.2.1:http", "port 'http'"),
        ("etcd://192.0.2.1:2379,", "empty endpoint"),
        ("etcd://", "empty endpoint"),
        ("etcd://a_b.example", "not an IP address or host name"),
        ("etcd://-a.example", "not an IP address or host name"),
        ("etcd://[2001:db8::1", "expected [IPv6 address]:port"),
        ("etcd://[2001:db8::1]x", "expected [IPv6 address]:port"),
        ("etcd://192.0.2.1,192.0.2.1:2379", "192.0.2.1:2379 is given twice"),
    ],
)
def test_store_url_refused(url: str, words: str) -> None:
    with pytest.raises(Invalid) as e:
        config.parse_store_url(url)
    assert words in e.value.message


def test_advertise_ip_and_port() -> None:
    assert config.parse_advertise("192.0.2.10", no_interfaces) == ("192.0.2.10", 4789)
    assert config.parse_advertise("192.0.2.10:8472", no_interfaces) == ("192.0.2.10", 8472)
    assert config.parse_advertise("2001:db8::a", no_interfaces) == ("2001:db8::a", 4789)
    assert config.parse_advertise("[2001:db8::a]:4790", no_interfaces) == ("2001:db8::a", 4790)


def test_advertise_interface_resolved_by_lookup() -> None:
    seen: list[str] = []

    def lookup(name: str) -> str:
        seen.append(name)
        return "198.51.100.7"

    assert config.parse_advertise("eth0:4790", lookup) == ("198.51.100.7", 4790)
    assert config.parse_advertise("ul-veth.1", lookup) == ("198.51.100.7", 4789)
    assert seen == ["eth0", "ul-veth.1"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0.0.0.0", "cannot be reached by other hosts"),
        ("127.0.0.1", "cannot be reached by other hosts"),
        ("::1", "cannot be reached by other hosts"),
        ("239.1.1.1", "cannot be reached by other hosts"),
        ("192.0.2.1:0", "port '0'"),
        ("a/b", "not an IP address or interface name"),
        ("averyveryverylongname", "not an IP address or interface name"),
    ],
)
def test_advertise_refused(text: str, words: str) -> None:
    with pytest.raises(Invalid) as e:
        config.parse_advertise(text, no_interfaces)
    assert words in e.value.message


def test_advertise_interface_on_loopback_refused() -> None:
    with pytest.raises(Invalid, match="cannot be reached"):
        config.parse_advertise("lo", lambda _: "127.0.0.1")


def test_interface_address_of_loopback_and_missing() -> None:
    """The real lookup, in this process's namespace: `lo` always exists."""
    assert config.interface_address("lo") == "127.0.0.1"
    with pytest.raises(Invalid, match="no interface named 'nsnet-none0'"):
        config.interface_address("nsnet-none0")


def _files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("ca.pem", "cert.pem", "key.pem"):
        out[name] = tmp_path / name
        out[name].write_text("x")
    return out


def test_store_opts_tls(tmp_path: Path) -> None:
    f = _files(tmp_path)
    tls = config.parse_store_opts([f"kv.cacertfile={f['ca.pem']},kv.certfile={f['cert.pem']}",
                                   f"kv.keyfile={f['key.pem']}"])
    assert tls == TlsFiles(cacert=f["ca.pem"], cert=f["cert.pem"], key=f["key.pem"])
    assert config.parse_store_opts([f"kv.cacertfile={f['ca.pem']}"]) == TlsFiles(
        cacert=f["ca.pem"])
    assert config.parse_store_opts([]) is None


@pytest.mark.parametrize(
    ("opts", "words"),
    [
        (["kv.path=/docker"], "unknown --cluster-store-opt 'kv.path' (known: kv.cacertfile"),
        (["discovery.heartbeat=20"], "unknown --cluster-store-opt 'discovery.heartbeat'"),
        (["kv.cacertfile"], "expected key=value"),
        (["kv.cacertfile={ca},kv.cacertfile={ca}"], "kv.cacertfile is given twice"),
        (["kv.certfile={cert}"], "kv.certfile and kv.keyfile go together"),
        (["kv.cacertfile={ca}", "kv.keyfile={key}"], "kv.certfile and kv.keyfile go together"),
        (["kv.cacertfile={missing}"], "No such file or directory"),
        (["kv.cacertfile={dir}"], "not a readable file"),
        (["kv.cacertfile="], "empty path"),
    ],
)
def test_store_opts_refused(tmp_path: Path, opts: list[str], words: str) -> None:
    f = _files(tmp_path)
    paths = {"ca": f["ca.pem"], "cert": f["cert.pem"], "key": f["key.pem"],
             "missing": tmp_path / "missing.pem", "dir": tmp_path}
    with pytest.raises(Invalid) as e:
        config.parse_store_opts([o.format(**paths) for o in opts])
    assert words in e.value.message


@pytest.mark.parametrize(
    ("store", "advertise", "opts", "words"),
    [
        (None, "192.0.2.1", [], "--cluster-advertise needs --cluster-store"),
        (None, None, ["kv.cacertfile=/x"], "--cluster-store-opt needs --cluster-store"),
        ("etcd://192.0.2.1", None, [], "--cluster-store needs --cluster-advertise"),
        ("etcd://192.0.2.1", "", [], "--cluster-store needs --cluster-advertise"),
    ],
)
def test_contradictory_combinations(store: str | None, advertise: str | None, opts: list[str],
                                    words: str) -> None:
    with pytest.raises(Invalid) as e:
        config.from_flags(store, advertise, opts, no_interfaces)
    assert words in e.value.message


def test_full_config(tmp_path: Path) -> None:
    f = _files(tmp_path)
    got = config.from_flags("etcd://192.0.2.1:2379,192.0.2.2", "br-ul:4790",
                            [f"kv.cacertfile={f['ca.pem']}"], lambda _: "203.0.113.5")
    assert got == ClusterConfig(
        endpoints=(StoreEndpoint("192.0.2.1", 2379), StoreEndpoint("192.0.2.2", 2379)),
        advertise="203.0.113.5", vxlan_port=4790, tls=TlsFiles(cacert=f["ca.pem"]))
    assert got is not None and got.store_url == "etcd://192.0.2.1:2379,192.0.2.2:2379"


def test_daemon_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """nsnetd's parser: no flag means no cluster; a bad combination is a usage error (exit 2)
    naming the problem, before anything is made."""
    from nsnet.daemon import parse_args

    assert parse_args([]).cluster is None
    args = parse_args(["--cluster-store", "etcd://192.0.2.1:2379,192.0.2.2",
                       "--cluster-advertise", "198.51.100.4:4790"])
    assert args.cluster == ClusterConfig(
        endpoints=(StoreEndpoint("192.0.2.1", 2379), StoreEndpoint("192.0.2.2", 2379)),
        advertise="198.51.100.4", vxlan_port=4790)
    for argv, words in (
            (["--cluster-advertise", "198.51.100.4"], "--cluster-advertise needs --cluster-store"),
            (["--cluster-store", "consul://192.0.2.1"], "nsnet supports etcd only"),
            (["--cluster-store", "etcd://192.0.2.1", "--cluster-advertise", "198.51.100.4",
              "--cluster-store-opt", "kv.path=/x"], "unknown --cluster-store-opt 'kv.path'")):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2
        assert words in capsys.readouterr().err
