"""A real deployment on loopback: Flower's SuperLink and SuperNodes as processes, over TLS.

The SuperLink (``flower-superlink``) runs with the study's certificates (``fedrad server init``)
and SuperNode authentication; three sites with keys from ``fedrad site init`` (which also pins
the server's sealing key and the study's CA), registered with their node and identity keys by
the coordinator (``fedrad server register --identity``), each run a SuperNode
(``flower-supernode``) on 127.0.0.1 with free ports, and the study (secure aggregation off) is
submitted with ``flwr run`` and the run config of ``fedrad server start``, so fedrad's ServerApp
and ClientApps run exactly as at a hospital, every update sealed end to end. Beside them, two
intruders try to join: a site with valid TLS but an unregistered node key (through
``fedrad site join``, as a hospital would type it) and a plaintext SuperNode. The run goes
first, so that the intruders are refused while it runs; the module's tests share one
federation. Every process is stopped by the fixture's finalizer (and checked gone by the last
test), and every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from fedrad.commands import server, site
from fedrad.commands.server import run_study
from fedrad.deploy import DeploymentError, flower_env, stop_all, wait_until
from fedrad.deploy.sealing_setup import plan_sealing
from fedrad.deploy.superlink import SuperLink
from fedrad.deploy.supernode import SuperNode
from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.secure.certificates import TlsFiles, init_tls
from fedrad.secure.node_auth import registered_sites
from tests.federation.helpers import write_site

pytestmark = pytest.mark.slow

SITES = ("north", "centre", "south")
ROUNDS = 2
RUN_TIMEOUT_S = 240.0
#: How long the plaintext SuperNode keeps trying before it gives up.
PLAINTEXT_WAIT_S = 5.0
#: One thread per process: several Python processes share the machine's cores.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

STUDY_TOML = f"""
[study]
name = "loopback"
min_cases = 10
seed = 3

[model]
type = "logistic"

[training]
strategy = "fedavg"
rounds = {ROUNDS}
local_epochs = 1
learning_rate = 0.1
min_sites = {len(SITES)}

