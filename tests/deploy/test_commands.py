"""``fedrad server`` and ``fedrad site`` commands that need no running federation: key and
certificate setup (``server init``, ``server register``, ``site init``), the refusals of
``server start`` and ``site join`` before any process starts, the explicit ``--insecure`` rule
and its warning, and ``fedrad site check`` (the server's pre-study check, run at the site)."""

from __future__ import annotations

import argparse
import csv
import stat
from pathlib import Path

import pytest

from fedrad.commands import server, site
from fedrad.errors import FedradError
from fedrad.federation.config import SiteConfig
from fedrad.secure.identity import SiteRegistry, load_identity_public
from fedrad.simulation.harness import write_site_toml
from fedrad.site.policy import SitePolicy
from tests.conftest import DIG_PHANTOM_IMAGE, DIG_PHANTOM_MASK
from tests.federation.helpers import write_site


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fedrad")
    sub = parser.add_subparsers()
    server.add_parser(sub)
    site.add_parser(sub)
    args = parser.parse_args(argv)
    return args.run(args)


def _study(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "study.toml"
    path.write_text('[study]\nname = "check"\nmin_cases = 10\n' + text)
    return path


def test_server_start_without_certificates_names_init_and_insecure(tmp_path: Path) -> None:
    with pytest.raises(FedradError, match=r"no TLS certificates.*fedrad server init.*--insecure"):
        _run(["server", "start", str(_study(tmp_path))])


def test_site_join_without_the_ca_certificate_names_root_cert_and_insecure(
    tmp_path: Path,
) -> None:
    ok = write_site(tmp_path, "ok", 20, 1)
    with pytest.raises(FedradError, match=r"ca.crt is missing.*--root-cert.*--insecure"):
        _run(["site", "join", str(ok.root / "site.toml"), "--superlink", "127.0.0.1:9092"])


def test_site_join_without_a_node_key_names_site_init(tmp_path: Path) -> None:
    ok = write_site(tmp_path, "ok", 20, 1)
    tls = tmp_path / "server"
    _run(["server", "init", str(tls)])
    argv = ["site", "join", str(ok.root / "site.toml"), "--superlink", "127.0.0.1:9092"]
    with pytest.raises(
        FedradError, match=r"node.key: node authentication key not found.*site init"
    ):
        _run([*argv, "--root-cert", str(tls / "tls" / "ca.crt")])


def test_insecure_and_tls_options_exclude_each_other(tmp_path: Path) -> None:
    study = str(_study(tmp_path))
    with pytest.raises(SystemExit):
        _run(["server", "start", study, "--insecure", "--tls-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        _run(["site", "join", "site.toml", "--superlink", "h:1", "--insecure", "--root-cert", "x"])


def test_insecure_mode_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = write_site(tmp_path, "ok", 20, 1)
    with pytest.raises(FedradError, match="HOST:PORT"):
        _run(["site", "join", str(ok.root / "site.toml"), "--superlink", "localhost", "--insecure"])
    assert "INSECURE MODE: no TLS and no SuperNode authentication" in capsys.readouterr().err
    with pytest.raises(FedradError, match=r"no pyproject\.toml"):
        _run(["server", "start", str(_study(tmp_path)), "--insecure", "--app", str(tmp_path)])
    assert "any machine that reaches this port can join" in capsys.readouterr().err


def test_server_init_and_register_then_start_checks_the_register(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server_dir = tmp_path / "server"
    study = server_dir / "study.toml"
    server_dir.mkdir()
    study.write_text('[study]\nname = "s"\nmin_cases = 10\n[training]\nmin_sites = 2\n')
    assert _run(["server", "init", str(server_dir), "--host", "fl.example.org"]) == 0
    out = capsys.readouterr().out
    assert str(server_dir / "tls" / "ca.crt") in out and "fl.example.org" in out
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE((server_dir / "tls" / name).stat().st_mode) == 0o600
    with pytest.raises(FedradError, match="--force"):
        _run(["server", "init", str(server_dir)])

    # A study of two sites with one registered site is refused before the SuperLink starts.
    north = write_site(tmp_path / "sites", "north", 20, 1)
    assert _run(["site", "init", str(north.root / "site.toml")]) == 0
    out = capsys.readouterr().out
    assert "fingerprint SHA256:" in out and "node.pub" in out
    node_pub = north.keys_dir / "node.pub"
    identity_pub = north.keys_dir / "identity.pub"
    argv = ["server", "register", "north", str(node_pub), "--server-dir", str(server_dir)]
    assert _run([*argv, "--identity", str(identity_pub)]) == 0
    out = capsys.readouterr().out
    assert "site north registered" in out and "identity key fingerprint" in out
    assert (server_dir / "nodes" / "north.pub").is_file()
    # The identities folder is what the ServerApp's site registry reads.
    registry = SiteRegistry.from_dir(server_dir / "identities")
    assert list(registry) == ["north"]
    assert registry["north"] == load_identity_public(identity_pub)
    with pytest.raises(FedradError, match="--force"):
        _run(argv)
    with pytest.raises(FedradError, match=r"needs 2 site\(s\) but 1 are registered"):
        _run(["server", "start", str(study)])


def test_site_init_writes_the_keys_into_keys_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = write_site(tmp_path, "ok", 20, 1)
    assert _run(["site", "init", str(ok.root / "site.toml")]) == 0
    names = sorted(p.name for p in ok.keys_dir.iterdir())
    assert names == ["identity.key", "identity.pub", "node.key", "node.pub"]
    assert stat.S_IMODE((ok.keys_dir / "identity.key").stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert out.count("fingerprint SHA256:") == 1  # the node key, as ssh-keygen -lf prints it
    assert out.count("fingerprint ") == 2
    with pytest.raises(FedradError, match="--force"):
        _run(["site", "init", str(ok.root / "site.toml")])


def test_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["site"]) == 2
    assert "check" in capsys.readouterr().out


def test_site_check_accepts_a_site_that_can_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = write_site(tmp_path, "ok", 30, 1)
    assert (
        _run(["site", "check", str(ok.root / "site.toml"), "--study", str(_study(tmp_path))]) == 0
    )
    out = capsys.readouterr().out
    assert "site ok can serve study 'check'" in out
    assert "30" in out  # usable cases


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"single_class": True}, "a single class"),
        ({"label_name": "outcome"}, "column 'label' (study 'label') is missing"),
        ({"n": 6}, "only 6 usable case(s), the study needs at least 10"),
    ],
)
def test_site_check_refuses_with_the_servers_reason(
    tmp_path: Path, kwargs: dict, reason: str
) -> None:
    options = {"n": 30, **kwargs}
    bad = write_site(tmp_path, "bad", options.pop("n"), 2, **options)
    with pytest.raises(FedradError, match="site bad cannot serve study 'check'") as info:
        _run(["site", "check", str(bad.root / "site.toml"), "--study", str(_study(tmp_path))])
    assert reason in str(info.value)


