"""The Flower App config of a fedrad study and the ``flwr`` CLI's SuperLink connection config.

A Flower App is a folder whose ``pyproject.toml`` names the ServerApp and ClientApp and the run
config keys. fedrad's apps are the installed modules, so the app folder needs nothing but that
file: ``flwr run`` bundles it (a FAB of about 1 kB, no code) and every SuperNode runs the
ClientApp of the fedrad it has installed, with no runtime dependency installation. The same
tables in the repository's root ``pyproject.toml`` make ``flwr run .`` work from a checkout.

The ``flwr`` CLI (1.41) reads SuperLink connections from ``$FLWR_HOME/config.toml``
(``[superlink.NAME] address = "host:port"``, and ``root-certificates = "<absolute path of the
study's ca.crt>"`` for a TLS SuperLink or ``insecure = true``), not from the app's
``pyproject.toml``; fedrad gives each SuperLink its own ``FLWR_HOME`` and writes that file there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from fedrad import __version__

#: The Flower App's components: the study's ServerApp and the site's ClientApp.
COMPONENTS: dict[str, str] = {
    "serverapp": "fedrad.federation.server_app:app",
    "clientapp": "fedrad.federation.client_app:app",
}

#: Run config keys the ServerApp reads, with their defaults (``fedrad server start`` sets them).
#: ``sealing-key`` (the ServerApp's ``sealing.key``) and ``site-identities`` (the folder of
#: ``SITE_ID.pub`` identity keys) switch end-to-end sealing on when both are set; "" is off.
#: ``expected-sites``: how many sites are registered; the study waits up to ``node-timeout``
#: seconds for all of them (0: for ``min_sites``).
RUN_CONFIG_DEFAULTS: dict[str, str | int | float] = {
    "study": "server/study.toml",
    "run-dir": "runs/latest",
    "node-timeout": 120.0,
    "expected-sites": 0,
    "sealing-key": "",
    "site-identities": "",
}

PUBLISHER = "fedrad"
APP_NAME = "fedrad"
CONNECTION_NAME = "fedrad"


def toml_value(value: str | int | float | bool) -> str:
    """A TOML literal for a scalar (strings as basic strings, escaped as JSON escapes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _table(name: str, values: Mapping[str, str | int | float | bool]) -> list[str]:
    lines = [f"[{name}]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    return [*lines, ""]


def app_tables() -> str:
    """The ``[tool.flwr.app]`` tables of a fedrad Flower App (also for the root pyproject)."""
    lines = _table("tool.flwr.app", {"publisher": PUBLISHER})
    lines += _table("tool.flwr.app.components", COMPONENTS)
    lines += _table("tool.flwr.app.config", RUN_CONFIG_DEFAULTS)
    return "\n".join(lines)


def write_app_dir(folder: Path) -> Path:
    """Write a Flower App folder (one ``pyproject.toml``) that runs fedrad's installed apps."""
    folder.mkdir(parents=True, exist_ok=True)
    project = _table(
        "project",
        {
            "name": APP_NAME,
            "version": __version__,
            "description": "A fedrad study: the installed fedrad ServerApp and ClientApp.",
            "license": "Apache-2.0",
        },
    )
    text = "\n".join(
        [
            "# Written by fedrad: the Flower App of a study (fedrad's installed apps, no code).",
            *project,
            app_tables(),
        ]
    )
    path = folder / "pyproject.toml"
    path.write_text(text)
    return folder


def write_run_config(path: Path, values: Mapping[str, str | int | float]) -> Path:
    """A run config override file for ``flwr run --run-config FILE.toml``."""
    unknown = sorted(set(values) - set(RUN_CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown run config key(s) {', '.join(unknown)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(f"{k} = {toml_value(v)}" for k, v in values.items()) + "\n")
    return path


def write_connection_config(
    flwr_home: Path,
    address: str,
    *,
    insecure: bool,
    root_certificates: Path | None = None,
    name: str = CONNECTION_NAME,
) -> Path:
    """``$FLWR_HOME/config.toml`` with one SuperLink connection, the default.

    ``root_certificates`` (the study's CA certificate) is stored as an absolute path, which the
    ``flwr`` CLI requires.
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    connection: dict[str, str | bool] = {"address": address, "insecure": insecure}
    if root_certificates is not None:
        connection["root-certificates"] = str(Path(root_certificates).resolve())
    lines = _table("superlink", {"default": name})
    lines += _table(f"superlink.{name}", connection)
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines))
    return path
