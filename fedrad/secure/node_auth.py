"""A site's key files and the coordinator's register of sites allowed to join.

Flower 1.41 SuperNode authentication (``flower-superlink --enable-supernode-auth``): the
SuperLink admits a SuperNode only if its public key was registered through the SuperLink's
Control API (``flwr supernode register KEY.pub``); the SuperNode
(``flower-supernode --auth-supernode-private-key node.key``) signs a timestamp with the private
key on every request. Flower reads the private key with ``load_ssh_private_key`` and the public
key with ``load_ssh_public_key``, both OpenSSH formats, and takes NIST curves only; fedrad uses
ECDSA P-384 (``ecdsa-sha2-nistp384``), as ``ssh-keygen -t ecdsa -b 384`` would make.

``fedrad site init`` writes the site's files into its ``keys_dir``::

    node.key       SuperNode authentication private key, OpenSSH format (0600)
    node.pub       its public key, one OpenSSH line: what the site sends to the coordinator
    identity.key   the site's Ed25519 identity private key, PKCS#8 PEM (0600), used to sign
                   and seal model updates (:mod:`fedrad.secure.identity`)
    identity.pub   its public key, SubjectPublicKeyInfo PEM

The coordinator keeps the register of sites as a folder of node public keys, ``SITE_ID.pub``
(``fedrad server register``; the sites' identity keys go to a second folder, also as
``SITE_ID.pub``, which the ServerApp reads as its :class:`fedrad.secure.identity.SiteRegistry`). The SuperLink keeps its state in memory, so ``fedrad server
start`` registers every key of that folder again each time it starts: the folder is the one
list of who may join, and deleting a file revokes the site at the next start.

Node key fingerprints are OpenSSH's: ``SHA256:`` and the unpadded base64 SHA-256 of the key's
OpenSSH wire encoding (``ssh-keygen -lf node.pub`` prints the same); identity key fingerprints
are :func:`fedrad.secure.identity.fingerprint`'s (hex SHA-256 of the raw key). Site and coordinator compare them
over a second channel (phone, signed letter) before a key is registered.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fedrad.errors import FedradError
from fedrad.secure.certificates import write_private_key, write_public_file

NODE_KEY = "node.key"
NODE_PUB = "node.pub"
IDENTITY_KEY = "identity.key"
IDENTITY_PUB = "identity.pub"

#: The curve of node authentication keys (Flower accepts NIST curves only).
NODE_CURVE = ec.SECP384R1
#: The curves Flower's Control API accepts for a SuperNode's public key.
NIST_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class NodeAuthError(FedradError):
    """A site's key is missing, unreadable, of the wrong kind, exposed, or already registered."""


@dataclass(frozen=True)
class SiteKeyFiles:
    """The key files of one site, in its ``keys_dir``."""

    keys_dir: Path

    @property
    def node_key(self) -> Path:
        return self.keys_dir / NODE_KEY

    @property
    def node_pub(self) -> Path:
        return self.keys_dir / NODE_PUB

    @property
    def identity_key(self) -> Path:
        return self.keys_dir / IDENTITY_KEY

    @property
    def identity_pub(self) -> Path:
        return self.keys_dir / IDENTITY_PUB

    def all(self) -> tuple[Path, Path, Path, Path]:
        return self.node_key, self.node_pub, self.identity_key, self.identity_pub


