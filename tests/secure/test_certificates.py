"""The study's CA and SuperLink certificate (``fedrad server init``), checked with real verifiers:
``cryptography``'s RFC 5280 path validation and a TLS handshake of Python's ``ssl`` on loopback."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedrad.secure.certificates import (
    CertificateError,
    TlsFiles,
    certificate_hosts,
    check_server_files,
    covers_host,
    init_tls,
    load_certificate,
    verify_chain,
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("server") / "tls"
    return init_tls(folder, ["fl.hospital.example", "10.1.2.3", "*.study.example"])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_four_files_with_private_keys_0600(tls: TlsFiles) -> None:
    assert _mode(tls.ca_key) == 0o600
    assert _mode(tls.server_key) == 0o600
    assert _mode(tls.ca_cert) == 0o644
    assert _mode(tls.server_cert) == 0o644
    assert b"PRIVATE KEY" in tls.server_key.read_bytes()
    assert not list(tls.ca_cert.parent.glob(".*.tmp"))


def test_chain_verifies_with_rfc5280_path_validation(tls: TlsFiles) -> None:
    ca = load_certificate(tls.ca_cert)
    leaf = load_certificate(tls.server_cert)
    store = verification.Store([ca])
    for name in (
        x509.DNSName("localhost"),
        x509.DNSName("fl.hospital.example"),
        x509.DNSName("node7.study.example"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
    ):
        verifier = verification.PolicyBuilder().store(store).build_server_verifier(name)
        chain = verifier.verify(leaf, [])
        assert chain[-1] == ca
    other = verification.PolicyBuilder().store(store)
    with pytest.raises(verification.VerificationError):
        other.build_server_verifier(x509.DNSName("elsewhere.example")).verify(leaf, [])
    verify_chain(leaf, ca)


def test_subject_alternative_names_cover_loopback_and_the_hosts(tls: TlsFiles) -> None:
    leaf = load_certificate(tls.server_cert)
    assert sorted(certificate_hosts(leaf)) == sorted(
        ["localhost", "fl.hospital.example", "*.study.example", "127.0.0.1", "10.1.2.3"]
    )
    assert covers_host(leaf, "127.0.0.1") and covers_host(leaf, "FL.hospital.example")
    assert covers_host(leaf, "a.study.example") and not covers_host(leaf, "a.b.study.example")
    assert not covers_host(leaf, "10.1.2.4")


def test_key_usage_and_basic_constraints(tls: TlsFiles) -> None:
    ca = load_certificate(tls.ca_cert)
    leaf = load_certificate(tls.server_cert)
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ca.subject == ca.issuer

    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.issuer == ca.subject
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert 365 <= days <= 2 * 365 + 1


def test_tls_handshake_on_loopback_accepts_the_study_ca_only(tls: TlsFiles, tmp_path: Path) -> None:
    """A real TLS server with server.crt; a client trusting ca.crt connects, one trusting
    another CA does not."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls.server_cert, tls.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(count: int) -> None:
        for _ in range(count):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, args=(3,), daemon=True)
    thread.start()
    try:
        for host in ("127.0.0.1", "localhost"):
            client = ssl.create_default_context(cafile=str(tls.ca_cert))
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname=host) as conn,
            ):
                assert conn.recv(2) == b"ok"
                assert conn.version() in ("TLSv1.2", "TLSv1.3")
        stranger = init_tls(tmp_path / "other")
        client = ssl.create_default_context(cafile=str(stranger.ca_cert))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            client.wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        thread.join(timeout=5)
        listener.close()


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    files = init_tls(tmp_path / "tls")
    before = {p: p.read_bytes() for p in (files.ca_cert, files.ca_key, files.server_cert)}
    with pytest.raises(CertificateError, match="--force"):
        init_tls(tmp_path / "tls", ["other.example"])
    assert {p: p.read_bytes() for p in before} == before
    init_tls(tmp_path / "tls", force=True)
    assert files.ca_cert.read_bytes() != before[files.ca_cert]
    assert _mode(files.ca_key) == 0o600


def test_keep_ca_issues_a_new_server_certificate_sites_still_trust(tmp_path: Path) -> None:
    files = init_tls(tmp_path / "tls")
    ca_before = files.ca_cert.read_bytes()
    with pytest.raises(CertificateError, match="--force"):
        init_tls(tmp_path / "tls", ["new.example"], keep_ca=True)
    init_tls(tmp_path / "tls", ["new.example"], keep_ca=True, force=True)
    assert files.ca_cert.read_bytes() == ca_before
    check_server_files(files, "new.example")


@pytest.mark.parametrize("host", ["https://fl.example", "fl.example:9092", "bad host", "-x.org"])
def test_bad_host_is_refused_before_writing(tmp_path: Path, host: str) -> None:
    with pytest.raises(CertificateError, match="neither an IP address nor a DNS name"):
        init_tls(tmp_path / "tls", [host])
    assert not (tmp_path / "tls").exists()


def test_server_file_checks_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"missing: .*ca.crt.*fedrad server init"):
        check_server_files(TlsFiles.in_dir(tmp_path / "none" / "tls"))

    files = init_tls(tmp_path / "a" / "tls")
    with pytest.raises(CertificateError, match=r"does not name '10.9.9.9'.*--keep-ca --force"):
        check_server_files(files, "10.9.9.9")
    check_server_files(files, "127.0.0.1")

    other = init_tls(tmp_path / "b" / "tls")
    mixed = TlsFiles(other.ca_cert, other.ca_key, files.server_cert, files.server_key)
    with pytest.raises(CertificateError, match=r"not (issued|signed) by this CA"):
        check_server_files(mixed)
    wrong_key = TlsFiles(files.ca_cert, files.ca_key, files.server_cert, other.server_key)
    with pytest.raises(CertificateError, match="is not the key of"):
        check_server_files(wrong_key)
    files.server_cert.write_text("not a certificate")
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        check_server_files(files)
