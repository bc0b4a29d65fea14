"""Cross-validated simulation: folds through Flower, predictions pooled over folds, metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from fedrad.federation import protocol
from fedrad.federation.config import ConfigError, StudyConfig
from fedrad.learn.federated_eval import score_histograms
from fedrad.learn.metrics import roc_auc
from fedrad.learn.newton import fit_logistic_newton
from fedrad.simulation.crossval import FoldResult, fit_centralised, run_crossval, summarise
from fedrad.simulation.harness import Scenario
from tests.federation.helpers import write_site


def _fold(fold: int, n: int, seed: int) -> FoldResult:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(float)
    fed = expit(1.5 * (2 * y - 1) + rng.normal(size=n))
    sites = ["a" if i < n // 2 else "b" for i in range(n)]
    return FoldResult(
        fold=fold,
        site=sites,
        case_id=[f"{fold}-{i}" for i in range(n)],
        y=y,
        federated=fed,
        pooled=expit(1.0 * (2 * y - 1) + rng.normal(size=n)),
        local={"a": rng.random(n), "b": fed},
        histograms=score_histograms(y, fed, protocol.SCORE_BINS),
        rounds=5,
    )


def test_summary_pools_held_out_predictions_over_folds() -> None:
    folds = [_fold(f, 30, seed=f) for f in range(3)]
    out = summarise(folds)
    y = np.concatenate([f.y for f in folds])
    fed = np.concatenate([f.federated for f in folds])
    pooled = np.concatenate([f.pooled for f in folds])
    assert out["pooled"]["auc"] == pytest.approx(roc_auc(y, pooled))
    assert out["n_held_out"] == 90 and out["n_positive"] == int(y.sum())
    assert out["federated"]["auc"] == pytest.approx(roc_auc(y, fed))
    per_fold = [roc_auc(f.y, f.federated) for f in folds]
    assert out["federated"]["auc_per_fold"] == pytest.approx(per_fold)
    assert out["federated"]["auc_fold_mean"] == pytest.approx(np.mean(per_fold))
    # the histograms the sites sent, summed over folds, give the pooled AUC within their bound
    hist_auc = out["federated"]["auc_from_site_aggregates"]
    assert abs(hist_auc - roc_auc(y, fed)) <= out["federated"]["auc_binning_bound"] + 1e-12
    assert out["federated"]["site_aggregates"]["auc"] == pytest.approx(hist_auc)
    assert out["federated"]["site_aggregates"]["n"] == 90
    assert out["local_only"]["per_site"]["b"] == pytest.approx(roc_auc(y, fed))
    assert out["local_only"]["auc_mean"] == pytest.approx(
        np.mean(list(out["local_only"]["per_site"].values()))
    )


def test_a_fold_without_a_local_model_is_skipped_for_that_site() -> None:
    folds = [_fold(f, 30, seed=f) for f in range(3)]
    folds[0].local["a"] = np.full(30, np.nan)  # site a had one class in fold 0's training rows
    out = summarise(folds)
    y = np.concatenate([f.y for f in folds[1:]])
    p = np.concatenate([f.local["a"] for f in folds[1:]])
    assert out["local_only"]["per_site"]["a"] == pytest.approx(roc_auc(y, p))


def test_centralised_exact_fit_is_the_penalised_newton_fit() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(loc=3.0, scale=2.0, size=(60, 4))
    y = (X[:, 0] - X[:, 1] + rng.normal(size=60) > 0).astype(float)
    study = StudyConfig().with_training(strategy="exact")
    predictor = fit_centralised(study, X, y)
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    beta = fit_logistic_newton([(Z, y)], l2=study.model.l2).beta
    np.testing.assert_allclose(predictor(X), expit(beta[0] + Z @ beta[1:]), rtol=1e-8, atol=1e-12)


def test_scenario_cv_folds(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[simulation]\ncv_folds = 4\n[study]\nlabel_column = "y"\n')
    assert Scenario.from_file(path).cv_folds == 4
    path.write_text("[simulation]\ncv_folds = 1\n")
    with pytest.raises(ConfigError, match="cv_folds"):
        Scenario.from_file(path)


def _scenario(strategy: str, rounds: int) -> Scenario:
    study = StudyConfig(name="cv", min_cases=5, seed=3).with_training(
        strategy=strategy, rounds=rounds, local_epochs=2, learning_rate=0.2
    )
    return Scenario(name="cv-test", study=study, cv_folds=3)


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "rounds"), [("exact", 20), ("fedavg", 8)])
def test_crossval_through_flower(tmp_path: Path, strategy: str, rounds: int) -> None:
    sites = [
        write_site(tmp_path / "sites", name, n, seed)
        for name, n, seed in (("north", 40, 1), ("south", 25, 2), ("east", 31, 3))
    ]
    run = tmp_path / "run"
    seen: list[int] = []
    metrics = run_crossval(
        _scenario(strategy, rounds), run, sites=sites, on_fold=lambda f: seen.append(f.fold)
    )
    assert seen == [0, 1, 2]
    assert metrics["cv_folds"] == 3 and metrics["sites"] == 3 and metrics["n_held_out"] == 96
    assert json.loads((run / "metrics.json").read_text())["federated"]["auc"] == pytest.approx(
        metrics["federated"]["auc"]
    )
    with (run / "cv_predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["case_id"] for r in rows) == sorted(
        f"{name}-{i}" for name, n in (("north", 40), ("south", 25), ("east", 31)) for i in range(n)
    )
    # the label depends on the first two features: every model should find it
    assert metrics["federated"]["auc"] > 0.75
    assert metrics["pooled"]["auc"] > 0.75
    if strategy == "exact":  # the federated Newton fit is the pooled penalised fit
        fed = np.array([float(r["federated"]) for r in rows])
        pooled = np.array([float(r["pooled"]) for r in rows])
        np.testing.assert_allclose(fed, pooled, atol=1e-8)
    for f in (1, 2, 3):
        assert (run / f"fold-{f}" / "history.json").exists()
