"""The stratified cross-validation split of a site's cases (study.cv_folds, study.cv_fold)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrad.federation.config import StudyConfig
from fedrad.federation.site_data import (
    check_site,
    cv_folds,
    held_out_mask,
    site_arrays,
    site_feature_table,
)
from tests.federation.helpers import write_site


def _labels(n_pos: int, n_neg: int, seed: int = 0) -> np.ndarray:
    y = np.array([1.0] * n_pos + [0.0] * n_neg)
    return np.random.default_rng(seed).permutation(y)


@pytest.mark.parametrize(("n_pos", "n_neg", "k"), [(14, 19, 5), (2, 6, 5), (3, 5, 3), (7, 0, 4)])
def test_every_case_is_held_out_exactly_once(n_pos: int, n_neg: int, k: int) -> None:
    y = _labels(n_pos, n_neg)
    masks = [held_out_mask(y, StudyConfig(cv_folds=k, cv_fold=f, seed=42), "GE") for f in range(k)]
    np.testing.assert_array_equal(np.sum(masks, axis=0), np.ones(y.size))


@pytest.mark.parametrize(("n_pos", "n_neg", "k"), [(14, 19, 5), (2, 6, 5), (19, 32, 3)])
def test_folds_are_stratified_and_balanced(n_pos: int, n_neg: int, k: int) -> None:
    y = _labels(n_pos, n_neg, seed=3)
    fold = cv_folds(y, k, seed=42, site_id="Philips")
    sizes = np.bincount(fold, minlength=k)
    assert sizes.max() - sizes.min() <= 1
    for cls, n in ((1.0, n_pos), (0.0, n_neg)):
        per_fold = np.bincount(fold[y == cls], minlength=k)
        # each fold holds floor or ceil of n / k cases of the class
        assert set(per_fold) <= {n // k, -(-n // k)}, (cls, per_fold)


def test_split_is_deterministic_in_seed_and_site() -> None:
    y = _labels(14, 19)
    first = cv_folds(y, 5, seed=42, site_id="GE")
    np.testing.assert_array_equal(first, cv_folds(y, 5, seed=42, site_id="GE"))
    assert not np.array_equal(first, cv_folds(y, 5, seed=43, site_id="GE"))
    assert not np.array_equal(first, cv_folds(y, 5, seed=42, site_id="Siemens"))
    with pytest.raises(ValueError, match="at least 2 folds"):
        cv_folds(y, 1, seed=42, site_id="GE")


def test_site_arrays_train_and_held_out_never_overlap(tmp_path: Path) -> None:
    site = write_site(tmp_path, "north", 37, seed=5)
    base = StudyConfig(min_cases=5, cv_folds=4, seed=11)
    table = site_feature_table(site, base)
    features = table.feature_names
    held_ids: list[str] = []
    for f in range(4):
        study = base.replace(cv_fold=f)
        data = site_arrays(table, site, study, features)
        assert data.X_train.shape[0] + data.X_test.shape[0] == 37
        # the held-out rows are not among the training rows
        train_rows = {tuple(r) for r in data.X_train}
        assert not any(tuple(r) in train_rows for r in data.X_test)
        held_ids += data.case_ids_test
        report = check_site(table, site, study)
        assert (report.n_train, report.n_test) == (data.X_train.shape[0], data.X_test.shape[0])
    assert sorted(held_ids) == sorted(table.case_ids)


def test_without_cv_the_test_fraction_split_is_unchanged() -> None:
    y = _labels(20, 30)
    study = StudyConfig(test_fraction=0.3, seed=42)
    mask = held_out_mask(y, study, "GE")
    assert mask.sum() == 6 + 9  # round(0.3 * 20) positives and round(0.3 * 30) negatives
    np.testing.assert_array_equal(mask, held_out_mask(y, study, "GE"))
