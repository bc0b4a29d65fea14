"""Who signs a model update and who may open it: the keys of end-to-end sealing.

- A *site identity* is an Ed25519 signing key. The site keeps ``identity.key`` (PKCS#8 PEM,
  mode 0600) in its ``keys_dir`` and sends ``identity.pub`` (SubjectPublicKeyInfo PEM) to the
  coordinator, who files it as ``SITE_ID.pub`` in the folder the ServerApp reads as its
  :class:`SiteRegistry`.
- The ServerApp's *sealing key* is an X25519 key pair (``sealing.key`` 0600 / ``sealing.pub``).
  Sites encrypt their updates to its public key; a site pins that public key in its own
  ``keys_dir`` as ``server-sealing.pub`` so a relay cannot substitute another one.

Fingerprints for humans (read out over a second channel before a key is trusted) are the
SHA-256 of the 32-byte raw public key, in hex.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedrad.errors import FedradError
from fedrad.secure.files import write_owner_only

#: A site's identity private and public key files in its ``keys_dir``.
IDENTITY_KEY = "identity.key"
IDENTITY_PUB = "identity.pub"
#: The ServerApp's sealing private and public key files.
SEALING_KEY = "sealing.key"
SEALING_PUB = "sealing.pub"
#: The server's sealing public key as pinned in a site's ``keys_dir``.
SERVER_SEALING_PUB = "server-sealing.pub"

PublicKey = Ed25519PublicKey | X25519PublicKey
PrivateKey = Ed25519PrivateKey | X25519PrivateKey
_K = TypeVar("_K")

_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class KeyFileError(FedradError):
    """A key file is missing, unreadable, of the wrong kind, exposed, or would be overwritten."""


def generate_identity() -> Ed25519PrivateKey:
    """A fresh site identity (Ed25519 signing key)."""
    return Ed25519PrivateKey.generate()


def generate_sealing_key() -> X25519PrivateKey:
    """A fresh ServerApp sealing key (X25519 key agreement key)."""
    return X25519PrivateKey.generate()


def _public(key: PublicKey | PrivateKey) -> PublicKey:
    if isinstance(key, Ed25519PrivateKey | X25519PrivateKey):
        return key.public_key()
    return key


def public_bytes(key: PublicKey | PrivateKey) -> bytes:
    """The 32 raw bytes of a public key (of the private key's public half)."""
    return _public(key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: PublicKey | PrivateKey) -> str:
    """SHA-256 of the raw public key, 64 hex digits: what two people compare before trusting it."""
    return hashlib.sha256(public_bytes(key)).hexdigest()


def check_site_id(site_id: str) -> str:
    """A site id usable as a file name: letters, digits, ``.``, ``_``, ``-`` (100 at most)."""
    if not isinstance(site_id, str) or not _SITE_ID.match(site_id):
        raise KeyFileError(
            f"site id {site_id!r}: use letters, digits, '.', '_' and '-' only, starting with a "
            "letter or digit (the id in the site's site.toml)"
        )
    return site_id


# --- writing -------------------------------------------------------------------------------


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise KeyFileError(
            f"{path} already exists; refusing to overwrite a key (pass overwrite=True / --force "
            "to replace it, and register the new public key again)"
        )


def write_private_key(
    key: PrivateKey, path: str | Path, *, overwrite: bool = False, password: bytes | None = None
) -> Path:
    """Write ``key`` as PKCS#8 PEM readable by its owner only (mode 0600 from creation on).

    Encrypted with ``password`` when given. The file is written beside its target and renamed
    into place, so a reader never sees half a key; an existing file is replaced only with
    ``overwrite``.
    """
    path = Path(path)
    _refuse_existing(path, overwrite)
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    return write_owner_only(path, pem)


def write_public_key(
    key: PublicKey | PrivateKey, path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write the public half of ``key`` as SubjectPublicKeyInfo PEM (mode 0644)."""
    path = Path(path)
    _refuse_existing(path, overwrite)
    pem = _public(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    os.chmod(path, 0o644)
    return path


def create_identity(keys_dir: str | Path, *, overwrite: bool = False) -> Ed25519PrivateKey:
    """A new site identity written to ``keys_dir/identity.key`` (0600) and ``identity.pub``."""
    keys_dir = Path(keys_dir)
    for name in (IDENTITY_KEY, IDENTITY_PUB):
        _refuse_existing(keys_dir / name, overwrite)
    key = generate_identity()
    write_private_key(key, keys_dir / IDENTITY_KEY, overwrite=overwrite)
    write_public_key(key, keys_dir / IDENTITY_PUB, overwrite=overwrite)
    return key


def create_sealing_key(keys_dir: str | Path, *, overwrite: bool = False) -> X25519PrivateKey:
    """A new ServerApp sealing key written to ``keys_dir/sealing.key`` (0600) and ``sealing.pub``."""
    keys_dir = Path(keys_dir)
    for name in (SEALING_KEY, SEALING_PUB):
        _refuse_existing(keys_dir / name, overwrite)
    key = generate_sealing_key()
    write_private_key(key, keys_dir / SEALING_KEY, overwrite=overwrite)
    write_public_key(key, keys_dir / SEALING_PUB, overwrite=overwrite)
    return key


# --- loading -------------------------------------------------------------------------------


def _read(path: Path, what: str, fix: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: {what} not found; {fix}") from None
    except IsADirectoryError:
        raise KeyFileError(f"{path}: is a folder, expected the {what} file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the {what} ({exc})") from None
    if not data.strip():
        raise KeyFileError(f"{path}: the {what} file is empty; {fix}")
    return data


def _load_private(
    path: str | Path, kind: type[_K], what: str, fix: str, password: bytes | None
) -> _K:
    path = Path(path)
    data = _read(path, what, fix)
    if os.name == "posix":
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path}: the {what} is readable by other users (mode {mode:04o}); "
                f"run `chmod 600 {path}`"
            )
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:  # password given for a plain key, or missing for an encrypted one
        raise KeyFileError(f"{path}: {exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: not a readable PEM private key ({exc}); {fix}") from None
    if not isinstance(key, kind):
        raise KeyFileError(
            f"{path}: holds a {type(key).__name__}, not the {what} ({kind.__name__}); {fix}"
        )
    return key


def _load_public(path: str | Path, kind: type[_K], what: str, fix: str) -> _K:
    path = Path(path)
    data = _read(path, what, fix)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc}); {fix}") from None
    if not isinstance(key, kind):
        raise KeyFileError(
            f"{path}: holds a {type(key).__name__}, not the {what} ({kind.__name__}); {fix}"
        )
    return key


_SITE_FIX = "create the site's keys with `fedrad site init SITE.toml`"
_SERVER_FIX = "create the server's sealing key with `fedrad server init`"


def load_identity(path: str | Path, *, password: bytes | None = None) -> Ed25519PrivateKey:
    """A site's identity private key (``identity.key``); refused when others may read it."""
    return _load_private(path, Ed25519PrivateKey, "site identity key", _SITE_FIX, password)


def load_identity_public(path: str | Path) -> Ed25519PublicKey:
    """A site's identity public key (``identity.pub`` / a registry's ``SITE_ID.pub``)."""
    return _load_public(
        path, Ed25519PublicKey, "site identity public key", "send the site's identity.pub"
    )


def load_sealing_key(path: str | Path, *, password: bytes | None = None) -> X25519PrivateKey:
    """The ServerApp's sealing private key (``sealing.key``); refused when others may read it."""
    return _load_private(path, X25519PrivateKey, "server sealing key", _SERVER_FIX, password)


def load_sealing_public(path: str | Path) -> X25519PublicKey:
    """The ServerApp's sealing public key (``sealing.pub`` / a site's ``server-sealing.pub``)."""
    return _load_public(
        path,
        X25519PublicKey,
        "server sealing public key",
        "copy the coordinator's sealing.pub (compare its fingerprint first)",
    )


# --- the server's register of site identities ----------------------------------------------


class SiteRegistry(Mapping[str, Ed25519PublicKey]):
    """The ServerApp's register: site id -> that site's Ed25519 identity public key.

    A site id appears once and a key belongs to one site only (one hospital with two ids would
    count twice in an average). Read-only once built, so it may be shared between threads.
    """

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None):
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._owner: dict[bytes, str] = {}
        for site_id, key in (keys or {}).items():
            self.add(site_id, key)

    def add(self, site_id: str, key: Ed25519PublicKey) -> None:
        """Register ``key`` for ``site_id``; the same pair again is a no-op."""
        if not isinstance(site_id, str) or not site_id:
            raise KeyFileError(f"site id {site_id!r}: a site id is a non-empty string")
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(
                f"site {site_id!r}: a site identity is an Ed25519 public key, "
                f"not {type(key).__name__}"
            )
        raw = public_bytes(key)
        owner = self._owner.get(raw)
        if owner is not None and owner != site_id:
            raise KeyFileError(
                f"site {site_id!r}: this identity key ({fingerprint(key)}) is already registered "
                f"for site {owner!r}; every site needs its own identity key"
            )
        known = self._keys.get(site_id)
        if known is not None and public_bytes(known) != raw:
            raise KeyFileError(
                f"site {site_id!r} is already registered with another key "
                f"({fingerprint(known)}); remove it first to replace it"
            )
        self._keys[site_id] = key
        self._owner[raw] = site_id

    def site_with_key(self, key: Ed25519PublicKey) -> str | None:
        """The site registered with ``key``, if any."""
        return self._owner.get(public_bytes(key))

    def fingerprints(self) -> dict[str, str]:
        """Site id -> fingerprint of its identity key, for logs and the coordinator."""
        return {site_id: fingerprint(key) for site_id, key in self._keys.items()}

    def __getitem__(self, site_id: str) -> Ed25519PublicKey:
        return self._keys[site_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"SiteRegistry({sorted(self._keys)})"

    @classmethod
    def from_dir(cls, folder: str | Path) -> SiteRegistry:
        """Every ``SITE_ID.pub`` (Ed25519 PEM) in ``folder``; other files are ignored.

        An unreadable key file is an error, never skipped: a register must not shrink silently.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise KeyFileError(
                f"{folder}: no such folder of site identity keys; file each site's identity.pub "
                "there as SITE_ID.pub"
            )
        registry = cls()
        for path in sorted(folder.glob("*.pub")):
            site_id = check_site_id(path.stem)
            registry.add(site_id, load_identity_public(path))
        if not registry:
            raise KeyFileError(
                f"{folder}: holds no SITE_ID.pub identity key, so no site could contribute; "
                "file each site's identity.pub there as SITE_ID.pub"
            )
        return registry

    def save(self, folder: str | Path, *, overwrite: bool = False) -> list[Path]:
        """Write every site's key to ``folder/SITE_ID.pub`` (what :meth:`from_dir` reads)."""
        folder = Path(folder)
        return [
            write_public_key(key, folder / f"{check_site_id(site_id)}.pub", overwrite=overwrite)
            for site_id, key in self._keys.items()
        ]
