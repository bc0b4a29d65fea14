"""Cross-validated simulation: the federation once per fold, held-out results pooled over folds.

With ``[simulation] cv_folds = k`` each site deals its cases into ``k`` stratified folds
(:func:`fedrad.federation.site_data.cv_folds`, seeded by the study seed and the site id). For fold
``f`` the study runs with ``cv_fold = f``: every site trains on its other folds and holds out fold
``f``, so over the ``k`` federations every case is held out exactly once. Each fold is a complete
study (:func:`fedrad.federation.server_app.run_study`, run directory ``RUN_DIR/fold-<f>/``); all
folds run in one session of Flower's simulation engine
(:func:`fedrad.simulation.harness.run_federations`): starting the engine costs far more than a
small study. Features are extracted once per site (the site's feature cache) and every fold
reuses them; the federated standardisation is refitted per fold from the training
folds' moments, so nothing of a held-out case enters its own model.

On the same folds, as in :func:`fedrad.simulation.harness.compare` (simulation only, where the
harness may see every row):

- *pooled*: one centralised model on all sites' training rows of the fold (exact mode: the
  penalised Newton-Raphson fit, which the federated exact fit must equal; otherwise the SGD
  baseline of :mod:`fedrad.simulation.baselines`);
- *local-only*: each site's own model, applied to the fold's held-out cases of every site.

Reported (``RUN_DIR/metrics.json``): the AUC of the held-out predictions pooled over all folds (the
headline ``auc``), the mean of per-fold AUCs, the AUC from the score histograms the sites sent to
the Flower server summed over folds (``auc_from_site_aggregates``), and the federated evaluation
metrics (sensitivity, specificity, Brier score, calibration ...) combined from each site's
per-fold aggregates. ``RUN_DIR/cv_predictions.csv`` keeps every held-out prediction.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedrad.errors import FedradError
from fedrad.federation import protocol
from fedrad.federation.config import ConfigError, SiteConfig, StudyConfig
from fedrad.federation.site_data import FeatureTable, SiteData, site_arrays, site_feature_table
from fedrad.learn.federated_calibration import pooled_calibration
from fedrad.learn.federated_eval import (
    auc_from_histograms,
    combine_binary_eval,
    site_binary_eval,
)
from fedrad.learn.metrics import binary_metrics, roc_auc
from fedrad.learn.models import build_model, set_parameters
from fedrad.learn.newton import fit_logistic_newton
from fedrad.learn.training import predict

Predictor = Callable[[np.ndarray], np.ndarray]


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * eta))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC over the cases with a prediction (``nan`` without both classes among them)."""
    known = np.isfinite(p)
    y, p = y[known], p[known]
    return float(roc_auc(y, p)) if 0 < y.sum() < y.size else float("nan")


def fit_centralised(study: StudyConfig, X: np.ndarray, y: np.ndarray) -> Predictor:
    """A model on raw rows ``X`` (standardised by their own mean and SD); returns ``X -> p``.

    Exact mode: the Newton-Raphson fit of the penalised log-likelihood
    ``sum_i [y_i eta_i - log(1 + e^eta_i)] - (l2 / 2) ||w||^2`` (what the federated exact fit
    computes from the sites' summed gradients and Hessians). Otherwise the SGD baseline that
    :mod:`fedrad.simulation.baselines` trains for ``rounds * local_epochs`` epochs.
    """
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std < 1e-12] = 1.0
    Z = (X - mean) / std
    if study.training.strategy == "exact":
        state = fit_logistic_newton([(Z, y)], l2=study.model.l2)
        if state.status != "converged":
            raise FedradError(
                f"the centralised Newton-Raphson fit did not converge ({state.status})"
            )
        beta = state.accepted if state.accepted is not None else state.beta
        return lambda Xn: _sigmoid(beta[0] + ((Xn - mean) / std) @ beta[1:])
    from fedrad.simulation.baselines import fit_baseline_model, total_epochs

    model = fit_baseline_model(study, Z, y, None, total_epochs(study), study.seed)
    return lambda Xn: _sigmoid(predict(model, (Xn - mean) / std))


