"""End-to-end sealing in a deployment, without a running federation: the sealing key of
``fedrad server init`` (made, kept, replaced), the pins of ``fedrad site init
--server-sealing-key / --root-cert``, and the run config ``fedrad server start`` derives from
them (:func:`fedrad.deploy.sealing_setup.plan_sealing`), including its refusals before any
process starts. ``fedrad site audit`` is reachable as a ``fedrad site`` subcommand."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from fedrad.commands import server, site
from fedrad.deploy.sealing_setup import PinError, plan_sealing
from fedrad.errors import FedradError
from fedrad.federation.config import StudyConfig
from fedrad.federation.sealing import load_site_sealing
from fedrad.secure.certificates import CertificateError
from fedrad.secure.identity import (
    KeyFileError,
    create_sealing_key,
    fingerprint,
    load_sealing_key,
    load_sealing_public,
    public_bytes,
)
from tests.federation.helpers import write_site


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fedrad")
    sub = parser.add_subparsers()
    server.add_parser(sub)
    site.add_parser(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.run(args)


def _words(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def _study(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.toml"
    path.write_text('[study]\nname = "s"\nmin_cases = 10\n[training]\nmin_sites = 1\n' + extra)
    return path


# --- fedrad server init ----------------------------------------------------------------------


def test_server_init_makes_the_sealing_key_and_names_what_sites_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server_dir = tmp_path / "server"
    assert _run(["server", "init", server_dir]) == 0
    key, pub = server_dir / "keys" / "sealing.key", server_dir / "keys" / "sealing.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    private = load_sealing_key(key)
    assert public_bytes(load_sealing_public(pub)) == public_bytes(private)
    out = _words(capsys.readouterr().out)
    assert f"fingerprint {fingerprint(private)}" in out
    assert str(pub) in out and str(server_dir / "tls" / "ca.crt") in out
    assert "--root-cert ca.crt --server-sealing-key sealing.pub" in out
    assert "--identity identity.pub" in out

    # A second init refuses; --keep-ca keeps the CA and the sealing key; --force replaces both.
    with pytest.raises(FedradError, match="--force"):
        _run(["server", "init", server_dir])
    ca = (server_dir / "tls" / "ca.crt").read_bytes()
    sealing = key.read_bytes()
    assert _run(["server", "init", server_dir, "--keep-ca", "--force", "--host", "h.example"]) == 0
    assert "sealing key kept" in capsys.readouterr().out
    assert key.read_bytes() == sealing and (server_dir / "tls" / "ca.crt").read_bytes() == ca
    assert _run(["server", "init", server_dir, "--force"]) == 0
    assert key.read_bytes() != sealing and (server_dir / "tls" / "ca.crt").read_bytes() != ca


def test_keep_ca_makes_a_missing_sealing_key(tmp_path: Path) -> None:
    """A server folder from before sealing: --keep-ca adds the key and leaves the CA alone."""
    server_dir = tmp_path / "server"
    _run(["server", "init", server_dir])
    for name in ("sealing.key", "sealing.pub"):
        (server_dir / "keys" / name).unlink()
    ca = (server_dir / "tls" / "ca.crt").read_bytes()
    assert _run(["server", "init", server_dir, "--keep-ca", "--force"]) == 0
    assert load_sealing_key(server_dir / "keys" / "sealing.key")
    assert (server_dir / "tls" / "ca.crt").read_bytes() == ca


def test_sealing_only_leaves_the_certificates_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server_dir = tmp_path / "server"
    _run(["server", "init", server_dir])
    tls = {p.name: p.read_bytes() for p in (server_dir / "tls").iterdir()}
    key = server_dir / "keys" / "sealing.key"
    before = key.read_bytes()
    with pytest.raises(KeyFileError, match=r"sealing.key.*already exist.*--force"):
        _run(["server", "init", server_dir, "--sealing-only"])
    assert _run(["server", "init", server_dir, "--sealing-only", "--force"]) == 0
    assert "every site must pin the new sealing.pub" in _words(capsys.readouterr().out)
    assert key.read_bytes() != before
    assert {p.name: p.read_bytes() for p in (server_dir / "tls").iterdir()} == tls
    with pytest.raises(FedradError, match="--host"):
        _run(["server", "init", server_dir, "--sealing-only", "--host", "h.example"])
    with pytest.raises(SystemExit):
        _run(["server", "init", server_dir, "--sealing-only", "--keep-ca"])


def test_an_existing_sealing_key_is_refused_before_any_certificate_is_written(
    tmp_path: Path,
) -> None:
    server_dir = tmp_path / "server"
    create_sealing_key(server_dir / "keys")
    with pytest.raises(KeyFileError, match="--force"):
        _run(["server", "init", server_dir])
    assert not (server_dir / "tls").exists()


# --- fedrad site init: the pins --------------------------------------------------------------


@pytest.fixture
def coordinator(tmp_path: Path) -> Path:
    """A server folder made by `fedrad server init`."""
    server_dir = tmp_path / "server"
    _run(["server", "init", server_dir])
    return server_dir


def test_site_init_pins_the_sealing_key_and_the_ca(
    tmp_path: Path, coordinator: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    north = write_site(tmp_path / "sites", "north", 20, 1)
    sealing_pub = coordinator / "keys" / "sealing.pub"
    ca = coordinator / "tls" / "ca.crt"
    argv = ["site", "init", north.root / "site.toml"]
    assert _run([*argv, "--server-sealing-key", sealing_pub, "--root-cert", ca]) == 0
    out = _words(capsys.readouterr().out)
    server_print = fingerprint(load_sealing_public(sealing_pub))
    assert f"server sealing key pinned: {north.keys_dir / 'server-sealing.pub'}" in out
    assert f"fingerprint {server_print}" in out
    assert "study CA certificate pinned" in out and "SHA-256 " in out
    assert (north.keys_dir / "ca.crt").read_bytes() == ca.read_bytes()
    # What the deployed ClientApp loads: the site now requires sealing, to this key only.
    sealing = load_site_sealing("north", north.keys_dir)
    assert sealing.required
    assert public_bytes(sealing.server_public) == public_bytes(load_sealing_public(sealing_pub))

    # Pinning again with existing keys keeps them; the same files are "already pinned".
    node_key = (north.keys_dir / "node.key").read_bytes()
    assert _run([*argv, "--server-sealing-key", sealing_pub]) == 0
    out = _words(capsys.readouterr().out)
    assert "keys of site north kept" in out and "already pinned" in out
    assert (north.keys_dir / "node.key").read_bytes() == node_key


def test_site_init_pins_later_and_refuses_another_key(
    tmp_path: Path, coordinator: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    north = write_site(tmp_path / "sites", "north", 20, 1)
    argv = ["site", "init", north.root / "site.toml"]
    assert _run(argv) == 0
    out = _words(capsys.readouterr().out)
    assert "--server-sealing-key sealing.pub" in out and "--root-cert ca.crt" in out
    assert not (north.keys_dir / "server-sealing.pub").exists()
    assert _run([*argv, "--server-sealing-key", coordinator / "keys" / "sealing.pub"]) == 0
    pinned = (north.keys_dir / "server-sealing.pub").read_bytes()

    # Another server key (a substitute, or a new one the coordinator made) is refused.
    other = tmp_path / "other"
    create_sealing_key(other)
    with pytest.raises(PinError, match=r"already pins another server sealing key.*delete"):
        _run([*argv, "--server-sealing-key", other / "sealing.pub"])
    assert (north.keys_dir / "server-sealing.pub").read_bytes() == pinned
    # So is another CA.
    _run([*argv, "--root-cert", coordinator / "tls" / "ca.crt"])
    _run(["server", "init", tmp_path / "server2"])
    with pytest.raises(PinError, match="another study CA certificate"):
        _run([*argv, "--root-cert", tmp_path / "server2" / "tls" / "ca.crt"])


def test_site_init_checks_the_files_before_writing_keys(tmp_path: Path, coordinator: Path) -> None:
    north = write_site(tmp_path / "sites", "north", 20, 1)
    argv = ["site", "init", north.root / "site.toml"]
    # A site identity key is not a server sealing key (Ed25519, not X25519).
    south = write_site(tmp_path / "sites", "south", 20, 2)
    _run(["site", "init", south.root / "site.toml"])
    with pytest.raises(KeyFileError, match="not the server sealing public key"):
        _run([*argv, "--server-sealing-key", south.keys_dir / "identity.pub"])
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        _run([*argv, "--root-cert", coordinator / "keys" / "sealing.pub"])
    assert not north.keys_dir.exists()


# --- fedrad server start: the run config -----------------------------------------------------


def _register(server_dir: Path, tmp_path: Path, name: str, *, identity: bool = True) -> None:
    s = write_site(tmp_path / "sites", name, 20, 1)
    _run(["site", "init", s.root / "site.toml"])
    argv = ["server", "register", name, s.keys_dir / "node.pub", "--server-dir", server_dir]
    _run([*argv, "--identity", s.keys_dir / "identity.pub"] if identity else argv)


def test_plan_seals_when_the_key_and_identities_are_there(
    tmp_path: Path, coordinator: Path
) -> None:
    _register(coordinator, tmp_path, "north")
    key, identities = coordinator / "keys" / "sealing.key", coordinator / "identities"
    study = StudyConfig.from_file(_study(coordinator))
    plan = plan_sealing(study, key, identities, ["north"])
    assert plan.enabled and plan.warning is None
    assert plan.run_config == {
        "sealing-key": str(key.resolve()),
        "site-identities": str(identities.resolve()),
    }
    assert plan.sites == ("north",)
    assert plan.fingerprint == fingerprint(load_sealing_key(key))

    # Secure aggregation on: the server sees masked sums only, nothing is sealed or warned.
    secagg = study.with_secure_aggregation(enabled=True)
    plan = plan_sealing(secagg, key, identities, ["north"])
    assert not plan.enabled and plan.warning is None and "masked sums" in plan.note


def test_plan_warns_when_sealing_is_not_configured(tmp_path: Path, coordinator: Path) -> None:
    study = StudyConfig.from_file(_study(coordinator))
    plan = plan_sealing(study, tmp_path / "none.key", coordinator / "identities")
    assert not plan.enabled and plan.run_config == {}
    assert "no sealing key" in plan.warning and "--sealing-only" in plan.warning
    assert "protected by TLS only" in plan.warning
    plan = plan_sealing(study, coordinator / "keys" / "sealing.key", coordinator / "identities")
    assert not plan.enabled
    assert "no site identity key" in plan.warning and "--identity identity.pub" in plan.warning


def test_server_start_refuses_a_registered_site_without_identity(
    tmp_path: Path, coordinator: Path
) -> None:
    study = _study(coordinator)
    _register(coordinator, tmp_path, "north")
    _register(coordinator, tmp_path, "south", identity=False)
    with pytest.raises(KeyFileError, match=r"site\(s\) south may join but have no identity key"):
        _run(["server", "start", study])


def test_server_start_checks_the_sealing_key_it_is_given(tmp_path: Path, coordinator: Path) -> None:
    study = _study(coordinator)
    _register(coordinator, tmp_path, "north")
    elsewhere = tmp_path / "elsewhere"
    create_sealing_key(elsewhere)
    os.chmod(elsewhere / "sealing.key", 0o644)
    with pytest.raises(KeyFileError, match=r"readable by other users.*chmod 600"):
        _run(["server", "start", study, "--sealing-key", elsewhere / "sealing.key"])
    # --identities-dir names the register: an unreadable identity file stops the start.
    bad = tmp_path / "identities"
    bad.mkdir()
    (bad / "north.pub").write_text("not a key")
    with pytest.raises(KeyFileError, match=r"north\.pub: not a PEM public key"):
        _run(["server", "start", study, "--identities-dir", bad])


# --- fedrad site audit -----------------------------------------------------------------------


def test_site_audit_is_a_site_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    north = write_site(tmp_path / "sites", "north", 20, 1)
    with pytest.raises(FedradError, match="no egress log here"):
        _run(["site", "audit", north.root / "site.toml"])
    with pytest.raises(SystemExit):
        _run(["site", "audit", "--help"])
    assert "egress log" in capsys.readouterr().out
