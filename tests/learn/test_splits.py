"""Stratified k-fold and leave-one-site-out: partitions, balance, seeding."""

import numpy as np
import pytest

from fedrad.errors import InputError, SettingsError
from fedrad.learn.validation import kfold_masks, leave_one_site_out, stratified_kfold


def test_stratified_kfold_partition_and_balance():
    y = np.array([0] * 37 + [1] * 13)
    fold = stratified_kfold(y, 5, seed=4)
    assert np.array_equal(fold, stratified_kfold(y, 5, seed=4))
    assert not np.array_equal(fold, stratified_kfold(y, 5, seed=5))
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for c in (0, 1):
        counts = np.bincount(fold[y == c], minlength=5)
        assert np.all(np.abs(counts - (y == c).sum() / 5) < 1)
    tests = [test for _, test in kfold_masks(y, 5, seed=4)]
    assert np.array_equal(np.sum(tests, axis=0), np.ones(50))


def test_leave_one_site_out():
    sites = np.array(["b", "a", "b", "c", "a"])
    splits = leave_one_site_out(sites)
    assert [s for s, _, _ in splits] == ["a", "b", "c"]
    for s, train, test in splits:
        assert np.all(sites[test] == s) and not np.any(sites[train] == s)
    with pytest.raises(InputError, match="at least 2 sites"):
        leave_one_site_out(["a", "a"])
    with pytest.raises(SettingsError, match="at least 2 folds"):
        stratified_kfold(sites, 1)