@dataclass
class FoldResult:
    """Held-out cases of one fold and every model's predicted probability for them."""

    fold: int
    site: list[str]
    case_id: list[str]
    y: np.ndarray
    federated: np.ndarray
    pooled: np.ndarray
    local: dict[str, np.ndarray]
    histograms: np.ndarray  # (2, SCORE_BINS): what the sites sent to the Flower server, summed
    rounds: int
    site_reports: list[dict[str, Any]] = field(default_factory=list)
    features: int = 0


def evaluate_fold(
    study: StudyConfig,
    sites: list[SiteConfig],
    tables: dict[str, FeatureTable],
    federation: dict[str, Any],
    fold: int,
) -> FoldResult:
    """Predictions of the federated, pooled and local-only models for the fold's held-out cases."""
    std = federation["standardisation"]
    summary = federation["summary"]
    accepted = {r["site_id"] for r in summary["sites"] if r.get("ok")}
    data: list[SiteData] = [
        site_arrays(tables[s.site_id], s, study, std.features)
        for s in sites
        if s.site_id in accepted
    ]
    X_test = np.concatenate([d.X_test for d in data])
    y_test = np.concatenate([d.y_test for d in data])
    model = build_model(study.model_settings(), len(std.features))
    set_parameters(model, federation["arrays"])
    federated = _sigmoid(predict(model, std.apply(X_test)))
    pooled = fit_centralised(
        study,
        np.concatenate([d.X_train for d in data]),
        np.concatenate([d.y_train for d in data]),
    )(X_test)
    local = {
        d.site_id: fit_centralised(study, d.X_train, d.y_train)(X_test)
        if 0 < d.y_train.sum() < d.y_train.size
        else np.full(y_test.size, np.nan)  # a single class in this fold's training rows: no model
        for d in data
    }
    hist = np.zeros((2, protocol.SCORE_BINS))
    for entry in summary["final"].get("sites", {}).values():
        hist += np.array([entry["hist_neg"], entry["hist_pos"]], dtype=np.float64)
    return FoldResult(
        fold=fold,
        site=[d.site_id for d in data for _ in range(d.y_test.size)],
        case_id=[c for d in data for c in d.case_ids_test],
        y=y_test,
        federated=federated,
        pooled=pooled,
        local=local,
        histograms=hist,
        rounds=int(summary["rounds"]),
        site_reports=list(summary["sites"]),
        features=len(std.features),
    )


def _site_aggregates(folds: list[FoldResult]) -> dict[str, float]:
    """The federated evaluation over all folds from what each site would send per fold."""
    stats = []
    for fold in folds:
        sites = np.array(fold.site)
        for site in dict.fromkeys(fold.site):
            mask = sites == site
            stats.append(
                site_binary_eval(fold.y[mask], fold.federated[mask], n_bins=protocol.SCORE_BINS)
            )
    # calibration: the federated Newton fit over every site's held-out predictions of all folds,
    # which equals the fit on the pooled predictions
    y = np.concatenate([f.y for f in folds])
    return {
        **combine_binary_eval(stats),
        **pooled_calibration(y, np.concatenate([f.federated for f in folds])),
    }


def summarise(folds: list[FoldResult]) -> dict[str, Any]:
    """Pooled-over-folds and per-fold AUCs of every model, and the federated site aggregates."""
    y = np.concatenate([f.y for f in folds])
    fed = np.concatenate([f.federated for f in folds])
    pooled = np.concatenate([f.pooled for f in folds])
    sites = list(dict.fromkeys(s for f in folds for s in f.local))
    local = {
        s: _auc(
            np.concatenate([f.y for f in folds if s in f.local]),
            np.concatenate([f.local[s] for f in folds if s in f.local]),
        )
        for s in sites
    }
    per_fold_fed = [_auc(f.y, f.federated) for f in folds]
    per_fold_pooled = [_auc(f.y, f.pooled) for f in folds]
    hist_auc, hist_bound = auc_from_histograms(np.sum([f.histograms for f in folds], axis=0))
    keep = ("sensitivity", "specificity", "balanced_accuracy", "f1", "brier")
    keep += ("calibration_slope", "calibration_intercept")
    pooled_metrics = binary_metrics(y, pooled)
    return {
        "federated": {
            "auc": _auc(y, fed),
            "auc_from_site_aggregates": hist_auc,
            "auc_binning_bound": hist_bound,
            "auc_fold_mean": float(np.nanmean(per_fold_fed)),
            "auc_per_fold": per_fold_fed,
            "site_aggregates": _site_aggregates(folds),
        },
        "pooled": {
            "auc": _auc(y, pooled),
            "auc_fold_mean": float(np.nanmean(per_fold_pooled)),
            "auc_per_fold": per_fold_pooled,
            **{k: pooled_metrics[k] for k in keep},
        },
        "local_only": {"auc_mean": float(np.nanmean(list(local.values()))), "per_site": local},
        "n_held_out": int(y.size),
        "n_positive": int(y.sum()),
    }


