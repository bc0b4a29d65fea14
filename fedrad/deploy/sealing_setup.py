"""The key files of end-to-end sealing in a deployment, and the run config that switches it on.

Three steps, each done by one command:

- ``fedrad server init`` makes the ServerApp's X25519 sealing key in the server folder,
  ``DIR/keys/sealing.key`` (0600) and ``sealing.pub`` (:func:`init_server_sealing`); the
  coordinator hands ``sealing.pub`` and ``tls/ca.crt`` to every site and reads them the
  fingerprints.
- ``fedrad site init SITE.toml --server-sealing-key sealing.pub --root-cert ca.crt`` pins those
  two files in the site's ``keys_dir`` as ``server-sealing.pub`` and ``ca.crt``
  (:func:`prepare_pins`). A site with ``server-sealing.pub`` seals its updates to that key only
  and refuses to train for a server that does not ask for sealing.
- ``fedrad server start`` passes ``sealing-key`` and ``site-identities`` (the
  ``fedrad server register --identity`` folder) in the run config (:func:`plan_sealing`), so
  the ServerApp asks every site to seal and sign its training and evaluation replies: the
  SuperLink relays ciphertext only. With secure aggregation on the server sees masked sums
  only, and sealing is not used.

Fingerprints: a sealing key's is :func:`fedrad.secure.identity.fingerprint` (hex SHA-256 of
the raw key); a certificate's is the colon-separated SHA-256 of its DER encoding, as
``openssl x509 -noout -fingerprint -sha256 -in ca.crt`` prints it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fedrad.errors import FedradError
from fedrad.federation.config import StudyConfig
from fedrad.secure.certificates import load_certificate, write_public_file
from fedrad.secure.identity import (
    SEALING_KEY,
    SEALING_PUB,
    SERVER_SEALING_PUB,
    KeyFileError,
    SiteRegistry,
    create_sealing_key,
    fingerprint,
    load_sealing_key,
    load_sealing_public,
    write_public_key,
)

#: The server folder's sub-folder of the ServerApp's sealing key.
SERVER_KEYS_DIR = "keys"
#: The server folder's sub-folder of the sites' identity keys (``fedrad server register``).
IDENTITIES_DIR = "identities"
#: The study's CA certificate as a site keeps it in its ``keys_dir`` (``fedrad site join``).
SITE_CA_CERT = "ca.crt"


class PinError(FedradError):
    """A site already pins another server key or CA certificate than the one it was given."""


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER bytes, as colon-separated upper-case hex (openssl's)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


@dataclass(frozen=True)
class ServerSealing:
    """The ServerApp's sealing key files in a server folder, and whether init made them now."""

    key: Path
    pub: Path
    fingerprint: str
    created: bool


def server_sealing_paths(server_dir: str | Path) -> tuple[Path, Path]:
    """``DIR/keys/sealing.key`` and ``DIR/keys/sealing.pub``."""
    keys_dir = Path(server_dir) / SERVER_KEYS_DIR
    return keys_dir / SEALING_KEY, keys_dir / SEALING_PUB


def check_server_sealing(
    server_dir: str | Path, *, force: bool = False, keep: bool = False
) -> None:
    """Refuse, before anything is written, an init that would overwrite the sealing key.

    ``keep`` keeps an existing key (and makes one when there is none); ``force`` replaces it.
    """
    key, pub = server_sealing_paths(server_dir)
    existing = [str(p) for p in (key, pub) if p.exists()]
    if existing and not (force or keep):
        raise KeyFileError(
            f"{', '.join(existing)} already exist(s); pass --force to make a new sealing key "
            "(every site must then pin the new sealing.pub)"
        )


def init_server_sealing(
    server_dir: str | Path, *, force: bool = False, keep: bool = False
) -> ServerSealing:
    """Make (or, with ``keep``, keep) the ServerApp's sealing key in ``DIR/keys``.

    ``keep``: an existing ``sealing.key`` is checked and kept (``sealing.pub`` is written again
    from it); ``force``: an existing key is replaced; neither: an existing key is an error. The
    folder is made mode 0700, the private key 0600.
    """
    check_server_sealing(server_dir, force=force, keep=keep)
    key_path, pub_path = server_sealing_paths(server_dir)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(key_path.parent, 0o700)
    if keep and key_path.exists():
        key = load_sealing_key(key_path)
        write_public_key(key, pub_path, overwrite=True)
        return ServerSealing(key_path, pub_path, fingerprint(key), created=False)
    key = create_sealing_key(key_path.parent, overwrite=True)
    return ServerSealing(key_path, pub_path, fingerprint(key), created=True)


# --- the site's pinned copies ----------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """A file the coordinator gave the site, checked and ready to be stored in its keys_dir."""

    what: str
    source: Path
    target: Path
    data: bytes
    fingerprint: str
    #: The target already holds this very key or certificate.
    unchanged: bool

    @property
    def is_certificate(self) -> bool:
        return self.target.name == SITE_CA_CERT

    def write(self) -> Path:
        """Store the file (mode 0644) unless it is there already."""
        if not self.unchanged:
            write_public_file(self.target, self.data, force=True)
        return self.target


