"""The Flower App, run config, node config and CLI connection files fedrad writes, read back by
Flower's own parsers (the ones ``flwr run``, ``flower-supernode`` and ``flwr ls`` use)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.cli.config_utils import load_and_validate
from flwr.cli.flower_config import read_superlink_connection
from flwr.common.config import fuse_dicts, parse_config_args

from fedrad.deploy.flower_app import (
    COMPONENTS,
    RUN_CONFIG_DEFAULTS,
    app_tables,
    write_app_dir,
    write_connection_config,
    write_run_config,
)
from fedrad.deploy.supernode import node_config

AWKWARD = 'a folder with spaces, a "quote" and \\ backslash'


def test_app_dir_is_a_valid_flower_app_that_ships_no_code(tmp_path: Path) -> None:
    app = write_app_dir(tmp_path / "app")
    config, _ = load_and_validate(app / "pyproject.toml", check_module=True)
    flwr_app = config["tool"]["flwr"]["app"]
    assert flwr_app["components"] == COMPONENTS
    assert flwr_app["config"] == RUN_CONFIG_DEFAULTS
    fab = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app)))
    assert sorted(fab.namelist()) == [".info/CONTENT", "pyproject.toml"]


def test_app_tables_are_the_root_pyproject_tables() -> None:
    text = app_tables()
    for table in ("[tool.flwr.app]", "[tool.flwr.app.components]", "[tool.flwr.app.config]"):
        assert table in text
    for ref in COMPONENTS.values():
        assert f'"{ref}"' in text


def test_run_config_file_is_read_by_flwr(tmp_path: Path) -> None:
    values = {
        "study": str(tmp_path / AWKWARD / "study.toml"),
        "run-dir": str(tmp_path / AWKWARD / "run"),
        "node-timeout": 45.0,
        "expected-sites": 3,
        "sealing-key": str(tmp_path / AWKWARD / "keys" / "sealing.key"),
        "site-identities": str(tmp_path / AWKWARD / "identities"),
    }
    path = write_run_config(tmp_path / "run-config.toml", values)
    overrides = parse_config_args([str(path)])
    assert overrides == values
    assert fuse_dicts(dict(RUN_CONFIG_DEFAULTS), overrides) == values


def test_unknown_run_config_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rounds"):
        write_run_config(tmp_path / "run-config.toml", {"rounds": 3})


@pytest.mark.parametrize("folder", [AWKWARD, "the hospital's site"])
def test_node_config_names_the_site_file(tmp_path: Path, folder: str) -> None:
    site_toml = tmp_path / folder / "site.toml"
    assert parse_config_args([node_config(site_toml)]) == {"site-config": str(site_toml)}


def test_connection_config_is_read_by_the_flwr_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    write_connection_config(tmp_path / "home", "127.0.0.1:9092", insecure=True)
    connection = read_superlink_connection(None)
    assert connection.address == "127.0.0.1:9092"
    assert connection.insecure is True
