"""Calibration slope / intercept CIs against statsmodels' Logit and GLM with an offset."""

import numpy as np
import pytest

from fedrad.learn.federated_calibration import calibration_statistics
from fedrad.learn.metrics import logit
from fedrad.learn.validation import calibration_with_ci, pooled_calibration_ci

sm = pytest.importorskip("statsmodels.api", reason="statsmodels (dev extra) is not installed")


def _data(seed=0, n=400):
    rng = np.random.default_rng(seed)
    lp = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.7 * lp)))).astype(float)
    return y, 1 / (1 + np.exp(-lp))


def test_matches_statsmodels_wald_intervals():
    y, p = _data()
    res = pooled_calibration_ci(y, p)
    lp = logit(p)
    fit = sm.Logit(y, sm.add_constant(lp)).fit(disp=0, tol=1e-12)
    ci = fit.conf_int(0.05)
    assert res["calibration_slope"] == pytest.approx(fit.params[1], abs=1e-8)
    assert res["calibration_slope_se"] == pytest.approx(fit.bse[1], rel=1e-6)
    assert res["calibration_slope_low"] == pytest.approx(ci[1, 0], abs=1e-6)
    assert res["calibration_slope_high"] == pytest.approx(ci[1, 1], abs=1e-6)
    glm = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=lp).fit(tol=1e-12)
    gci = glm.conf_int(0.05)
    assert res["calibration_intercept"] == pytest.approx(glm.params[0], abs=1e-8)
    assert res["calibration_intercept_low"] == pytest.approx(gci[0, 0], abs=1e-6)
    assert res["calibration_intercept_high"] == pytest.approx(gci[0, 1], abs=1e-6)


def test_federated_query_equals_pooled():
    y, p = _data(1)
    sites = np.arange(y.size) % 3
    fed = calibration_with_ci(
        lambda c: sum(calibration_statistics(y[sites == s], p[sites == s], c) for s in range(3))
    )
    pooled = pooled_calibration_ci(y, p)
    for key in ("calibration_slope_low", "calibration_slope_high", "calibration_intercept_se"):
        assert fed[key] == pytest.approx(pooled[key], abs=1e-9)


def test_exchanges_counts_every_query():
    y, p = _data(2)
    calls = []

    def query(c):
        calls.append(c)
        return calibration_statistics(y, p, c)

    res = calibration_with_ci(query)
    assert res["calibration_exchanges"] == len(calls)