[secure_aggregation]
enabled = false
"""


@dataclass
class Federation:
    root: Path
    study: Path
    tls: TlsFiles
    sites: list[SiteConfig]
    link: SuperLink
    node_ids: dict[str, int] = field(default_factory=dict)
    nodes: list[SuperNode] = field(default_factory=list)
    #: ``fedrad site join`` of a site whose key the coordinator never registered.
    intruder: subprocess.Popen[str] | None = None
    intruder_site: SiteConfig | None = None
    #: A SuperNode that speaks plain HTTP to the TLS SuperLink.
    plaintext: SuperNode | None = None

    def stop(self) -> None:
        nodes = [*self.nodes, *([self.plaintext] if self.plaintext else [])]
        stop_all([node.process for node in nodes])
        if self.intruder is not None and self.intruder.poll() is None:
            self.intruder.terminate()  # `fedrad site join` stops its SuperNode on SIGTERM
            try:
                self.intruder.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.intruder.pid, 9)
                self.intruder.wait(timeout=5)
        self.link.stop()

    def diagnostics(self) -> str:
        parts = [f"SuperLink log:\n{self.link.process.log_tail(40)}"]
        parts += [f"{n.process.name} log:\n{n.process.log_tail(20)}" for n in self.nodes]
        return "\n\n".join(parts)


def _cli(*argv: str | Path) -> None:
    """Run a ``fedrad server`` / ``fedrad site`` command in this process, as typed."""
    parser = argparse.ArgumentParser(prog="fedrad")
    sub = parser.add_subparsers()
    server.add_parser(sub)
    site.add_parser(sub)
    args = parser.parse_args([str(a) for a in argv])
    assert args.run(args) == 0


def _processes_with_home(root: Path) -> list[int]:
    """Ids of live processes whose FLWR_HOME lies under ``root`` (the ones this test started)."""
    marker = f"FLWR_HOME={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(v.startswith(marker) for v in environ.split(b"\0")):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("loopback").resolve()
    sites = [
        write_site(root / "sites", name, 40, seed=i, shift=0.3 * i) for i, name in enumerate(SITES)
    ]
    intruder = write_site(root / "sites", "intruder", 40, seed=7)
    plaintext = write_site(root / "sites", "plaintext", 40, seed=8)
    study = root / "server" / "study.toml"
    study.parent.mkdir(parents=True)
    study.write_text(STUDY_TOML)

    # The coordinator's and the sites' setup, as they type it: the server's CA, certificate and
    # sealing key; each site's keys, pinning the server's sealing.pub and ca.crt (the intruder
    # has them too, as any site would); the coordinator registers the three sites only.
    server_dir = root / "server"
    _cli("server", "init", server_dir)
    tls = TlsFiles.in_dir(server_dir / "tls")
    for s in [*sites, intruder]:
        _cli(
            "site", "init", s.root / "site.toml",
            "--server-sealing-key", server_dir / "keys" / "sealing.pub",
            "--root-cert", tls.ca_cert,
        )  # fmt: skip
        _cli("site", "approve", s.root / "site.toml", study)  # each hospital pins the study
        if s is not intruder:
            _cli(
                "server", "register", s.site_id, s.keys_dir / "node.pub",
                "--identity", s.keys_dir / "identity.pub", "--server-dir", server_dir,
            )  # fmt: skip

    link = SuperLink.start(root / "server" / "flower", host="127.0.0.1", tls=tls, env=THREADS)
    fed = Federation(root, study, tls, sites, link)
    try:
        fed.node_ids = link.register_sites(registered_sites(server_dir / "nodes"))
        for s in sites:
            fed.nodes.append(
                SuperNode.start(
                    s.root / "site.toml",
                    link.address,
                    root_certificates=s.keys_dir / "ca.crt",  # pinned by `fedrad site init`
                    auth_key=s.keys_dir / "node.key",
                    env=THREADS,
                    max_wait_time=RUN_TIMEOUT_S,
                )
            )
        fed.intruder_site = intruder
        fed.intruder = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedrad.cli",
                "site",
                "join",
                str(intruder.root / "site.toml"),
                "--superlink",
                link.address,
                "--registration-wait",
                "0",
            ],
            env=flower_env(root / "intruder-cli", THREADS),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        fed.plaintext = SuperNode.start(
            plaintext.root / "site.toml",
            link.address,
            insecure=True,
            env=THREADS,
            max_wait_time=PLAINTEXT_WAIT_S,
        )
        yield fed
    finally:
        fed.stop()


def test_registered_sites_finish_a_run_over_tls(federation: Federation) -> None:
    started = time.monotonic()
    link = federation.link
    assert link.address.startswith("127.0.0.1:")
    assert link.tls is not None and link.node_auth
    assert sorted(federation.node_ids) == sorted(SITES)
    run_dir = federation.root / "run"
    server_dir = federation.study.parent
    # What `fedrad server start` does: its sealing run config (from the server folder), then,
    # once its SuperLink is up, flwr run, and follow the run.
    plan = plan_sealing(
        StudyConfig.from_file(federation.study),
        server_dir / "keys" / "sealing.key",
        server_dir / "identities",
        list(federation.node_ids),
    )
    assert plan.enabled and plan.sites == tuple(sorted(SITES)), plan
    try:
        summary = run_study(
            link,
            federation.study,
            run_dir,
            node_timeout=60.0,
            timeout=RUN_TIMEOUT_S,
            sealing=plan.run_config,
            expected_sites=len(SITES),
        )
    except Exception:
        print(federation.diagnostics())
        raise
    elapsed = time.monotonic() - started
    print(f"loopback run of {len(SITES)} sites, {ROUNDS} rounds: {elapsed:.1f} s")
    for node in federation.nodes:
        node.check_alive()

    # The run directory: summary with final metrics, history, checkpoints, model.
    assert summary == json.loads((run_dir / "federation.json").read_text())
    assert sorted(s["site_id"] for s in summary["sites"] if s["ok"]) == sorted(SITES)
    assert summary["rounds"] == ROUNDS
    assert sorted(summary["final"]["sites"]) == sorted(SITES)
    assert 0.0 <= summary["final"]["pooled"]["auc"] <= 1.0
    # the final model's calibration came from federated Newton exchanges with every site
    assert "calibration_error" not in summary["final"]["pooled"], summary["final"]["pooled"]
    assert summary["final"]["pooled"]["calibration_exchanges"] >= 2
    # Sealed end to end: every site's training and evaluation replies were opened and none
    # was refused.
    assert summary["sealing"] == {"enabled": True, "rejected": []}
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["round"] for h in history] == list(range(1, ROUNDS + 1))
    assert all(sorted(h["sites"]) == sorted(SITES) for h in history)
    assert all(np.isfinite(h["train_loss"]) for h in history)
    n_features = len(summary["features"])
    with np.load(run_dir / "model.npz") as model:
        weights = [model[k] for k in model.files]
    assert sum(w.size for w in weights) == n_features + 1  # logistic: weights and bias
    assert all(np.isfinite(w).all() for w in weights)
    for r in range(1, ROUNDS + 1):
        assert (run_dir / "checkpoints" / f"round-{r:04d}.npz").is_file()

    # The SuperLink knows the three registered nodes only, all online; the intruders never
    # got a node.
    known = {int(n["node-id"]): n["status"] for n in link.nodes()}
    assert known == dict.fromkeys(federation.node_ids.values(), "online")

    # Each site's SuperNode ran the fedrad ClientApp from its own FLWR_HOME and node config.
    for node in federation.nodes:
        log = node.process.log_path.read_text()
        assert "train message" in log and "evaluate message" in log, node.process.log_tail()

    # What left each site for training and evaluation was one sealed record, no plaintext
    # array or metric (the site's egress log records every reply as it left).
    for s in federation.sites:
        lines = s.egress_log_path.read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.strip()]
        sealed = [e for e in entries if e["message_type"].split(".")[0] in ("train", "evaluate")]
        assert len(sealed) == 2 * ROUNDS, entries
        assert all([r["name"] for r in e["records"]] == ["sealed"] for e in sealed), sealed


def test_an_unregistered_site_is_refused(federation: Federation) -> None:
    intruder = federation.intruder
    assert intruder is not None and federation.intruder_site is not None
    try:
        out, err = intruder.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"`fedrad site join` of an unregistered site still runs\n{federation.diagnostics()}"
        )
    text = " ".join((out + err).split())  # rich wraps long lines
    assert intruder.returncode == 2, text
    assert "does not know site intruder's node key" in text
    assert "fedrad server register intruder node.pub" in text
    log = (federation.intruder_site.log_dir / "supernode.log").read_text()
    assert "Failed to activate SuperNode" in log
    assert "SuperNode ID" not in log  # it never got a node in the federation


def test_a_plaintext_supernode_cannot_connect(federation: Federation) -> None:
    node = federation.plaintext
    assert node is not None
    assert wait_until(lambda: not node.process.alive(), PLAINTEXT_WAIT_S + 60), node.log_text()
    assert node.process.popen.returncode != 0
    log = node.log_text()
    assert "Failed to initialize the connection to the SuperLink" in log, log
    assert "SuperNode ID" not in log
    # The SuperLink's port speaks TLS only: a plain HTTP request gets no answer.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        direct.open(f"http://{federation.link.address}/health", timeout=5).read()
    assert federation.link.healthy()  # ... while HTTPS with the study's CA works


def test_stopping_ends_every_process(federation: Federation) -> None:
    """Last of the module: stopping ends every process the fixture started (the SuperExec and
    app processes, and the intruder's `fedrad site join`, included)."""
    federation.stop()
    assert not federation.link.process.alive()
    assert not any(node.process.alive() for node in federation.nodes)
    assert federation.intruder is None or federation.intruder.poll() is not None
    assert wait_until(lambda: not _processes_with_home(federation.root), 15.0), (
        _processes_with_home(federation.root)
    )


def test_superlink_on_a_busy_port_fails_with_its_log(tmp_path: Path) -> None:
    tls = init_tls(tmp_path / "tls")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DeploymentError, match="did not start") as info:
            SuperLink.start(tmp_path / "home", port=port, tls=tls, ready_timeout=60)
    assert "superlink.log" in str(info.value)
    assert wait_until(lambda: not _processes_with_home(tmp_path.resolve()), 15.0)


