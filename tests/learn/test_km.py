"""Federated Kaplan-Meier on a grid: equal to pooled, and to statsmodels' SurvfuncRight."""

import numpy as np
import pytest
from scipy.stats import norm

from fedrad.errors import SettingsError
from fedrad.learn.survival import SmallCellError, coarsen, grid_counts, kaplan_meier, sum_counts

EDGES = np.arange(3.0, 63.0, 3.0)  # 3-month grid to 60 months


def _cohort(seed=0, n=300, sites=3):
    rng = np.random.default_rng(seed)
    event_time = rng.weibull(1.3, n) * 30.0
    censor = rng.uniform(12.0, 72.0, n)
    time = np.minimum(event_time, censor)
    return time, (event_time <= censor).astype(float), np.arange(n) % sites


def test_federated_equals_pooled_on_grid():
    time, event, site = _cohort()
    fed = sum_counts([grid_counts(time[site == s], event[site == s], EDGES) for s in range(3)])
    pooled = grid_counts(time, event, EDGES)
    np.testing.assert_array_equal(fed, pooled)
    a, b = kaplan_meier(EDGES, fed), kaplan_meier(EDGES, pooled)
    np.testing.assert_array_equal(a.survival, b.survival)
    assert pooled[0, 0, 0] == time.size


def test_matches_statsmodels_survfunc_at_grid_resolution():
    from statsmodels.duration.survfunc import SurvfuncRight

    time, event, _ = _cohort(1)
    km = kaplan_meier(EDGES, grid_counts(time, event, EDGES))
    coarse, ev = coarsen(time, event, EDGES)
    ref = SurvfuncRight(coarse, ev)
    idx = np.searchsorted(EDGES, ref.surv_times)
    assert np.all(EDGES[idx] == ref.surv_times)
    np.testing.assert_allclose(km.survival[idx], ref.surv_prob, atol=1e-12)
    np.testing.assert_allclose(km.se[idx], ref.surv_prob_se, rtol=1e-10)
    np.testing.assert_array_equal(km.at_risk[idx], ref.n_risk)
    # log-log band from the Greenwood variance, written out directly
    s, se = ref.surv_prob, ref.surv_prob_se
    half = norm.ppf(0.975) * se / (s * np.abs(np.log(s)))
    np.testing.assert_allclose(km.low[idx], s ** np.exp(half), rtol=1e-10)
    np.testing.assert_allclose(km.high[idx], s ** np.exp(-half), rtol=1e-10)
    assert np.all(km.low <= km.survival) and np.all(km.survival <= km.high)


def test_minimum_cell_count_refuses_small_cells():
    time, event, _ = _cohort(2, n=40)
    with pytest.raises(SmallCellError, match="coarser time grid"):
        grid_counts(time, event, EDGES, min_cell_count=5)
    coarse_edges = np.array([30.0, 80.0])
    counts = grid_counts(time, event, coarse_edges, min_cell_count=3)
    assert counts[0, 1:].sum() == 40
    with pytest.raises(SmallCellError, match="summed"):
        sum_counts([grid_counts(time[:3], event[:3], EDGES)], min_cell_count=5)


def test_bad_grid():
    with pytest.raises(SettingsError, match="strictly increasing"):
        grid_counts([1.0], [1.0], [3.0, 2.0])