def test_site_check_extracts_a_manifest_site_once_and_caches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "imaging-site"
    folder.mkdir()
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "image", "mask", "label"])
        for i in range(10):
            writer.writerow([f"c{i}", DIG_PHANTOM_IMAGE, DIG_PHANTOM_MASK, i % 2])
        writer.writerow(["broken", folder / "missing.nii.gz", DIG_PHANTOM_MASK, 1])
    write_site_toml(folder, "imaging-site", manifest="manifest.csv", policy=SitePolicy.sandbox())
    study = _study(tmp_path, '\n[features]\nfamilies = ["stat", "morph"]\n')
    argv = ["site", "check", str(folder / "site.toml"), "--study", str(study)]

    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "left out" in out and "broken" in out
    cache = SiteConfig.from_file(folder / "site.toml").cache_dir
    cached = sorted(cache.glob("features-*.csv"))
    assert cached, f"no feature cache in {cache}"
    stamp = cached[0].stat().st_mtime_ns
    assert _run(argv) == 0
    assert cached[0].stat().st_mtime_ns == stamp  # second check read the cache


def test_supernode_refuses_a_bad_site_or_address_before_starting(tmp_path: Path) -> None:
    from fedrad.deploy import DeploymentError
    from fedrad.deploy.supernode import SuperNode
    from fedrad.federation.config import ConfigError

    with pytest.raises(ConfigError, match="site file not found"):
        SuperNode.start(tmp_path / "nowhere" / "site.toml", "127.0.0.1:9092", insecure=True)
    ok = write_site(tmp_path, "ok", 20, 1)
    with pytest.raises(DeploymentError, match="HOST:PORT"):
        SuperNode.start(ok.root / "site.toml", "localhost", insecure=True)
