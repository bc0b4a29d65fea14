"""Bootstrap CIs: seeded, stratified, and with near-nominal coverage on synthetic data."""

import numpy as np
import pytest

from fedrad.errors import SettingsError
from fedrad.learn.federated_eval import score_histograms
from fedrad.learn.metrics import concordance_index
from fedrad.learn.validation import (
    bootstrap_auc,
    bootstrap_auc_histograms,
    bootstrap_cindex,
    combine_concordance_replicates,
    site_concordance_replicates,
)
from fedrad.learn.validation.bootstrap import resample_indices

TRUE_AUC_SHIFT = 1.0  # positives ~ N(1, 1), negatives ~ N(0, 1): AUC = Phi(1 / sqrt(2))


def _sample(rng, n=80):
    y = (np.arange(n) % 2).astype(float)
    return y, rng.normal(size=n) + TRUE_AUC_SHIFT * y


def test_seeded_and_stratified():
    rng = np.random.default_rng(0)
    y, s = _sample(rng)
    a = bootstrap_auc(y, s, n_boot=200, seed=3)
    b = bootstrap_auc(y, s, n_boot=200, seed=3)
    assert (a.low, a.high) == (b.low, b.high)
    assert a.low < a.estimate < a.high and a.n_dropped == 0
    idx = resample_indices(y, np.random.default_rng(1))
    assert y[idx].sum() == y.sum()


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_auc_coverage_near_nominal(method):
    from scipy.stats import norm

    truth = norm.cdf(TRUE_AUC_SHIFT / np.sqrt(2))
    rng = np.random.default_rng(11)
    trials, hits = 60, 0
    for t in range(trials):
        y, s = _sample(rng)
        ci = bootstrap_auc(y, s, n_boot=200, seed=t, method=method)
        hits += ci.low <= truth <= ci.high
    # 95% nominal; with 60 trials the binomial 99.9% range is about [0.83, 1]
    assert hits / trials >= 0.83


def test_cindex_ci_contains_estimate():
    rng = np.random.default_rng(2)
    risk = rng.normal(size=120)
    time = rng.exponential(np.exp(-risk))
    event = (rng.random(120) < 0.7).astype(float)
    ci = bootstrap_cindex(time, event, risk, n_boot=100, seed=0, method="bca")
    assert ci.estimate == pytest.approx(concordance_index(time, event, risk))
    assert ci.low < ci.estimate < ci.high


def test_federated_forms():
    rng = np.random.default_rng(4)
    y, s = _sample(rng, 200)
    p = 1 / (1 + np.exp(-s))
    ci = bootstrap_auc_histograms(score_histograms(y, p, 50), n_boot=300, seed=1)
    pooled = bootstrap_auc(y, p, n_boot=300, seed=1)
    assert ci.low < ci.estimate < ci.high
    assert abs(ci.high - ci.low - (pooled.high - pooled.low)) < 0.05
    time = rng.exponential(np.exp(-s))
    event = np.ones_like(time)
    reps = [
        site_concordance_replicates(time[k::2], event[k::2], s[k::2], 50, seed=9) for k in range(2)
    ]
    comb = combine_concordance_replicates(reps)
    c0 = (reps[0][0, 0] + reps[1][0, 0]) / (reps[0][0, 1] + reps[1][0, 1])
    assert comb.estimate == pytest.approx(c0) and comb.low < comb.estimate < comb.high


def test_bad_settings():
    y, s = _sample(np.random.default_rng(0))
    with pytest.raises(SettingsError, match="unknown bootstrap method"):
        bootstrap_auc(y, s, method="basic")
    with pytest.raises(SettingsError, match="n_boot"):
        bootstrap_auc(y, s, n_boot=3)
