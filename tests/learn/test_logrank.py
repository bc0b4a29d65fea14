"""Stratified log-rank from per-site sums against statsmodels' survdiff; median risk groups."""

import numpy as np
import pytest

from fedrad.errors import InputError
from fedrad.learn.survival import (
    coarsen,
    combine_logrank,
    federated_median,
    grid_counts,
    logrank_sums,
    risk_groups,
    site_counts_below,
    site_logrank_sums,
)

EDGES = np.arange(2.0, 62.0, 2.0)


def _cohort(seed=0, n=400, sites=4):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    site = rng.integers(0, sites, n)
    event_time = rng.weibull(1.3, n) * 30.0 * np.exp(-0.5 * risk - 0.3 * site)
    censor = rng.uniform(12.0, 72.0, n)
    return risk, np.minimum(event_time, censor), (event_time <= censor).astype(float), site


def test_median_groups_equal_pooled_median():
    risk, _, _, site = _cohort()
    cut = federated_median(
        lambda t: sum(site_counts_below(risk[site == s], t) for s in range(4)), -10.0, 10.0
    )
    np.testing.assert_array_equal(risk_groups(risk, cut), risk > np.median(risk))
    with pytest.raises(InputError, match="bracket"):
        federated_median(lambda t: site_counts_below(risk, t), 5.0, 10.0)


@pytest.mark.parametrize("n_groups", [2, 3])
def test_stratified_matches_statsmodels_survdiff(n_groups):
    from statsmodels.duration.survfunc import survdiff

    risk, time, event, site = _cohort(1)
    group = np.digitize(risk, np.quantile(risk, np.linspace(0, 1, n_groups + 1)[1:-1]))
    sums = [
        site_logrank_sums(time[site == s], event[site == s], group[site == s], EDGES, n_groups)
        for s in range(4)
    ]
    res = combine_logrank(sums, n_groups)
    coarse, ev = coarsen(time, event, EDGES)
    stat, p = survdiff(coarse, ev, group, strata=site)
    assert res.statistic == pytest.approx(stat, rel=1e-9)
    assert res.p_value == pytest.approx(p, rel=1e-7)
    assert res.df == n_groups - 1
    # unstratified: the same formulas on the summed counts
    counts = sum(
        grid_counts(time[site == s], event[site == s], EDGES, group[site == s], n_groups)
        for s in range(4)
    )
    pooled = combine_logrank([logrank_sums(counts)], n_groups)
    stat0, _ = survdiff(coarse, ev, group)
    assert pooled.statistic == pytest.approx(stat0, rel=1e-9)


def test_observed_minus_expected_sums_to_zero():
    risk, time, event, _ = _cohort(2)
    res = combine_logrank([site_logrank_sums(time, event, (risk > 0).astype(int), EDGES)])
    assert abs(res.observed_minus_expected.sum()) < 1e-9
    assert res.p_value < 0.05  # risk does shorten survival
