"""The study's SuperLink: Flower's ``flower-superlink`` process, and runs submitted with ``flwr run``.

In Flower 1.41 one HTTP port serves the SuperLink's Fleet API (the SuperNodes connect there),
its Control API (``flwr run``, ``flwr ls``) and its Runtime API (the ServerApp process it starts
through ``flower-superexec``). fedrad starts it with runtime dependency installation disabled,
writes the ``flwr`` CLI's connection config into the SuperLink's own ``FLWR_HOME`` and drives it
with the ``flwr`` CLI only.

Secure by default: the SuperLink serves TLS with the study's certificates
(``--ssl-ca-certfile``, ``--ssl-certfile``, ``--ssl-keyfile``; see
:mod:`fedrad.secure.certificates`) and admits only registered SuperNodes
(``--enable-supernode-auth``); :meth:`SuperLink.register_sites` registers the coordinator's site
keys through the Control API (``flwr supernode register``). ``insecure=True`` (plain HTTP, no
node authentication: Flower allows node authentication over TLS only) must be asked for.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fedrad.deploy import (
    INSECURE_HINT,
    DeploymentError,
    FlowerProcess,
    connect_host,
    flower_env,
    flower_executable,
    free_port,
    wait_until,
)
from fedrad.deploy.flower_app import CONNECTION_NAME, write_connection_config, write_run_config
from fedrad.secure.certificates import TlsFiles, check_server_files
from fedrad.secure.node_auth import RegisteredSite

DEFAULT_PORT = 9092
READY_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 120.0
#: ``flwr supernode register`` calls run at once (each is a short Python process).
REGISTER_PARALLEL = 4

#: Run states of ``flwr ls`` that end a run.
FINISHED = "finished"
COMPLETED = "finished:completed"


@dataclass
class RunState:
    """A run as ``flwr ls`` reports it."""

    run_id: int
    status: str
    details: str = ""

    @property
    def finished(self) -> bool:
        return self.status.startswith(FINISHED)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


def _json_from_output(text: str) -> dict:
    """The JSON object a ``flwr ... --format json`` command prints (after any notices)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the output")
    return json.loads(text[start:])


