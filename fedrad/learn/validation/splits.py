"""Seeded split helpers (pure functions): stratified k-fold and leave-one-site-out.

Stratified k-fold: within each stratum (label, in ascending order) the cases are permuted by
``numpy.random.default_rng(seed)`` and dealt to folds ``0, 1, ..., k-1`` in turn, each stratum
continuing where the previous stopped; so fold sizes differ by at most one and each fold's count
of a stratum differs from ``n_stratum / k`` by less than one. Every fitted step (harmonisation,
standardisation, selection, model) must be fitted on the training folds only. (The federation's
per-site folds, seeded by the site id, are :func:`fedrad.federation.site_data.cv_folds`.)
Leave-one-site-out: one split per site, that site's cases held out for external validation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike

from fedrad.errors import InputError, SettingsError


def stratified_kfold(strata: ArrayLike, n_folds: int, seed: int = 0) -> np.ndarray:
    """The fold (``0 .. n_folds - 1``) of every case, stratified by ``strata``."""
    labels = np.asarray(strata).reshape(-1)
    if n_folds < 2:
        raise SettingsError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if labels.shape[0] < n_folds:
        raise InputError(f"{labels.shape[0]} cases cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    fold = np.empty(labels.shape[0], dtype=np.int64)
    start = 0
    for value in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == value))
        fold[idx] = (start + np.arange(idx.size)) % n_folds
        start = (start + idx.size) % n_folds
    return fold


def kfold_masks(
    strata: ArrayLike, n_folds: int, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(train_mask, test_mask)`` for each fold of :func:`stratified_kfold`."""
    fold = stratified_kfold(strata, n_folds, seed)
    for k in range(n_folds):
        yield fold != k, fold == k


def leave_one_site_out(sites: ArrayLike) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(site, train_mask, test_mask), ...]`` in sorted site order; needs two sites or more."""
    labels = np.asarray(sites).astype(str).reshape(-1)
    names = sorted(set(labels.tolist()))
    if len(names) < 2:
        raise InputError(f"leave-one-site-out needs at least 2 sites, got {names}")
    return [(s, labels != s, labels == s) for s in names]
