"""``--cluster-store`` and ``--cluster-store-opt`` reach EtcdKV through the one parser of those
flags (nsnet.cluster.config): every endpoint in order, TLS files as given, and a TLS context
that cannot be built is ``Invalid`` before anything connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from nsnet.cluster import config
from nsnet.errors import Invalid
from nsnet.store.etcd import EtcdKV
from nsnet.store.etcd_http import TlsFiles

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def test_endpoints_from_flags_in_order() -> None:
    cfg = config.from_flags("etcd://192.0.2.3:2380,192.0.2.2,[2001:db8::1]:2379",
                            "192.0.2.11")
    assert cfg is not None
    kv = EtcdKV.from_config(cfg)
    assert kv.endpoints == ["http://192.0.2.3:2380", "http://192.0.2.2:2379",
                            "http://[2001:db8::1]:2379"]


def test_tls_options_make_https_endpoints() -> None:
    if not CA_BUNDLE.exists():
        pytest.skip("no system CA bundle to load")
    cfg = config.from_flags("etcd://192.0.2.2:2379", "192.0.2.11",
                            [f"kv.cacertfile={CA_BUNDLE}"])
    assert cfg is not None
    assert EtcdKV.from_config(cfg).endpoints == ["https://192.0.2.2:2379"]


def test_unloadable_certificate_is_invalid(tmp_path: Path) -> None:
    """A readable file that is no certificate passes the flag check (it only checks the file
    is there) and is refused when the TLS context is built: still before any connection."""
    junk = tmp_path / "cert.pem"
    junk.write_text("not a certificate\n")
    cfg = config.from_flags("etcd://192.0.2.2:2379", "192.0.2.11",
                            [f"kv.certfile={junk},kv.keyfile={junk}"])
    assert cfg is not None
    with pytest.raises(Invalid, match="TLS files"):
        EtcdKV.from_config(cfg)


def test_certificate_without_key_is_invalid_at_the_transport_too() -> None:
    with pytest.raises(Invalid, match="go together"):
        EtcdKV(["192.0.2.2:2379"], tls=TlsFiles(certfile="/c"))