def test_a_failed_run_is_reported_with_the_servers_reason(tmp_path: Path) -> None:
    """Also the explicit insecure mode: no TLS, no node keys, any SuperNode admitted."""
    root = tmp_path.resolve()
    single = write_site(root / "sites", "single", 30, seed=1, single_class=True)
    study = root / "study.toml"
    study.write_text('[study]\nname = "doomed"\nmin_cases = 10\n[training]\nmin_sites = 1\n')
    _cli("site", "approve", single.root / "site.toml", study)
    link = SuperLink.start(root / "server", insecure=True, env=THREADS)
    node = None
    try:
        node = SuperNode.start(single.root / "site.toml", link.address, insecure=True, env=THREADS)
        started = time.monotonic()
        headline = r"finished:failed: [\w.]*StudyAbortedError: only 0 site\(s\) can serve"
        with pytest.raises(DeploymentError, match=headline) as info:
            run_study(link, study, root / "run", node_timeout=60.0, timeout=RUN_TIMEOUT_S)
        print(f"failed run reported after {time.monotonic() - started:.1f} s")
        assert "single: a single class" in str(info.value)
        assert not (root / "run" / "federation.json").exists()
    finally:
        if node is not None:
            node.stop()
        link.stop()
    assert wait_until(lambda: not _processes_with_home(root), 15.0)
