"""``--cluster-store`` and ``--cluster-store-opt`` as EtcdKV reads them: bad input is
``Invalid`` before anything connects, and no option is dropped silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from nsnet.errors import Invalid
from nsnet.store.etcd import EtcdKV, parse_cluster_store
from nsnet.store.etcd_http import TlsFiles


def test_endpoints_from_url() -> None:
    endpoints, tls = parse_cluster_store("etcd://192.0.2.2:2379, 192.0.2.3:2379/", {})
    assert endpoints == ["192.0.2.2:2379", "192.0.2.3:2379"]
    assert tls.context() is None
    assert EtcdKV(endpoints).endpoints == ["http://192.0.2.2:2379", "http://192.0.2.3:2379"]


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("consul://h:8500", {}, "expected etcd://"),
        ("192.0.2.2:2379", {}, "expected etcd://"),
        ("etcd://", {}, "no endpoint"),
        ("etcd://h:2379", {"kv.path": "/x"}, "unknown cluster store option"),
        ("etcd://h:2379", {"kv.certfile": "/c"}, "go together"),
        ("etcd://h:2379", {"kv.cacertfile": "/nonexistent/ca.pem"}, "TLS files"),
    ],
)
def test_bad_cluster_store_is_invalid(url: str, options: dict[str, str], match: str) -> None:
    with pytest.raises(Invalid, match=match):
        EtcdKV.from_url(url, options)


def test_tls_makes_https_endpoints() -> None:
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if not ca.exists():
        pytest.skip("no system CA bundle to load")
    kv = EtcdKV(["192.0.2.2:2379"], tls=TlsFiles(cacertfile=str(ca)))
    assert kv.endpoints == ["https://192.0.2.2:2379"]