def fingerprint(public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> str:
    """OpenSSH's fingerprint of a public key: ``SHA256:`` + unpadded base64 of
    SHA-256(the key's OpenSSH wire encoding)."""
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    blob = base64.b64decode(line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def _openssh_line(public_key: ec.EllipticCurvePublicKey, comment: str) -> bytes:
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return line + f" {comment}\n".encode()


def check_site_id(site_id: str) -> str:
    """A site id usable as a file name: letters, digits, ``.``, ``_``, ``-`` (100 at most)."""
    if not _SITE_ID.match(site_id):
        raise NodeAuthError(
            f"site id {site_id!r}: use letters, digits, '.', '_' and '-' only, starting with a "
            "letter or digit (the id of the site's site.toml)"
        )
    return site_id


def init_site_keys(keys_dir: str | Path, site_id: str, *, force: bool = False) -> SiteKeyFiles:
    """Create a site's node authentication and identity key pairs in ``keys_dir``.

    Existing key files are replaced only with ``force`` (a replaced node key must be
    registered again by the coordinator). Private keys are written with mode 0600 and the
    folder with 0700.
    """
    files = SiteKeyFiles(Path(keys_dir))
    existing = [str(p) for p in files.all() if p.exists()]
    if existing and not force:
        raise NodeAuthError(
            f"{', '.join(existing)} already exist(s); pass --force to make new keys "
            "(the coordinator must then register the new node.pub)"
        )
    files.keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(files.keys_dir, 0o700)

    node = ec.generate_private_key(NODE_CURVE())
    node_private = node.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    identity = ed25519.Ed25519PrivateKey.generate()
    identity_private = identity.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    identity_public = identity.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_private_key(files.node_key, node_private, force=True)
    write_public_file(
        files.node_pub, _openssh_line(node.public_key(), f"fedrad-site:{site_id}"), force=True
    )
    write_private_key(files.identity_key, identity_private, force=True)
    write_public_file(files.identity_pub, identity_public, force=True)
    return files


def load_node_public_key(path: str | Path) -> ec.EllipticCurvePublicKey:
    """A SuperNode public key from a one-line OpenSSH file, on a NIST curve as Flower needs."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NodeAuthError(f"{path}: public key file not found") from None
    except OSError as exc:
        raise NodeAuthError(f"{path}: cannot read the public key ({exc})") from None
    try:
        key = serialization.load_ssh_public_key(data.strip())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise NodeAuthError(
            f"{path}: not an OpenSSH public key line ({exc}); send the node.pub that "
            "`fedrad site init` wrote into the site's keys folder"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, NIST_CURVES):
        raise NodeAuthError(
            f"{path}: Flower authenticates SuperNodes with ECDSA keys on a NIST curve "
            "(P-256/384/521); this is another kind of key. Use the node.pub of `fedrad site init`"
        )
    return key


def load_node_private_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """The site's node private key (OpenSSH format), refused when others may read it."""
    path = Path(path)
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise NodeAuthError(
            f"{path}: node authentication key not found; create the site's keys with "
            "`fedrad site init SITE.toml`"
        ) from None
    except OSError as exc:
        raise NodeAuthError(f"{path}: cannot read the node key ({exc})") from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise NodeAuthError(
            f"{path}: the node's private key is readable by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise NodeAuthError(
            f"{path}: not an unencrypted OpenSSH private key ({exc}); "
            "make one with `fedrad site init SITE.toml --force`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, NIST_CURVES):
        raise NodeAuthError(f"{path}: not an ECDSA key on a NIST curve, which Flower needs")
    return key


def load_identity_public_key(path: str | Path) -> ed25519.Ed25519PublicKey:
    """A site's Ed25519 identity public key (PEM)."""
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise NodeAuthError(f"{path}: identity public key not found") from None
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise NodeAuthError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise NodeAuthError(f"{path}: not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class RegisteredSite:
    """A site in the coordinator's register: its id, public key file and fingerprint."""

    site_id: str
    path: Path
    fingerprint: str


def register_site(
    nodes_dir: str | Path, site_id: str, public_key_file: str | Path, *, force: bool = False
) -> RegisteredSite:
    """Add a site's node public key to the register ``nodes_dir/SITE_ID.pub``.

    Refuses a key that is not a Flower node key, a site already registered (unless ``force``,
    which replaces its key) and a key already registered for another site.
    """
    check_site_id(site_id)
    key = load_node_public_key(public_key_file)
    digest = fingerprint(key)
    nodes_dir = Path(nodes_dir)
    target = nodes_dir / f"{site_id}.pub"
    if target.exists() and not force:
        raise NodeAuthError(
            f"site {site_id!r} is already registered ({target}); pass --force to replace its key"
        )
    for other in registered_sites(nodes_dir):
        if other.fingerprint == digest and other.site_id != site_id:
            raise NodeAuthError(
                f"{public_key_file}: this key ({digest}) is already registered for site "
                f"{other.site_id!r}; every site needs its own key (`fedrad site init`)"
            )
    nodes_dir.mkdir(parents=True, exist_ok=True)
    write_public_file(target, _openssh_line(key, f"fedrad-site:{site_id}"), force=True)
    return RegisteredSite(site_id, target, digest)


def registered_sites(nodes_dir: str | Path) -> list[RegisteredSite]:
    """The sites in the register ``nodes_dir`` (``SITE_ID.pub`` files), by site id.

    An unreadable key file is an error, not skipped: a register must not shrink silently.
    """
    nodes_dir = Path(nodes_dir)
    if not nodes_dir.is_dir():
        return []
    sites = []
    for path in sorted(nodes_dir.glob("*.pub")):
        key = load_node_public_key(path)
        sites.append(RegisteredSite(path.stem, path, fingerprint(key)))
    return sites


def register_identity(
    identities_dir: str | Path,
    site_id: str,
    identity_file: str | Path,
    *,
    force: bool = False,
) -> RegisteredSite:
    """Add a site's Ed25519 identity public key to ``identities_dir/SITE_ID.pub``, the folder
    the ServerApp reads as its site registry; same refusals as :func:`register_site`."""
    from fedrad.secure.identity import fingerprint as identity_fingerprint

    check_site_id(site_id)
    key = load_identity_public_key(identity_file)
    digest = identity_fingerprint(key)
    identities_dir = Path(identities_dir)
    target = identities_dir / f"{site_id}.pub"
    if target.exists() and not force:
        raise NodeAuthError(
            f"site {site_id!r} already has an identity key ({target}); pass --force to replace it"
        )
    for path in sorted(identities_dir.glob("*.pub")) if identities_dir.is_dir() else []:
        if path.stem != site_id and load_identity_public_key(path) == key:
            raise NodeAuthError(
                f"{identity_file}: this identity key ({digest}) is already registered for site "
                f"{path.stem!r}; every site needs its own key (`fedrad site init`)"
            )
    identities_dir.mkdir(parents=True, exist_ok=True)
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_public_file(target, pem, force=True)
    return RegisteredSite(site_id, target, digest)
