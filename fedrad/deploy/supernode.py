"""A site's SuperNode: Flower's ``flower-supernode`` process serving one ``site.toml``.

The SuperNode's node config is ``site-config="<absolute path of site.toml>"``, which fedrad's
ClientApp reads to find the site's data. It runs the ClientApp in a subprocess (Flower's
``subprocess`` isolation) on the fedrad installed at the site: runtime dependency installation
stays off, and the FAB it receives holds only the app config. Its ``FLWR_HOME`` (installed FABs)
is ``<site folder>/.fedrad/flower`` and its log goes to the site's ``log_dir``.

Secure by default: it verifies the SuperLink's TLS certificate against the study's CA
(``--root-certificates ca.crt``) and authenticates with the site's node key
(``--auth-supernode-private-key node.key``, from ``fedrad site init``), which the coordinator
has registered. A SuperLink with node authentication refuses an unregistered key at once
(the SuperNode exits, see :meth:`SuperNode.refused_as_unregistered`). ``insecure=True``
(plain HTTP, no key) must be asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedrad.deploy import (
    INSECURE_HINT,
    DeploymentError,
    FlowerProcess,
    flower_env,
    flower_executable,
    free_port,
)
from fedrad.deploy.flower_app import toml_value
from fedrad.federation.config import SiteConfig
from fedrad.secure.certificates import load_certificate
from fedrad.secure.node_auth import load_node_private_key

#: What the SuperNode logs when the SuperLink does not know its key (Flower 1.41).
UNREGISTERED_MARKERS = ("Failed to activate SuperNode", "FLEET_NODE_ACTIVATION_FAILED")


def node_config(site_toml: Path) -> str:
    """The SuperNode's ``--node-config`` value naming the site (``site-config='<path>'``).

    Flower splits ``key=value`` pairs with a pattern that ends a quoted value at its first
    quote, so the path goes in a TOML literal string ('...', no escapes), or a basic string
    when it holds a single quote; a path with both kinds of quotes cannot be passed.
    """
    path = str(Path(site_toml).resolve())
    if "'" not in path and "\n" not in path:
        return f"site-config='{path}'"
    if '"' not in path:
        return f"site-config={toml_value(path)}"
    raise DeploymentError(
        f"{path}: a site folder path with both ' and \" cannot be given to the SuperNode; "
        "rename the folder"
    )


def site_flower_home(site: SiteConfig) -> Path:
    return site.root / ".fedrad" / "flower"


class SuperNode:
    """A running ``flower-supernode`` serving one site."""

    def __init__(self, process: FlowerProcess, site: SiteConfig, superlink: str, port: int):
        self.process = process
        self.site = site
        self.superlink = superlink
        self.runtime_port = port
        self._log_offset = 0

    @classmethod
    def start(
        cls,
        site_toml: Path,
        superlink: str,
        *,
        root_certificates: Path | None = None,
        auth_key: Path | None = None,
        insecure: bool = False,
        runtime_port: int | None = None,
        home: Path | None = None,
        log_path: Path | None = None,
        max_wait_time: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SuperNode:
        """Start a SuperNode for ``site_toml`` connecting to the SuperLink at ``superlink``.

        ``root_certificates`` is the study's CA certificate (TLS) and ``auth_key`` the site's
        node private key (SuperNode authentication); ``insecure=True`` instead connects over
        plain HTTP, without a key. ``runtime_port`` is the local port of the SuperNode's
        Runtime API (the ClientApp process talks to it on 127.0.0.1); a free one is taken when
        None, so several sites can run on one machine. ``max_wait_time`` bounds how long it
        keeps trying to reach the SuperLink (None: for ever); ``env`` adds environment
        variables (e.g. thread counts).
        """
        if insecure == (root_certificates is not None):
            raise DeploymentError(
                "the SuperNode needs the study's CA certificate or an explicit insecure mode, "
                f"not {'both' if insecure else 'neither'}: {INSECURE_HINT}"
            )
        if insecure and auth_key is not None:
            raise DeploymentError(
                "SuperNode authentication needs TLS: Flower refuses a node key over plain HTTP"
            )
        site_toml = Path(site_toml).resolve()
        site = SiteConfig.from_file(site_toml)
        if ":" not in superlink:
            raise DeploymentError(f"--superlink {superlink!r}: give HOST:PORT")
        home = Path(home or site_flower_home(site)).resolve()
        home.mkdir(parents=True, exist_ok=True)
        port = free_port() if runtime_port is None else int(runtime_port)
        command = [flower_executable("flower-supernode")]
        if root_certificates is None:
            command.append("--insecure")
        else:
            root_certificates = Path(root_certificates).resolve()
            load_certificate(root_certificates)  # a clear error before Flower's exit code
            command += ["--root-certificates", str(root_certificates)]
        if auth_key is not None:
            auth_key = Path(auth_key).resolve()
            load_node_private_key(auth_key)
            command += ["--auth-supernode-private-key", str(auth_key)]
        command += [
            "--superlink",
            superlink,
            "--node-config",
            node_config(site_toml),
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if max_wait_time is not None:
            command += ["--max-wait-time", str(float(max_wait_time))]
        log_path = log_path or site.log_dir / "supernode.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        process = FlowerProcess.start(
            f"flower-supernode ({site.site_id})",
            command,
            flower_env(home, env),
            log_path=log_path,
            cwd=site.root,
        )
        node = cls(process, site, superlink, port)
        node._log_offset = offset
        return node

    def log_text(self) -> str:
        """What this SuperNode wrote to its log (not what earlier runs appended before it)."""
        path = self.process.log_path
        if path is None or not path.exists():
            return ""
        with path.open("rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")

    def refused_as_unregistered(self) -> bool:
        """Whether the SuperLink refused this node because its key is not registered."""
        text = self.log_text()
        return any(marker in text for marker in UNREGISTERED_MARKERS)

    def check_alive(self) -> None:
        """Raise :class:`DeploymentError` (with the end of its log) when the node has exited."""
        if not self.process.alive():
            raise DeploymentError(
                f"the SuperNode of site {self.site.site_id} stopped: {self.process.describe_exit()}"
            )

    def stop(self) -> int | None:
        return self.process.stop()

    def __enter__(self) -> SuperNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
