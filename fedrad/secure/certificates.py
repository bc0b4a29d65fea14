"""The study's TLS certificates: a private CA and the SuperLink's server certificate.

``fedrad server init`` makes them with ``cryptography`` only, into one folder::

    tls/ca.crt       the study's CA certificate: the one file every site receives
    tls/ca.key       the CA's private key (0600): stays with the coordinator, ideally offline
    tls/server.crt   the SuperLink's certificate, signed by the CA
    tls/server.key   its private key (0600)

The CA is self-signed (basicConstraints CA:TRUE with path length 0, key usage keyCertSign and
cRLSign). The server certificate is an end-entity certificate (CA:FALSE, key usage
digitalSignature, extended key usage serverAuth) whose subjectAltName lists every name the
sites and the local ``flwr`` CLI reach the SuperLink by: ``localhost`` and ``127.0.0.1`` always
(the ServerApp process and the CLI connect on loopback), plus the coordinator's ``--host``
names and addresses. Keys are ECDSA P-256, signatures ECDSA with SHA-256; both certificates
carry subject and authority key identifiers, so strict X.509 verifiers accept the chain.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrad.errors import FedradError
from fedrad.secure.files import write_owner_only

#: Names every server certificate covers: the loopback connections of the ServerApp and CLI.
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
#: Validity of the study's CA (days): longer than any study, shorter than forever.
CA_VALID_DAYS = 5 * 365
#: Validity of the SuperLink's certificate (days); re-issue with ``--keep-ca`` when it lapses.
SERVER_VALID_DAYS = 2 * 365
#: Back-dating of ``notBefore``, so a site whose clock runs a little behind accepts a new cert.
CLOCK_SKEW = dt.timedelta(minutes=5)

_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class CertificateError(FedradError):
    """A TLS certificate or key is missing, unreadable, expired or does not fit its use."""


@dataclass(frozen=True)
class TlsFiles:
    """The four files of a study's TLS folder."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_dir(cls, folder: str | Path) -> TlsFiles:
        """The files' paths in ``folder`` (``ca.crt``, ``ca.key``, ``server.crt``, ``server.key``)."""
        folder = Path(folder)
        return cls(
            folder / "ca.crt", folder / "ca.key", folder / "server.crt", folder / "server.key"
        )

    def server_files(self) -> tuple[Path, Path, Path]:
        """What the SuperLink needs: the CA certificate, its certificate and its key."""
        return self.ca_cert, self.server_cert, self.server_key


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_host(host: str) -> x509.GeneralName:
    """The subjectAltName entry of a host: an IP address or a DNS name (``*.`` allowed first).

    Raises :class:`CertificateError` for anything else (a URL, ``host:port``, spaces).
    """
    text = host.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
    if not text or not labels or not all(_DNS_LABEL.match(label) for label in labels):
        raise CertificateError(
            f"--host {host!r} is neither an IP address nor a DNS name; give the name or address "
            "sites use to reach the server, without scheme or port (e.g. fl.hospital.org)"
        )
    return x509.DNSName(text.rstrip(".").lower())


def _host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in [*DEFAULT_HOSTS, *hosts]:
        name = parse_host(host)
        if name not in names:
            names.append(name)
    return names