def write_predictions(path: Path, folds: list[FoldResult]) -> None:
    """Every held-out case: fold, site, label and each model's predicted probability."""
    sites = list(dict.fromkeys(s for f in folds for s in f.local))
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["case_id", "site", "fold", "label", "federated", "pooled"]
            + [f"local_{s}" for s in sites]
        )
        for f in folds:
            for i, case in enumerate(f.case_id):
                local = [f.local[s][i] if s in f.local else "" for s in sites]
                writer.writerow(
                    [case, f.site[i], f.fold, int(f.y[i]), f.federated[i], f.pooled[i], *local]
                )


def run_crossval(
    scenario: Any,
    run_dir: Path,
    *,
    sites: list[SiteConfig] | None = None,
    progress: bool = True,
    on_fold: Callable[[FoldResult], None] | None = None,
) -> dict[str, Any]:
    """Sites, extraction once, one federation per fold, comparison; write ``metrics.json``."""
    from fedrad.federation.run_dir import RunDirectory
    from fedrad.simulation import real_cohort
    from fedrad.simulation.harness import run_federations, sites_from_cohort

    k = scenario.cv_folds
    if k < 2:
        raise ConfigError(f"cross-validation needs [simulation] cv_folds >= 2, got {k}")
    if scenario.study.task != "binary":
        raise ConfigError("cross-validated scenarios support binary studies (task = 'binary')")
    run = RunDirectory(run_dir)
    t0 = time.perf_counter()
    cohort: dict[str, Any] | None = None
    if sites is None and real_cohort.is_real_cohort(scenario.cohort):
        spec = real_cohort.cohort_spec(scenario)
        real = real_cohort.build_sites(
            spec, scenario.study, run.path, progress=progress, policy=scenario.policy
        )
        sites, scenario.study, scenario.sites = real.sites, real.study, len(real.sites)
        cohort = real_cohort.real_cohort_summary(real, spec)
    elif sites is None:
        sites = sites_from_cohort(scenario, run.path, progress)
    study: StudyConfig = scenario.study
    timings: dict[str, Any] = {"generate_s": time.perf_counter() - t0}
    t1 = time.perf_counter()
    tables = {s.site_id: site_feature_table(s, study, progress=progress) for s in sites}
    timings["extract_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    studies = [(study.replace(cv_folds=k, cv_fold=f), run.path / f"fold-{f + 1}") for f in range(k)]
    federations = run_federations(studies, sites)
    timings["federate_s"] = time.perf_counter() - t2
    folds: list[FoldResult] = []
    for f, ((fold_study, _), federation) in enumerate(zip(studies, federations, strict=True)):
        folds.append(evaluate_fold(fold_study, sites, tables, federation, f))
        if on_fold is not None:
            on_fold(folds[-1])
    timings["total_s"] = time.perf_counter() - t0
    write_predictions(run.path / "cv_predictions.csv", folds)
    exact = study.training.strategy == "exact"
    metrics: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "task": study.task,
        "strategy": study.training.strategy,
        "sites": len({s for f in folds for s in f.local}),
        "rounds": max(f.rounds for f in folds) if exact else study.training.rounds,
        "cv_folds": k,
        **summarise(folds),
        "rounds_per_fold": [f.rounds for f in folds],
        "site_reports": folds[0].site_reports,
        "features": folds[0].features,
        "timings": timings,
        "metric": "auc",
    }
    if cohort is not None:
        metrics["cohort"] = cohort
    run.write_json("metrics.json", metrics)
    return metrics
