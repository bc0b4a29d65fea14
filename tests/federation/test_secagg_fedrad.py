"""fedrad's own ClientApp (real sites, real local training) under SecAgg+, against plain FedAvg.

The sites' ClientApp is fedrad's, wrapped in a ClientApp that carries the secure-aggregation mod
(as the lead's ``build_client_app`` will once wired). The server runs the study's site checks
and federated standardisation, then the same rounds twice from the same initial model: with
:func:`secure_fit` and with Flower's plain FedAvg. Local training is seeded per site and round,
so the two final models differ only by SecAgg+'s quantisation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedrad.federation import protocol
from fedrad.federation.client_app import build_client_app, simulation_resolver
from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.federation.run_dir import RunDirectory
from fedrad.federation.secagg import secure_aggregation_mods, secure_fit
from fedrad.federation.server_app import (
    EvaluationLog,
    check_sites,
    federated_standardisation,
    wait_for_nodes,
)
from fedrad.federation.strategies import build_strategy
from fedrad.learn.models import build_model, get_parameters
from fedrad.simulation.harness import approve_studies, quiet_flower
from tests.federation.helpers import write_site

pytestmark = pytest.mark.slow

ROUNDS = 3
STUDY = StudyConfig.from_dict(
    {
        "study": {"min_cases": 12},
        "training": {"rounds": ROUNDS, "min_sites": 2, "local_epochs": 1},
        "secure_aggregation": {"enabled": True, "timeout": 600.0},
    }
)

PLAIN = STUDY.with_secure_aggregation(enabled=False)


def secure_client_app(sites: list[SiteConfig]) -> ClientApp:
    """fedrad's ClientApp behind the secure-aggregation mod."""
    inner = build_client_app(simulation_resolver(sites))
    app = ClientApp(mods=secure_aggregation_mods())

    def forward(msg: Message, context: Context) -> Message:
        return inner(msg, context)

    app.train()(forward)
    app.evaluate()(forward)
    app.query()(forward)
    return app


def server_app(run_dir: Path, out: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run = RunDirectory(run_dir)
            nodes = wait_for_nodes(grid, 3, 60)
            accepted, features, reports = check_sites(grid, STUDY, nodes, run)
            std = federated_standardisation(grid, STUDY, accepted, features)
            config = {"study": protocol.study_to_json(STUDY), **std.to_config()}
            max_weight = max(r["n-train"] for r in reports if r["ok"])
            t0 = time.perf_counter()
            out["secure"], out["history"] = secure_fit(
                grid,
                STUDY,
                accepted,
                config,
                EvaluationLog(STUDY),
                run,
                max_weight=max_weight,
            )
            out["secure_round_s"] = (time.perf_counter() - t0) / ROUNDS
            out["max_weight"] = max_weight
            model = build_model(STUDY.model_settings(), len(features))
            evaluation = EvaluationLog(STUDY)
            t0 = time.perf_counter()
            # the same study without SecAgg+ (sites refuse plain rounds of a SecAgg+ study)
            plain = {**config, "study": protocol.study_to_json(PLAIN)}
            result = build_strategy(PLAIN, len(accepted), evaluation).start(
                grid=grid,
                initial_arrays=ArrayRecord(get_parameters(model)),
                num_rounds=ROUNDS,
                train_config=ConfigRecord(plain),
                evaluate_config=ConfigRecord(plain),
            )
            out["plain_round_s"] = (time.perf_counter() - t0) / ROUNDS
            out["plain"] = result.arrays.to_numpy_ndarrays()
            out["plain_auc"] = evaluation.rounds[-1]["pooled"]["auc"]
        except Exception as exc:  # surfaced by the test, not swallowed by the engine
            out["error"] = exc

    return app


def test_fedrad_sites_train_under_secagg_like_plain_fedavg(tmp_path: Path) -> None:
    quiet_flower()
    from flwr.simulation import run_simulation

    sites = [
        write_site(tmp_path / "sites", "a", 60, 1),
        write_site(tmp_path / "sites", "b", 50, 2, shift=0.3),
        write_site(tmp_path / "sites", "c", 40, 3, shift=-0.2),
    ]
    approve_studies(sites, [STUDY, PLAIN])  # each virtual hospital approves both studies
    out: dict[str, Any] = {}
    run_simulation(
        server_app=server_app(tmp_path / "run", out),
        client_app=secure_client_app(sites),
        num_supernodes=len(sites),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"include_dashboard": False, "log_to_driver": False},
        },
    )
    if "error" in out:
        raise out["error"]
    fits = [round(h["fit_seconds"], 2) for h in out["history"]]
    print(
        f"\nfedrad sites: SecAgg+ round {out['secure_round_s']:.2f} s (fit per round {fits}, the "
        f"first one warms the sites up) vs plain FedAvg round {out['plain_round_s']:.2f} s"
    )
    history = out["history"]
    assert [h["round"] for h in history] == list(range(1, ROUNDS + 1))
    assert all(h["aggregated"] and h["secagg"]["dropped"] == [] for h in history)
    assert sorted(history[-1]["secagg"]["included"]) == ["a", "b", "c"]
    assert set(history[-1]["sites"]) == {"a", "b", "c"}
    assert all(h["train_loss"] is None for h in history)  # no loss leaves under SecAgg+
    for secure, plain in zip(out["secure"], out["plain"], strict=True):
        assert secure.shape == plain.shape
        np.testing.assert_allclose(secure, plain, rtol=0, atol=1e-4)
    assert history[-1]["pooled"]["auc"] == pytest.approx(out["plain_auc"], abs=1e-3)
    assert (tmp_path / "run" / "checkpoints" / f"round-{ROUNDS:04d}.npz").exists()
