"""DeLong's test: fast midrank algorithm against the direct O(n^2) placement-value formulas."""

import numpy as np
import pytest
from scipy.stats import norm

from fedrad.errors import InputError
from fedrad.learn.federated_eval import score_histograms
from fedrad.learn.metrics import roc_auc
from fedrad.learn.validation import (
    auc_covariance,
    delong_from_histograms,
    delong_paired,
    delong_unpaired,
    paired_histograms,
    placement_values,
)


def _direct(y, scores):
    """AUCs and DeLong covariance from psi(x, y) over all positive-negative pairs."""
    pos, neg = y == 1, y == 0
    v10, v01 = [], []
    for s in scores:
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    v10, v01 = np.array(v10), np.array(v01)
    m, n = v10.shape[1], v01.shape[1]
    s10 = (v10 - v10.mean(1, keepdims=True)) @ (v10 - v10.mean(1, keepdims=True)).T / (m - 1)
    s01 = (v01 - v01.mean(1, keepdims=True)) @ (v01 - v01.mean(1, keepdims=True)).T / (n - 1)
    return v10.mean(axis=1), s10 / m + s01 / n, v10, v01


def _data(seed, n=150, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    a = y * 1.0 + rng.normal(size=n)
    b = 0.6 * a + y * 0.5 + rng.normal(size=n)
    if ties:
        a, b = np.round(a, 0), np.round(b, 0)
    return y, a, b


@pytest.mark.parametrize("ties", [False, True])
def test_fast_equals_direct_placements_and_covariance(ties):
    y, a, b = _data(1, ties=ties)
    auc, cov = auc_covariance(y, np.vstack([a, b]))
    auc_d, cov_d, v10_d, v01_d = _direct(y, [a, b])
    v10, v01 = placement_values(y, a)
    np.testing.assert_allclose(v10, v10_d[0], atol=1e-12)
    np.testing.assert_allclose(v01, v01_d[0], atol=1e-12)
    np.testing.assert_allclose(auc, auc_d, atol=1e-12)
    np.testing.assert_allclose(cov, cov_d, atol=1e-14)
    assert auc[0] == pytest.approx(roc_auc(y, a), abs=1e-12)


def test_paired_z_and_p_from_direct_formula():
    y, a, b = _data(2, ties=True)
    res = delong_paired(y, a, b)
    auc_d, cov_d, _, _ = _direct(y, [a, b])
    z = (auc_d[0] - auc_d[1]) / np.sqrt(cov_d[0, 0] + cov_d[1, 1] - 2 * cov_d[0, 1])
    assert res.z == pytest.approx(z, rel=1e-10)
    assert res.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-10)
    ci = res.ci()
    assert ci[0, 0] < res.auc[0] < ci[0, 1]


def test_unpaired_is_independent_sum_of_variances():
    y, a, _ = _data(3)
    y2, _, b = _data(4, n=90)
    res = delong_unpaired(y, a, y2, b)
    auc_a, var_a, _, _ = _direct(y, [a])
    auc_b, var_b, _, _ = _direct(y2, [b])
    assert res.difference == pytest.approx(auc_a[0] - auc_b[0], abs=1e-12)
    assert res.se_difference == pytest.approx(np.sqrt(var_a[0, 0] + var_b[0, 0]), rel=1e-12)


def test_identical_scores_give_p_one():
    y, a, _ = _data(5)
    res = delong_paired(y, a, a)
    assert res.difference == 0 and res.p_value == 1.0


def test_histogram_form_equals_delong_on_binned_scores_summed_over_sites():
    y, a, b = _data(6, n=300)
    pa, pb = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
    bins = 20
    sites = np.arange(300) % 3
    joint = sum(
        paired_histograms(y[sites == s], pa[sites == s], pb[sites == s], bins) for s in range(3)
    )
    res = delong_from_histograms(joint)
    ia = np.minimum((pa * bins).astype(int), bins - 1).astype(float)
    ib = np.minimum((pb * bins).astype(int), bins - 1).astype(float)
    ref = delong_paired(y, ia, ib)
    np.testing.assert_allclose(res.auc, ref.auc, atol=1e-12)
    np.testing.assert_allclose(res.covariance, ref.covariance, atol=1e-14)
    assert res.z == pytest.approx(ref.z, rel=1e-9)
    auc1, var1 = delong_from_histograms(score_histograms(y, pa, bins))
    auc_ref, cov_ref = auc_covariance(y, ia)
    assert auc1 == pytest.approx(auc_ref[0], abs=1e-12)
    assert var1 == pytest.approx(cov_ref[0, 0], rel=1e-10)


def test_bad_input_is_named():
    with pytest.raises(InputError, match="both positives and negatives"):
        delong_paired(np.ones(5), np.arange(5.0), np.arange(5.0))
    with pytest.raises(InputError, match="score"):
        delong_paired(np.array([0, 1, 0, 1.0]), np.arange(3.0), np.arange(4.0))