class SuperLink:
    """A running ``flower-superlink`` and the ``flwr`` CLI configured to reach it.

    ``home`` is the SuperLink's ``FLWR_HOME``: the CLI's ``config.toml``, the installed FABs of
    its runs and the process log (``superlink.log``) live there. ``tls`` is None exactly when
    the SuperLink runs insecure.
    """

    def __init__(
        self,
        process: FlowerProcess,
        host: str,
        port: int,
        home: Path,
        tls: TlsFiles | None = None,
        node_auth: bool = False,
    ):
        self.process = process
        self.host = host
        self.port = port
        self.home = home
        self.tls = tls
        self.node_auth = node_auth
        self._log_offset = 0
        self._ended: set[int] = set()

    @property
    def insecure(self) -> bool:
        """Whether the SuperLink serves plain HTTP (no TLS, no node authentication)."""
        return self.tls is None

    @property
    def address(self) -> str:
        """``host:port`` the SuperNodes (and the ``flwr`` CLI) connect to."""
        return f"{connect_host(self.host)}:{self.port}"

    @classmethod
    def start(
        cls,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls: TlsFiles | None = None,
        node_auth: bool = True,
        insecure: bool = False,
        log_path: Path | None = None,
        ready_timeout: float = READY_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> SuperLink:
        """Start ``flower-superlink`` on ``host:port`` (a free port when None); wait until ready.

        With ``tls`` (the study's certificate files) it serves TLS and, with ``node_auth``,
        admits only SuperNodes registered with :meth:`register_sites`; ``insecure=True``
        instead serves plain HTTP to any SuperNode. One of the two must be given. ``home``
        becomes its ``FLWR_HOME``; ``env`` adds environment variables to its own (and so to
        the ServerApp process it starts).
        """
        if insecure == (tls is not None):
            raise DeploymentError(
                "the SuperLink needs TLS certificates or an explicit insecure mode, not "
                f"{'both' if insecure else 'neither'}: {INSECURE_HINT}"
            )
        if tls is not None:
            check_server_files(tls, connect_host(host))
        home = Path(home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        port = free_port(connect_host(host)) if port is None else int(port)
        command = [flower_executable("flower-superlink")]
        if tls is None:
            command.append("--insecure")
        else:
            ca_cert, server_cert, server_key = (p.resolve() for p in tls.server_files())
            command += [
                "--ssl-ca-certfile",
                str(ca_cert),
                "--ssl-certfile",
                str(server_cert),
                "--ssl-keyfile",
                str(server_key),
            ]
            if node_auth:
                command.append("--enable-supernode-auth")
        command += [
            "--host",
            host,
            "--port",
            str(port),
            "--isolation",
            "subprocess",
            "--disable-runtime-dependency-installation",
        ]
        process = FlowerProcess.start(
            "flower-superlink",
            command,
            flower_env(home, env),
            log_path=log_path or home / "superlink.log",
            cwd=home,
        )
        link = cls(process, host, port, home, tls, node_auth=tls is not None and node_auth)
        write_connection_config(
            home,
            link.address,
            insecure=tls is None,
            root_certificates=None if tls is None else tls.ca_cert,
        )
        try:
            link.wait_ready(ready_timeout)
        except BaseException:
            process.stop()
            raise
        return link

    def healthy(self) -> bool:
        """Whether the SuperLink answers on its port (over TLS, checked against the CA)."""
        scheme = "http" if self.tls is None else "https"
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
            handlers.append(urllib.request.HTTPSHandler(context=context))
        direct = urllib.request.build_opener(*handlers)
        try:
            with direct.open(f"{scheme}://{self.address}/health", timeout=1.0) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        ok = wait_until(lambda: not self.process.alive() or self.healthy(), timeout)
        if not self.process.alive():
            raise DeploymentError(
                f"the SuperLink on {self.address} did not start: {self.process.describe_exit()}"
            )
        if not ok:
            raise DeploymentError(
                f"the SuperLink on {self.address} did not answer within {timeout:.0f} s; "
                f"log: {self.process.log_path}"
            )

    def register_sites(self, sites: Sequence[RegisteredSite]) -> dict[str, int]:
        """Register the sites' node public keys with the SuperLink; their Flower node ids.

        Each key goes through the Control API (``flwr supernode register KEY --name SITE``);
        only then may that site's SuperNode connect. A SuperLink without node authentication
        needs (and takes) no registration.
        """
        if not self.node_auth:
            raise DeploymentError("this SuperLink runs without node authentication")

        def register(site: RegisteredSite) -> tuple[str, int]:
            output = self.flwr(
                "supernode",
                "register",
                str(site.path.resolve()),
                CONNECTION_NAME,
                "--name",
                site.site_id,
                "--format",
                "json",
            )
            try:
                return site.site_id, int(_json_from_output(output)["node-id"])
            except (ValueError, KeyError, TypeError):
                raise DeploymentError(
                    f"registering site {site.site_id} ({site.path}) gave no node id: {output}"
                ) from None

        with ThreadPoolExecutor(max_workers=REGISTER_PARALLEL) as pool:
            return dict(pool.map(register, sites))

    def nodes(self) -> list[dict]:
        """The SuperNodes the SuperLink knows (``flwr supernode ls``): id, name, status."""
        output = self.flwr("supernode", "ls", CONNECTION_NAME, "--format", "json", timeout=60)
        try:
            return list(_json_from_output(output).get("nodes", []))
        except (ValueError, AttributeError):
            raise DeploymentError(f"`flwr supernode ls` gave no node list: {output}") from None

    def flwr(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> str:
        """Run a ``flwr`` CLI command against this SuperLink; its output (stdout + stderr)."""
        command = [flower_executable("flwr"), *args]
        try:
            done = subprocess.run(
                command,
                env=flower_env(self.home),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeploymentError(
                f"`flwr {' '.join(args[:1])}` did not finish within {timeout:.0f} s"
            ) from None
        output = (done.stdout or "") + (done.stderr or "")
        if done.returncode != 0:
            raise DeploymentError(
                f"`flwr {' '.join(args[:1])}` failed (exit {done.returncode}): {output.strip()}"
            )
        return done.stdout or ""

    def submit(self, app_dir: Path, run_config: Mapping[str, str | int | float]) -> int:
        """Submit a run of the Flower App ``app_dir`` with ``run_config``; its run id."""
        config_file = write_run_config(self.home / "run-config.toml", run_config)
        output = self.flwr(
            "run",
            str(Path(app_dir).resolve()),
            CONNECTION_NAME,
            "--run-config",
            str(config_file),
            "--format",
            "json",
        )
        try:
            payload = _json_from_output(output)
            return int(payload["run-id"])
        except (ValueError, KeyError, TypeError):
            raise DeploymentError(f"`flwr run` gave no run id: {output.strip()}") from None

    def run_state(self, run_id: int) -> RunState:
        """The run's status as ``flwr ls --run-id`` reports it."""
        output = self.flwr(
            "ls", CONNECTION_NAME, "--run-id", str(run_id), "--format", "json", timeout=60
        )
        try:
            payload = _json_from_output(output)
            runs = payload.get("runs", [])
            row = next(r for r in runs if str(r.get("run-id")) == str(run_id))
        except (ValueError, StopIteration, AttributeError):
            raise DeploymentError(f"`flwr ls` does not know run {run_id}: {output}") from None
        return RunState(run_id, str(row.get("status", "")), str(row.get("status-details", "")))

    def _log_reports_end(self, run_id: int) -> bool:
        """Whether the SuperLink's log says the run's ServerApp task finished (a cheap hint)."""
        if run_id in self._ended:
            return True
        log_path = self.process.log_path
        if log_path is None or not log_path.exists():
            return False
        with log_path.open("rb") as fh:
            fh.seek(self._log_offset)
            chunk = fh.read()
        # Keep some overlap so that a line split across two reads is still seen whole.
        self._log_offset += max(0, len(chunk) - 512)
        if re.search(rb"Finished task \S+ of run %d\b" % run_id, chunk):
            self._ended.add(run_id)
        return run_id in self._ended

    def wait_for_run(
        self,
        run_id: int,
        timeout: float,
        *,
        done: Callable[[], bool] | None = None,
        ls_every: float = 30.0,
        on_state: Callable[[RunState], None] | None = None,
    ) -> RunState:
        """Wait until the run finishes (completed, failed or stopped); its final state.

        The state comes from ``flwr ls``, which starts a Python process and so costs CPU that
        the ServerApp and the ClientApps need: it is asked every ``ls_every`` seconds only, and
        every 1.5 s once the run looks finished, i.e. ``done()`` (a cheap check, e.g. that the
        run directory's ``federation.json`` exists) is true or the SuperLink's log reports the
        end of the run's ServerApp task. Raises :class:`DeploymentError` when the SuperLink
        dies or ``timeout`` seconds pass.
        """
        deadline = time.monotonic() + timeout
        next_ls = time.monotonic() + min(ls_every, 5.0)
        while True:
            if not self.process.alive():
                raise DeploymentError(
                    f"the SuperLink stopped during run {run_id}: {self.process.describe_exit()}"
                )
            now = time.monotonic()
            if (done is not None and done()) or self._log_reports_end(run_id):
                next_ls = min(next_ls, now + 1.5)
            if now >= next_ls or now >= deadline:
                state = self.run_state(run_id)
                if on_state is not None:
                    on_state(state)
                if state.finished:
                    return state
                if time.monotonic() >= deadline:
                    raise DeploymentError(
                        f"run {run_id} did not finish within {timeout:.0f} s "
                        f"(status {state.status}); log: {self.process.log_path}"
                    )
                next_ls = time.monotonic() + ls_every
            time.sleep(0.5)

    def run_log(self, run_id: int, timeout: float = 60) -> str:
        """The run's log (``flwr log --show``): the ServerApp's output."""
        return self.flwr("log", str(run_id), CONNECTION_NAME, "--show", timeout=timeout)

    def stop(self) -> int | None:
        return self.process.stop()

    def __enter__(self) -> SuperLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
