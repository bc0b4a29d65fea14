"""Centralised comparisons of a simulated federation: a pooled model and local-only models.

These exist only in simulation, where the harness may see every virtual site's rows: the pooled
model is trained on all sites' training rows together (what a study could do if data could be
pooled); each local-only model on one site's rows alone. All are evaluated on the same pooled
held-out set as the federated model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrad.federation.config import StudyConfig
from fedrad.federation.site_data import SiteData
from fedrad.learn.metrics import concordance_index, roc_auc
from fedrad.learn.models import build_model, set_parameters
from fedrad.learn.training import predict, train_local


@dataclass
class HeldOut:
    X: np.ndarray
    y: np.ndarray
    time: np.ndarray | None


def pooled_held_out(sites: list[SiteData]) -> HeldOut:
    X = np.concatenate([s.X_test for s in sites])
    y = np.concatenate([s.y_test for s in sites])
    time = None if sites[0].time_test is None else np.concatenate([s.time_test for s in sites])
    return HeldOut(X, y, time)


def score(study: StudyConfig, model, X: np.ndarray, held: HeldOut) -> float:
    """Held-out AUC (binary) or Harrell's C-index (survival)."""
    eta = predict(model, X)
    if study.task == "binary":
        return float(roc_auc(held.y, eta)) if 0 < held.y.sum() < held.y.size else float("nan")
    return float(concordance_index(held.time, held.y, eta))


def _standardise(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (X - mean) / std


def fit_baseline_model(
    study: StudyConfig,
    X: np.ndarray,
    y: np.ndarray,
    time: np.ndarray | None,
    epochs: int,
    seed: int,
):
    """The study's model trained centrally on ``X`` (standardised) for ``epochs`` epochs."""
    model = build_model(study.model_settings(), X.shape[1])
    target = (time, y) if study.task == "survival" else y
    train_local(
        model,
        X,
        target,
        epochs=epochs,
        lr=study.training.learning_rate,
        batch_size=study.training.batch_size,
        seed=seed,
        optimizer=study.training.optimizer,
        l2=study.model.l2,
    )
    return model


def total_epochs(study: StudyConfig) -> int:
    """Epochs a centralised model gets: what one site does over the whole federation."""
    return max(1, study.training.rounds * study.training.local_epochs)


def pooled_model_score(study: StudyConfig, sites: list[SiteData], held: HeldOut) -> float:
    X = np.concatenate([s.X_train for s in sites])
    y = np.concatenate([s.y_train for s in sites])
    time = None if sites[0].time_train is None else np.concatenate([s.time_train for s in sites])
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std < 1e-12] = 1.0
    model = fit_baseline_model(
        study, _standardise(X, mean, std), y, time, total_epochs(study), study.seed
    )
    return score(study, model, _standardise(held.X, mean, std), held)


def local_model_scores(
    study: StudyConfig, sites: list[SiteData], held: HeldOut
) -> dict[str, float]:
    """Each site's own model (own standardisation), scored on the pooled held-out set."""
    out: dict[str, float] = {}
    for site in sites:
        mean, std = site.X_train.mean(axis=0), site.X_train.std(axis=0)
        std[std < 1e-12] = 1.0
        model = fit_baseline_model(
            study,
            _standardise(site.X_train, mean, std),
            site.y_train,
            site.time_train,
            total_epochs(study),
            study.seed,
        )
        out[site.site_id] = score(study, model, _standardise(held.X, mean, std), held)
    return out


def federated_model_score(
    study: StudyConfig, arrays: list[np.ndarray], mean: np.ndarray, std: np.ndarray, held: HeldOut
) -> float:
    model = build_model(study.model_settings(), held.X.shape[1])
    set_parameters(model, arrays)
    return score(study, model, _standardise(held.X, mean, std), held)
