"""Deployment on Flower's own processes: a SuperLink for the study, a SuperNode per site.

fedrad starts Flower's ``flower-superlink`` and ``flower-supernode`` executables and submits the
study with ``flwr run``; it never opens a network connection of its own. This package holds what
those processes share: their environment (no update check, no telemetry, no runtime dependency
installation: hospitals are often air-gapped, and the ClientApp runs on the fedrad already
installed), the lookup of the executables, free loopback ports and :class:`FlowerProcess`, which
keeps the log of a started process and stops it.

Modules: :mod:`fedrad.deploy.superlink`, :mod:`fedrad.deploy.supernode` and
:mod:`fedrad.deploy.flower_app` (the Flower App config and the CLI connection config).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from fedrad.errors import FedradError

#: Seconds a stopped process gets to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0

LOOPBACK = ("127.0.0.1", "localhost", "::1")

INSECURE_HINT = (
    "make the study's TLS certificates with `fedrad server init` and each site's keys with "
    "`fedrad site init`, or pass --insecure to run without TLS and without node "
    "authentication (a trusted test network only)"
)

INSECURE_WARNING = (
    "INSECURE MODE: no TLS and no SuperNode authentication. Model updates and metrics cross "
    "the network unencrypted, and any machine that reaches this port can join the study. "
    "Use it on a trusted test network only."
)


class DeploymentError(FedradError):
    """A Flower process could not be started, did not become ready, or a run failed."""


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Flower process: its own ``FLWR_HOME`` and no network side trips.

    The interpreter's ``bin`` folder goes first on ``PATH`` because the SuperLink and the
    SuperNode start ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name.
    """
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # Loopback traffic (CLI -> SuperLink, ClientApp -> SuperNode) never goes through a proxy.
    for key in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in env.get(key, "").split(",") if h]
        env[key] = ",".join([*hosts, *(h for h in LOOPBACK if h not in hosts)])
    if extra:
        env.update(extra)
    return env


def flower_executable(name: str) -> str:
    """Path of a Flower executable (``flower-superlink``, ``flwr``, ...) of this interpreter."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise DeploymentError(
            f"the Flower executable {name!r} is not installed beside {sys.executable}; "
            "install fedrad with its dependencies (flwr)"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def connect_host(host: str) -> str:
    """The address to connect to a server bound to ``host`` (a wildcard becomes loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


class FlowerProcess:
    """A Flower process fedrad started, with its log file; :meth:`stop` ends it and its children.

    The process leads a new session, so stopping it signals its whole process group (the
    SuperExec and the ClientApp processes a SuperNode starts); Flower's detached helpers watch
    their parent's id and exit with it.
    """

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path | None):
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @classmethod
    def start(
        cls,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> FlowerProcess:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            out = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(command),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out if log_path is not None else None,
                stderr=subprocess.STDOUT if log_path is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise DeploymentError(f"cannot start {name} ({command[0]}): {exc}") from None
        finally:
            if log_path is not None:
                out.close()
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the process's log ("" without a log file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def describe_exit(self) -> str:
        """Why the process is gone: exit code, log path and the end of its log."""
        code = self.popen.poll()
        where = f"; log: {self.log_path}" if self.log_path else ""
        tail = self.log_tail()
        return f"{self.name} exited with code {code}{where}" + (f"\n{tail}" if tail else "")

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM to the process group, then SIGKILL after ``grace`` seconds; the exit code."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(timeout=grace)
        # Helpers left in the group after the leader exited (best effort, same group only).
        self._signal_group(signal.SIGKILL)
        return self.popen.returncode

    def __enter__(self) -> FlowerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_all(processes: Sequence[FlowerProcess], grace: float = STOP_GRACE_S) -> None:
    """Stop several processes at once: SIGTERM to every group first, then wait for them all
    (each :meth:`FlowerProcess.stop` then has only stragglers left to kill)."""
    for process in processes:
        if process.alive():
            process._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        process.stop(grace)


@contextlib.contextmanager
def stop_on_termination() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`KeyboardInterrupt` while the block runs.

    The SuperLink and SuperNodes lead their own sessions, so a command that started one must
    stop it itself: with this, ``finally`` blocks run when the command is terminated (by a
    service manager, ``timeout`` or a closed terminal), not only on Ctrl-C. Main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_until(predicate, timeout: float, interval: float = 0.25) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