def create_ca(
    common_name: str = "fedrad study CA", valid_days: int = CA_VALID_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new self-signed CA: its private key and certificate (CA:TRUE, pathlen 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrad"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = _now() - CLOCK_SKEW
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: Sequence[str] = (),
    valid_days: int = SERVER_VALID_DAYS,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A SuperLink key and certificate signed by the CA, naming ``localhost``, ``127.0.0.1``
    and ``hosts`` in its subjectAltName (the first DNS name of ``hosts``, else ``localhost``,
    is also its common name). The certificate never outlives the CA."""
    names = _host_names(hosts)
    dns = [n.value for n in names if isinstance(n, x509.DNSName)]
    common_name = next((d for d in dns if d != "localhost"), "localhost")
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - CLOCK_SKEW
    end = min(start + dt.timedelta(days=valid_days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrad"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_private_key(path: Path, pem: bytes, *, force: bool = False) -> Path:
    """Write a private key file readable by its owner only (mode 0600, never wider).

    The file is created with mode 0600 (not chmod-ed after the fact); an existing file is
    replaced only with ``force``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not force:
        raise CertificateError(f"{path} exists; pass --force to replace it")
    return write_owner_only(path, pem)


def write_public_file(path: Path, data: bytes, *, force: bool = False) -> Path:
    """Write a certificate or public key (mode 0644); an existing file only with ``force``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not force:
        raise CertificateError(f"{path} exists; pass --force to replace it")
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM certificate; :class:`CertificateError` naming the file when it cannot be read."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError:
        raise CertificateError(f"{path}: certificate file not found") from None
    except (OSError, ValueError) as exc:
        raise CertificateError(f"{path}: not a PEM certificate ({exc})") from None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM EC private key; :class:`CertificateError` when it cannot be read."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise CertificateError(f"{path}: private key file not found") from None
    except (OSError, ValueError, TypeError) as exc:
        raise CertificateError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{path}: not an EC private key (fedrad server init makes one)")
    return key


def init_tls(
    folder: str | Path,
    hosts: Sequence[str] = (),
    *,
    force: bool = False,
    keep_ca: bool = False,
) -> TlsFiles:
    """Create the study's TLS folder: a new CA and a server certificate for ``hosts``.

    With ``keep_ca`` the CA already in ``folder`` signs a new server certificate (sites keep
    the ``ca.crt`` they have). Existing files are replaced only with ``force`` (server files
    with ``keep_ca`` too); nothing is written when a check fails.
    """
    files = TlsFiles.in_dir(folder)
    for host in hosts:  # refuse a bad host before anything is written
        parse_host(host)
    if keep_ca:
        ca_cert = load_certificate(files.ca_cert)
        ca_key = load_private_key(files.ca_key)
        if ca_key.public_key().public_numbers() != ca_cert.public_key().public_numbers():
            raise CertificateError(f"{files.ca_key} is not the key of {files.ca_cert}")
        targets = [files.server_cert, files.server_key]
    else:
        targets = [files.ca_cert, files.ca_key, files.server_cert, files.server_key]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise CertificateError(
            f"{', '.join(existing)} already exist(s); pass --force to replace "
            + ("the server certificate" if keep_ca else "them (sites then need the new ca.crt)")
        )
    if not keep_ca:
        ca_key, ca_cert = create_ca()
    server_key, server_cert = issue_server_certificate(ca_key, ca_cert, hosts)
    if not keep_ca:
        write_private_key(files.ca_key, _key_pem(ca_key), force=True)
        write_public_file(files.ca_cert, _cert_pem(ca_cert), force=True)
    write_private_key(files.server_key, _key_pem(server_key), force=True)
    write_public_file(files.server_cert, _cert_pem(server_cert), force=True)
    return files


def certificate_hosts(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses of a certificate's subjectAltName, as text."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        *san.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    ]


def covers_host(cert: x509.Certificate, host: str) -> bool:
    """Whether ``host`` (a name or an address) is in the certificate's subjectAltName.

    A ``*.`` wildcard covers exactly one leftmost label, as TLS clients match it.
    """
    wanted = parse_host(host)
    if isinstance(wanted, x509.IPAddress):
        return str(wanted.value) in certificate_hosts(cert)
    name = str(wanted.value)
    for entry in certificate_hosts(cert):
        entry = entry.lower()
        if entry == name:
            return True
        if entry.startswith("*.") and "." in name and name.split(".", 1)[1] == entry[2:]:
            return True
    return False


def verify_chain(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Check that ``ca_cert`` issued ``cert`` and both are valid now; :class:`CertificateError`.

    Checks the issuer name, the CA's basicConstraints, the signature and both validity
    periods: what a TLS client checks of a one-level chain, short of the host name.
    """
    now = _now()
    for c, what in ((ca_cert, "CA certificate"), (cert, "server certificate")):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise CertificateError(
                f"the {what} is valid from {c.not_valid_before_utc:%Y-%m-%d} to "
                f"{c.not_valid_after_utc:%Y-%m-%d} only; issue a new one with fedrad server init"
            )
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateError("the CA certificate is not a CA (basicConstraints CA:FALSE)")
    if cert.issuer != ca_cert.subject:
        raise CertificateError("the server certificate was not issued by this CA (issuer name)")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CertificateError(
            f"the server certificate was not signed by this CA ({exc or 'bad signature'})"
        ) from None


def check_server_files(files: TlsFiles, host: str | None = None) -> None:
    """Before a SuperLink starts: its three files exist, the chain verifies, the key matches
    the certificate and (given ``host``) the certificate names ``host``.

    Every failure is a :class:`CertificateError` naming the file and the fix.
    """
    missing = [str(p) for p in files.server_files() if not p.is_file()]
    if missing:
        raise CertificateError(
            f"TLS file(s) missing: {', '.join(missing)}; create them with "
            f"`fedrad server init {files.ca_cert.parent.parent}` (or pass --tls-dir)"
        )
    ca_cert = load_certificate(files.ca_cert)
    cert = load_certificate(files.server_cert)
    key = load_private_key(files.server_key)
    try:
        verify_chain(cert, ca_cert)
    except CertificateError as exc:
        raise CertificateError(f"{files.server_cert}: {exc}") from None
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise CertificateError(f"{files.server_key} is not the key of {files.server_cert}")
    if host is not None and not covers_host(cert, host):
        raise CertificateError(
            f"{files.server_cert} does not name {host!r} (it names "
            f"{', '.join(certificate_hosts(cert))}); issue one that does with "
            f"`fedrad server init {files.ca_cert.parent.parent} --keep-ca --force --host {host}`"
        )
