"""A site's keys (``fedrad site init``) and the coordinator's register of sites, checked
against Flower 1.41's own key loaders and signature primitives and against ``ssh-keygen``."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import (
    bytes_to_public_key,
    public_key_to_bytes,
    sign_message,
    verify_signature,
)

from fedrad.secure.node_auth import (
    NodeAuthError,
    fingerprint,
    init_site_keys,
    load_identity_public_key,
    load_node_private_key,
    load_node_public_key,
    register_identity,
    register_site,
    registered_sites,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_site_keys_are_what_flower_loads(tmp_path: Path) -> None:
    files = init_site_keys(tmp_path / "keys", "north")
    assert _mode(files.keys_dir) == 0o700
    assert _mode(files.node_key) == 0o600 and _mode(files.identity_key) == 0o600
    assert files.node_pub.read_text().endswith(" fedrad-site:north\n")

    # The SuperNode reads its key with load_ssh_private_key and wants an EC key.
    private = serialization.load_ssh_private_key(files.node_key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    # `flwr supernode register` accepts the public key file as it is.
    registered = try_load_public_key(files.node_pub)
    assert registered == public_key_to_bytes(private.public_key())
    # And the SuperLink verifies the SuperNode's signed timestamps with it.
    signature = sign_message(private, b"2026-01-01T00:00:00+00:00")
    assert verify_signature(
        bytes_to_public_key(registered), b"2026-01-01T00:00:00+00:00", signature
    )
    assert load_node_private_key(files.node_key).public_key() == load_node_public_key(
        files.node_pub
    )

    identity = serialization.load_pem_private_key(files.identity_key.read_bytes(), None)
    assert isinstance(identity, ed25519.Ed25519PrivateKey)
    assert load_identity_public_key(files.identity_pub) == identity.public_key()


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_fingerprint_is_the_one_ssh_keygen_prints(tmp_path: Path) -> None:
    files = init_site_keys(tmp_path / "keys", "north")
    done = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(files.node_pub)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split()[1] == fingerprint(load_node_public_key(files.node_pub))


def test_existing_keys_are_kept_unless_forced(tmp_path: Path) -> None:
    files = init_site_keys(tmp_path / "keys", "north")
    before = files.node_pub.read_bytes()
    with pytest.raises(NodeAuthError, match=r"already exist.*--force"):
        init_site_keys(tmp_path / "keys", "north")
    assert files.node_pub.read_bytes() == before
    init_site_keys(tmp_path / "keys", "north", force=True)
    assert files.node_pub.read_bytes() != before


def test_an_exposed_or_foreign_private_key_is_refused(tmp_path: Path) -> None:
    files = init_site_keys(tmp_path / "keys", "north")
    os.chmod(files.node_key, 0o644)
    with pytest.raises(NodeAuthError, match="chmod 600"):
        load_node_private_key(files.node_key)
    with pytest.raises(NodeAuthError, match="fedrad site init"):
        load_node_private_key(tmp_path / "missing.key")
    files.identity_key.replace(tmp_path / "pem.key")  # a PEM key, not OpenSSH
    with pytest.raises(NodeAuthError, match="not an unencrypted OpenSSH private key"):
        load_node_private_key(tmp_path / "pem.key")


def test_register_stores_the_key_and_refuses_duplicates(tmp_path: Path) -> None:
    nodes = tmp_path / "server" / "nodes"
    north = init_site_keys(tmp_path / "north", "north")
    south = init_site_keys(tmp_path / "south", "south")
    site = register_site(nodes, "north", north.node_pub)
    assert site.path == nodes / "north.pub"
    assert site.fingerprint == fingerprint(load_node_public_key(north.node_pub))
    register_site(nodes, "south", south.node_pub)
    assert [s.site_id for s in registered_sites(nodes)] == ["north", "south"]

    with pytest.raises(NodeAuthError, match=r"already registered.*--force"):
        register_site(nodes, "north", south.node_pub)
    with pytest.raises(NodeAuthError, match="already registered for site 'north'"):
        register_site(nodes, "east", north.node_pub)
    with pytest.raises(NodeAuthError, match="letters, digits"):
        register_site(nodes, "../evil", north.node_pub)
    replaced = register_site(
        nodes, "north", init_site_keys(tmp_path / "n2", "n").node_pub, force=True
    )
    assert replaced.fingerprint != site.fingerprint
    assert registered_sites(tmp_path / "nowhere") == []


def test_register_refuses_keys_flower_cannot_use(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    ed = tmp_path / "ed.pub"
    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    with pytest.raises(NodeAuthError, match="NIST curve"):
        register_site(nodes, "ed", ed)
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(NodeAuthError, match="not an OpenSSH public key line"):
        register_site(nodes, "rsa", pem)
    with pytest.raises(NodeAuthError, match="not found"):
        register_site(nodes, "gone", tmp_path / "gone.pub")
    assert not nodes.exists()

    nodes.mkdir()
    (nodes / "broken.pub").write_text("garbage\n")
    with pytest.raises(NodeAuthError, match=r"broken\.pub"):
        registered_sites(nodes)


def test_identity_register_refuses_foreign_and_shared_keys(tmp_path: Path) -> None:
    identities = tmp_path / "identities"
    north = init_site_keys(tmp_path / "north", "north")
    site = register_identity(identities, "north", north.identity_pub)
    assert site.path.read_bytes() == north.identity_pub.read_bytes()
    assert len(site.fingerprint) == 64  # hex SHA-256 of the raw key, as identity.py shows it
    with pytest.raises(NodeAuthError, match="already registered for site 'north'"):
        register_identity(identities, "south", north.identity_pub)
    with pytest.raises(NodeAuthError, match="--force"):
        register_identity(identities, "north", north.identity_pub)
    with pytest.raises(NodeAuthError, match="not a PEM public key"):
        register_identity(identities, "east", north.node_pub)  # an OpenSSH node key