def _pin_sealing_key(source: Path, target: Path, force: bool) -> Pin:
    key = load_sealing_public(source)
    data = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = fingerprint(key)
    unchanged = False
    if target.exists():
        pinned = load_sealing_public(target)
        unchanged = fingerprint(pinned) == digest
        if not unchanged and not force:
            raise PinError(
                f"{target} already pins another server sealing key ({fingerprint(pinned)}), "
                f"not the one in {source} ({digest}). If the coordinator made a new key, "
                f"compare its fingerprint with them, then delete {target} and run this again"
            )
    return Pin("server sealing key", source, target, data, digest, unchanged)


def _pin_certificate(source: Path, target: Path, force: bool) -> Pin:
    cert = load_certificate(source)
    data = cert.public_bytes(serialization.Encoding.PEM)
    digest = certificate_fingerprint(cert)
    unchanged = False
    if target.exists():
        pinned = load_certificate(target)
        unchanged = certificate_fingerprint(pinned) == digest
        if not unchanged and not force:
            raise PinError(
                f"{target} already holds another study CA certificate "
                f"({certificate_fingerprint(pinned)}), not {source} ({digest}). If the "
                f"coordinator made a new CA, compare its fingerprint with them, then delete "
                f"{target} and run this again"
            )
    return Pin("study CA certificate", source, target, data, digest, unchanged)


def prepare_pins(
    keys_dir: str | Path,
    *,
    server_sealing_key: str | Path | None = None,
    root_cert: str | Path | None = None,
    force: bool = False,
) -> list[Pin]:
    """Check the coordinator's ``sealing.pub`` and ``ca.crt`` for ``keys_dir`` (nothing written).

    They become ``keys_dir/server-sealing.pub`` and ``keys_dir/ca.crt``. A different key or
    certificate already there is refused unless ``force``; the same one again is a no-op.
    """
    keys_dir = Path(keys_dir)
    pins = []
    if server_sealing_key is not None:
        pins.append(
            _pin_sealing_key(Path(server_sealing_key), keys_dir / SERVER_SEALING_PUB, force)
        )
    if root_cert is not None:
        pins.append(_pin_certificate(Path(root_cert), keys_dir / SITE_CA_CERT, force))
    return pins


# --- the run config of `fedrad server start` -------------------------------------------------


@dataclass(frozen=True)
class SealingPlan:
    """What ``fedrad server start`` passes in the run config, and what it tells the coordinator.

    ``run_config`` holds ``sealing-key`` and ``site-identities`` (absolute paths) when the run
    is sealed, nothing otherwise; ``warning`` says why a run with secure aggregation off is not.
    """

    run_config: dict[str, str] = field(default_factory=dict)
    sites: tuple[str, ...] = ()
    fingerprint: str = ""
    warning: str | None = None
    note: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.run_config)


def _not_sealed(reason: str) -> str:
    return (
        f"end-to-end sealing is not configured ({reason}): with secure aggregation off, each "
        "site's model update reaches the ServerApp protected by TLS only, so the machine that "
        "runs the SuperLink can read it, and sites that pinned a server sealing key refuse to "
        "train."
    )


def plan_sealing(
    study: StudyConfig,
    sealing_key: str | Path,
    identities_dir: str | Path,
    registered: Sequence[str] | None = None,
) -> SealingPlan:
    """Whether and how the run is sealed; raises when the keys are there but unusable.

    Sealed when secure aggregation is off, ``sealing_key`` exists and ``identities_dir`` holds
    site identity keys. Both are loaded here (the private key must be 0600), so a bad file
    stops ``fedrad server start`` before the SuperLink starts. ``registered``: the sites
    allowed to join (``nodes/``); each needs an identity key, or all its sealed updates would
    be refused.
    """
    sealing_key = Path(sealing_key)
    identities_dir = Path(identities_dir)
    if study.secure_aggregation.enabled:
        return SealingPlan(
            note="secure aggregation is on: the server sees only masked sums, nothing is sealed"
        )
    if not sealing_key.exists():
        return SealingPlan(
            warning=_not_sealed(f"no sealing key {sealing_key}")
            + " Make one with `fedrad server init DIR --sealing-only`, give every site "
            "keys/sealing.pub, and pass --sealing-key if it lies elsewhere."
        )
    has_identities = identities_dir.is_dir() and any(identities_dir.glob("*.pub"))
    if not has_identities:
        return SealingPlan(
            warning=_not_sealed(f"no site identity key in {identities_dir}")
            + " Register each site's identity.pub with `fedrad server register SITE_ID "
            "node.pub --identity identity.pub --force`."
        )
    private = load_sealing_key(sealing_key)
    registry = SiteRegistry.from_dir(identities_dir)
    missing = sorted(set(registered or ()) - set(registry))
    if missing:
        raise KeyFileError(
            f"site(s) {', '.join(missing)} may join but have no identity key in "
            f"{identities_dir}, so their sealed updates would all be refused: register each "
            "with `fedrad server register SITE_ID node.pub --identity identity.pub --force`"
        )
    return SealingPlan(
        run_config={
            "sealing-key": str(sealing_key.resolve()),
            "site-identities": str(identities_dir.resolve()),
        },
        sites=tuple(sorted(registry)),
        fingerprint=fingerprint(private),
    )
