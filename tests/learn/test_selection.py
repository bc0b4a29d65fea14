"""Federated feature selection against pooled references (numpy, scikit-learn, a direct Cox)."""

import json
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize

from fedrad.learn.metrics import concordance_index, roc_auc
from fedrad.learn.selection import (
    combine_covariance,
    correlation_filter,
    feature_bin_edges,
    l1_cox,
    l1_logistic,
    lasso_decisions,
    ranking_decisions,
    site_covariance_sums,
    site_feature_concordance,
    site_feature_histograms,
    univariate_auc,
    univariate_cindex,
    variance_filter,
    write_selection,
)

NAMES = [f"f{j}" for j in range(6)]


def _table(seed=0, n=300):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[:, 3] = X[:, 0] + 0.1 * rng.normal(size=n)  # near-copy of f0
    X[:, 5] = 2.0  # constant
    eta = 1.2 * X[:, 0] - 0.8 * X[:, 1] + 0.3 * X[:, 2]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return X, y, np.arange(n) % 3, eta


def test_covariance_and_filters_equal_pooled():
    X, _, site, _ = _table()
    cov = combine_covariance([site_covariance_sums(X[site == s]) for s in range(3)])
    np.testing.assert_allclose(cov["cov"], np.cov(X, rowvar=False), atol=1e-12)
    np.testing.assert_allclose(cov["mean"], X.mean(axis=0), atol=1e-12)
    var = variance_filter(np.diag(cov["cov"]), NAMES)
    assert [d.kept for d in var] == [True] * 5 + [False]
    corr = correlation_filter(cov["corr"], NAMES, 0.9, ranking=[4, 2, 1, 3, 0, 0])
    dropped = {d.feature: d.reason for d in corr if not d.kept}
    assert list(dropped) == ["f3"] and "with kept f0" in dropped["f3"]


def test_univariate_rankings():
    X, y, site, eta = _table(1)
    cov = combine_covariance([site_covariance_sums(X[site == s]) for s in range(3)])
    edges = feature_bin_edges(cov["mean"], np.sqrt(np.diag(cov["cov"])), n_bins=400)
    hist = sum(site_feature_histograms(X[site == s], y[site == s], edges) for s in range(3))
    auc = univariate_auc(hist)
    exact = np.array([roc_auc(y, X[:, j]) for j in range(6)])
    assert np.max(np.abs(auc[:5] - exact[:5])) < 0.01
    ranks = ranking_decisions(auc, NAMES, "AUC", top_k=2)
    assert {d.feature for d in ranks if d.kept} == {"f0", "f3"}
    rng = np.random.default_rng(2)
    time = rng.exponential(np.exp(-eta))
    event = (rng.random(y.size) < 0.8).astype(float)
    counts = sum(
        site_feature_concordance(X[site == s], time[site == s], event[site == s]) for s in range(3)
    )
    c = univariate_cindex(counts)
    one_site = site == 0
    assert c.shape == (6,) and c[0] > 0.6
    single = univariate_cindex(
        site_feature_concordance(X[one_site], time[one_site], event[one_site])
    )
    assert single[1] == pytest.approx(
        concordance_index(time[one_site], event[one_site], X[one_site, 1])
    )


def test_l1_logistic_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    X, y, site, _ = _table(3)
    X = X[:, :5]
    lam = 8.0
    fit = l1_logistic([(X[site == s], y[site == s]) for s in range(3)], lam)
    assert fit.converged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LogisticRegression(
            C=1 / lam, l1_ratio=1.0, solver="saga", tol=1e-12, max_iter=200000
        ).fit(X, y)
    ours = fit.beta
    np.testing.assert_allclose(ours[1:], ref.coef_[0], atol=2e-5)
    assert ours[0] == pytest.approx(ref.intercept_[0], abs=2e-5)
    assert np.sum(ours[1:] == 0) >= 1  # lasso zeroes some coefficients exactly
    decisions = lasso_decisions(ours[1:], NAMES[:5], lam, "logistic")
    assert {d.feature for d in decisions if d.kept} == {
        NAMES[j] for j in np.flatnonzero(ref.coef_[0] != 0)
    }


def _breslow(beta, X, time, event, strata):
    """Direct O(n^2) stratified Breslow negative log partial likelihood and its gradient."""
    value, grad = 0.0, np.zeros(X.shape[1])
    for s in np.unique(strata):
        Xs, ts, es = X[strata == s], time[strata == s], event[strata == s]
        w = np.exp(Xs @ beta)
        for i in np.flatnonzero(es == 1):
            risk = ts >= ts[i]
            s0 = w[risk].sum()
            value -= Xs[i] @ beta - np.log(s0)
            grad -= Xs[i] - (w[risk] @ Xs[risk]) / s0
    return value, grad


def test_l1_cox_matches_direct_reference():
    X, _, site, eta = _table(4, n=180)
    X = X[:, :5]
    rng = np.random.default_rng(5)
    time = np.round(rng.exponential(np.exp(-eta)), 2)
    event = (rng.random(time.size) < 0.75).astype(float)
    lam = 6.0
    fit = l1_cox([(X[site == s], time[site == s], event[site == s]) for s in range(3)], lam)
    assert fit.converged
    p = X.shape[1]

    def split(v):
        b = v[:p] - v[p:]
        f, g = _breslow(b, X, time, event, site)
        return f + lam * v.sum(), np.r_[g, -g] + lam

    ref = minimize(
        split,
        np.zeros(2 * p),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * (2 * p),
        options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 5000},
    )
    b_ref = ref.x[:p] - ref.x[p:]
    np.testing.assert_allclose(fit.beta, b_ref, atol=1e-5)
    assert fit.objective == pytest.approx(ref.fun, rel=1e-9)
    assert np.any(fit.beta == 0) and np.any(fit.beta != 0)


def test_write_selection(tmp_path):
    d = variance_filter([1.0, 0.0], ["a", "b"]) + ranking_decisions([0.7, 0.4], ["a", "b"], "AUC")
    path = write_selection(tmp_path / "selection.json", d)
    body = json.loads(path.read_text())
    assert body["selected"] == ["a"] and len(body["decisions"]) == 4
