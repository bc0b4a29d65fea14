"""Site identity keys, the server's sealing key and the register of sites, on real files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedrad.errors import FedradError
from fedrad.secure.identity import (
    IDENTITY_KEY,
    IDENTITY_PUB,
    SEALING_KEY,
    SEALING_PUB,
    KeyFileError,
    SiteRegistry,
    create_identity,
    create_sealing_key,
    fingerprint,
    generate_identity,
    generate_sealing_key,
    load_identity,
    load_identity_public,
    load_sealing_key,
    load_sealing_public,
    public_bytes,
    write_private_key,
    write_public_key,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_identity_writes_private_0600_public_0644_and_loads_back(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    key = create_identity(keys)
    assert _mode(keys / IDENTITY_KEY) == 0o600
    assert _mode(keys / IDENTITY_PUB) == 0o644
    loaded = load_identity(keys / IDENTITY_KEY)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert public_bytes(loaded) == public_bytes(key)
    public = load_identity_public(keys / IDENTITY_PUB)
    assert isinstance(public, Ed25519PublicKey)
    message = b"round 3 update"
    public.verify(loaded.sign(message), message)


def test_create_sealing_key_round_trip(tmp_path: Path) -> None:
    key = create_sealing_key(tmp_path)
    assert _mode(tmp_path / SEALING_KEY) == 0o600
    loaded = load_sealing_key(tmp_path / SEALING_KEY)
    public = load_sealing_public(tmp_path / SEALING_PUB)
    assert isinstance(loaded, X25519PrivateKey) and isinstance(public, X25519PublicKey)
    assert public_bytes(public) == public_bytes(key) == public_bytes(loaded)


def test_private_key_is_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_private_key(generate_identity(), tmp_path / "id.key")
    finally:
        os.umask(old)
    assert _mode(path) == 0o600


def test_refuses_to_overwrite_keys_unless_asked(tmp_path: Path) -> None:
    first = create_identity(tmp_path)
    with pytest.raises(KeyFileError, match="already exists"):
        create_identity(tmp_path)
    with pytest.raises(KeyFileError, match="already exists"):
        write_public_key(generate_identity(), tmp_path / IDENTITY_PUB)
    assert public_bytes(load_identity(tmp_path / IDENTITY_KEY)) == public_bytes(first)
    second = create_identity(tmp_path, overwrite=True)
    assert public_bytes(load_identity(tmp_path / IDENTITY_KEY)) == public_bytes(second)
    assert public_bytes(second) != public_bytes(first)
    assert _mode(tmp_path / IDENTITY_KEY) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_password_protected_private_key(tmp_path: Path) -> None:
    key = generate_sealing_key()
    path = write_private_key(key, tmp_path / "sealing.key", password=b"correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    loaded = load_sealing_key(path, password=b"correct horse")
    assert public_bytes(loaded) == public_bytes(key)
    with pytest.raises(KeyFileError, match=r"sealing\.key"):
        load_sealing_key(path)
    with pytest.raises(KeyFileError, match=r"sealing\.key"):
        load_sealing_key(path, password=b"wrong")


def test_missing_key_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        KeyFileError, match=r"identity\.key: site identity key not found.*site init"
    ):
        load_identity(tmp_path / "identity.key")
    with pytest.raises(KeyFileError, match="not found"):
        load_sealing_public(tmp_path / "sealing.pub")


@pytest.mark.parametrize(
    "content", [b"", b"   \n", b"not a key at all", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"]
)
def test_corrupt_private_key_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=str(path)):
        load_identity(path)


def test_corrupt_public_key_file(tmp_path: Path) -> None:
    path = tmp_path / "a.pub"
    path.write_bytes(b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_identity_public(path)


def test_wrong_kind_of_key_is_refused(tmp_path: Path) -> None:
    create_identity(tmp_path / "site")
    create_sealing_key(tmp_path / "server")
    with pytest.raises(KeyFileError, match="not the server sealing key"):
        load_sealing_key(tmp_path / "site" / IDENTITY_KEY)
    with pytest.raises(KeyFileError, match="not the site identity key"):
        load_identity(tmp_path / "server" / SEALING_KEY)
    with pytest.raises(KeyFileError, match="not the site identity public key"):
        load_identity_public(tmp_path / "server" / SEALING_PUB)
    with pytest.raises(KeyFileError, match="not the server sealing public key"):
        load_sealing_public(tmp_path / "site" / IDENTITY_PUB)


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    create_identity(tmp_path)
    path = tmp_path / IDENTITY_KEY
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_identity(path)


def test_a_folder_instead_of_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "identity.pub").mkdir()
    with pytest.raises(KeyFileError, match="is a folder"):
        load_identity_public(tmp_path / "identity.pub")


def test_fingerprint_is_sha256_hex_of_the_raw_public_key() -> None:
    key = generate_identity()
    fp = fingerprint(key)
    assert fp == fingerprint(key.public_key())
    assert fp == hashlib.sha256(public_bytes(key)).hexdigest()
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fingerprint(generate_identity()) != fp
    sealing = generate_sealing_key()
    assert fingerprint(sealing) == hashlib.sha256(public_bytes(sealing.public_key())).hexdigest()


def test_registry_round_trip_through_a_folder(tmp_path: Path) -> None:
    keys = {s: generate_identity() for s in ("hospital-a", "hospital_b", "c.3")}
    registry = SiteRegistry({s: k.public_key() for s, k in keys.items()})
    paths = registry.save(tmp_path / "register")
    assert sorted(p.name for p in paths) == ["c.3.pub", "hospital-a.pub", "hospital_b.pub"]
    (tmp_path / "register" / "README.txt").write_text("not a key; ignored")
    loaded = SiteRegistry.from_dir(tmp_path / "register")
    assert sorted(loaded) == sorted(keys)
    for site, key in keys.items():
        assert public_bytes(loaded[site]) == public_bytes(key)
        assert loaded.site_with_key(key.public_key()) == site
    assert loaded.fingerprints()["hospital-a"] == fingerprint(keys["hospital-a"])
    assert loaded.get("nobody") is None and "nobody" not in loaded


def test_registry_refuses_one_key_for_two_sites_and_two_keys_for_one_site() -> None:
    key = generate_identity().public_key()
    registry = SiteRegistry({"a": key})
    registry.add("a", key)  # the same pair again is fine
    with pytest.raises(KeyFileError, match="already registered for site 'a'"):
        registry.add("b", key)
    with pytest.raises(KeyFileError, match="already registered with another key"):
        registry.add("a", generate_identity().public_key())
    with pytest.raises(KeyFileError, match="Ed25519"):
        registry.add("c", generate_sealing_key().public_key())  # type: ignore[arg-type]
    assert len(registry) == 1


def test_registry_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such folder"):
        SiteRegistry.from_dir(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyFileError, match=r"no SITE_ID\.pub"):
        SiteRegistry.from_dir(tmp_path / "empty")
    bad = tmp_path / "bad"
    write_public_key(generate_identity(), bad / "a.pub")
    (bad / "b.pub").write_text("junk")
    with pytest.raises(KeyFileError, match=r"b\.pub"):
        SiteRegistry.from_dir(bad)  # an unreadable entry is an error, never skipped
    wrong = tmp_path / "wrong"
    write_public_key(generate_sealing_key(), wrong / "a.pub")
    with pytest.raises(KeyFileError, match="not the site identity public key"):
        SiteRegistry.from_dir(wrong)
    odd = tmp_path / "odd"
    write_public_key(generate_identity(), odd / "-x.pub")
    with pytest.raises(KeyFileError, match="site id '-x'"):
        SiteRegistry.from_dir(odd)


def test_key_errors_are_fedrad_errors() -> None:
    assert issubclass(KeyFileError, FedradError)
