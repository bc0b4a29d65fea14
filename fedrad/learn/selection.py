"""Federated feature selection: variance and correlation filters, univariate ranking, L1 fits.

Every step works on sums a site can send through secure aggregation, and records for each feature
whether it was kept and why (:class:`FeatureDecision`).

1. **Covariance** from ``(n, sum x, X^T X)`` per site (:func:`site_covariance_sums`): the server's
   ``mean = S1 / n`` and ``cov = (S2 - n mean mean^T) / (n - 1)`` equal the pooled sample values.
   Reveals the site's case count, feature sums and cross-products (hence its means and
   covariance): send through secure aggregation; with DP where the policy asks.
2. **Variance filter**: drop features with ``var <= min_variance`` (constant or nearly so).
3. **Correlation filter**: features taken in ranking order (best first); a feature is dropped when
   ``|r| > max_abs_correlation`` with one already kept (the reason names it and ``r``).
4. **Univariate ranking**: the AUC of each feature from summed per-feature class histograms on
   agreed bin edges (:func:`site_feature_histograms`; binned as in
   :mod:`fedrad.learn.federated_eval`; reveals per-class counts per bin), or the within-site Harrell
   C-index of each feature from per-site pair counts (:func:`site_feature_concordance`; reveals
   concordant/comparable pair counts). The ranking score is ``|AUC - 0.5|`` (``|C - 0.5|``).
5. **L1-penalised logistic / Cox** by proximal Newton (:func:`proximal_newton`): minimise

       F(beta) = -l(beta) + lambda sum_j m_j |beta_j|

   where ``l`` is the summed log-likelihood (logistic, or site-stratified Breslow Cox) and ``m`` the
   penalty mask (intercept unpenalised). At ``beta`` the server receives the summed ``(g, H, l)``
   (:class:`fedrad.learn.newton.SiteStats`, the same messages as exact Newton) and minimises the
   quadratic model ``-g^T d + d^T A d / 2 + lambda ||m (beta + d)||_1`` with ``A = -H`` by cyclic
   coordinate descent (soft-thresholding), then backtracks ``beta + t d`` (``t = 1, 1/2, ...``,
   one query each) until ``F`` decreases by at least ``1e-4 t Delta`` (``Delta`` the model
   decrease, Lee, Sun and Saunders 2014). It stops when ``max |d| <= tol (1 + max |beta|)``.
   ``lambda`` on the summed log-likelihood matches scikit-learn's ``C = 1 / lambda``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from fedrad.errors import InputError, SettingsError
from fedrad.learn._validation import as_binary, as_matrix, as_survival
from fedrad.learn.cox import cox_site_stats
from fedrad.learn.federated_eval import auc_from_histograms
from fedrad.learn.metrics import concordance_counts
from fedrad.learn.newton import SiteStats, logistic_site_stats, sum_site_stats
from fedrad.secure.files import write_atomically


@dataclass(frozen=True)
class FeatureDecision:
    """One feature's fate at one selection step."""

    feature: str
    step: str
    kept: bool
    reason: str


# ---------------------------------------------------------------------------- covariance
def site_covariance_sums(X: ArrayLike) -> list[np.ndarray]:
    """A site's ``[[n], sum x (p,), X^T X (p, p)]`` (all additive over sites)."""
    x = as_matrix(X)
    return [np.array([float(x.shape[0])]), x.sum(axis=0), x.T @ x]


def combine_covariance(site_sums: Sequence[Sequence[ArrayLike]]) -> dict[str, np.ndarray]:
    """Pooled ``n``, ``mean``, ``cov`` (ddof 1) and ``corr`` from the sites' sums."""
    if not site_sums:
        raise InputError("no site covariance sums to combine")
    n = float(sum(np.asarray(s[0]).reshape(-1)[0] for s in site_sums))
    s1 = np.sum([np.asarray(s[1], dtype=np.float64) for s in site_sums], axis=0)
    s2 = np.sum([np.asarray(s[2], dtype=np.float64) for s in site_sums], axis=0)
    if n < 2 or s2.shape != (s1.size, s1.size):
        raise InputError("covariance needs at least 2 cases and (p,), (p, p) sums")
    mean = s1 / n
    cov = (s2 - n * np.outer(mean, mean)) / (n - 1.0)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(np.outer(sd, sd) > 0, cov / np.outer(sd, sd), 0.0)
    np.fill_diagonal(corr, 1.0)
    return {"n": np.array(n), "mean": mean, "cov": cov, "corr": corr}


def variance_filter(
    variance: ArrayLike, names: Sequence[str], min_variance: float = 1e-10
) -> list[FeatureDecision]:
    """Keep features whose pooled variance exceeds ``min_variance``."""
    v = np.asarray(variance, dtype=np.float64).reshape(-1)
    if v.size != len(names):
        raise InputError(f"{v.size} variances for {len(names)} feature names")
    return [
        FeatureDecision(
            n,
            "variance",
            bool(x > min_variance),
            f"variance {x:.3g} {'>' if x > min_variance else '<='} {min_variance:.3g}",
        )
        for n, x in zip(names, v, strict=True)
    ]


def correlation_filter(
    corr: ArrayLike,
    names: Sequence[str],
    max_abs_correlation: float = 0.9,
    ranking: ArrayLike | None = None,
) -> list[FeatureDecision]:
    """Greedy filter in ``ranking`` order (higher first; default: the given order)."""
    r = np.asarray(corr, dtype=np.float64)
    p = len(names)
    if r.shape != (p, p):
        raise InputError(f"correlation matrix is {r.shape}, expected ({p}, {p})")
    if not 0.0 < max_abs_correlation <= 1.0:
        raise SettingsError(f"max_abs_correlation must lie in (0, 1], got {max_abs_correlation}")
    order = np.arange(p) if ranking is None else np.argsort(-np.asarray(ranking), kind="stable")
    kept: list[int] = []
    out: dict[int, FeatureDecision] = {}
    for j in order:
        clash = [k for k in kept if abs(r[j, k]) > max_abs_correlation]
        if clash:
            k = max(clash, key=lambda i: abs(r[j, i]))
            out[j] = FeatureDecision(
                names[j],
                "correlation",
                False,
                f"|r| = {abs(r[j, k]):.3f} > {max_abs_correlation} with kept {names[k]}",
            )
        else:
            kept.append(int(j))
            out[j] = FeatureDecision(
                names[j],
                "correlation",
                True,
                f"|r| <= {max_abs_correlation} with every kept feature",
            )
    return [out[j] for j in range(p)]


# ---------------------------------------------------------------------- univariate ranking
def feature_bin_edges(mean: ArrayLike, sd: ArrayLike, n_bins: int = 200, width: float = 4.0):
    """Agreed per-feature bin edges ``(p, n_bins + 1)`` on ``mean +/- width sd`` (values beyond
    fall in the end bins)."""
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(sd, dtype=np.float64)
    s = np.where(s > 0, s, 1.0)
    return m[:, None] + s[:, None] * np.linspace(-width, width, n_bins + 1)[None, :]


def site_feature_histograms(X: ArrayLike, y: ArrayLike, edges: ArrayLike) -> np.ndarray:
    """A site's ``(p, 2, B)`` class counts of every feature in its bins (row 1: positives)."""
    x = as_matrix(X)
    yy = as_binary(y, x.shape[0]).astype(np.int64)
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] != x.shape[1]:
        raise InputError(f"bin edges must be (p={x.shape[1]}, B + 1)")
    B = e.shape[1] - 1
    out = np.zeros((x.shape[1], 2, B))
    for j in range(x.shape[1]):
        k = np.clip(np.searchsorted(e[j], x[:, j], side="right") - 1, 0, B - 1)
        np.add.at(out[j], (yy, k), 1.0)
    return out


def univariate_auc(hist: ArrayLike) -> np.ndarray:
    """Binned AUC of every feature from summed ``(p, 2, B)`` histograms."""
    return np.array([auc_from_histograms(h)[0] for h in np.asarray(hist, dtype=np.float64)])


def site_feature_concordance(X: ArrayLike, time: ArrayLike, event: ArrayLike) -> np.ndarray:
    """A site's ``(p, 2)`` within-site ``[concordant + 0.5 tied, comparable]`` per feature."""
    x = as_matrix(X)
    t, e = as_survival(time, event, x.shape[0])
    return np.array([concordance_counts(t, e, x[:, j]) for j in range(x.shape[1])])


def univariate_cindex(counts: ArrayLike) -> np.ndarray:
    """Within-site C-index of every feature from summed ``(p, 2)`` pair counts."""
    c = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c[:, 1] > 0, c[:, 0] / c[:, 1], np.nan)


def ranking_decisions(
    score: ArrayLike, names: Sequence[str], metric: str, top_k: int | None = None
) -> list[FeatureDecision]:
    """Rank by ``|score - 0.5|``; keep the ``top_k`` best (all when ``None``)."""
    s = np.asarray(score, dtype=np.float64)
    strength = np.nan_to_num(np.abs(s - 0.5), nan=-1.0)
    order = np.argsort(-strength, kind="stable")
    rank = np.empty(s.size, dtype=np.int64)
    rank[order] = np.arange(1, s.size + 1)
    k = s.size if top_k is None else top_k
    return [
        FeatureDecision(
            names[j],
            f"univariate {metric}",
            bool(rank[j] <= k),
            f"{metric} {s[j]:.3f}, rank {rank[j]} of {s.size}"
            + ("" if rank[j] <= k else f" (beyond top {k})"),
        )
        for j in range(s.size)
    ]


# ---------------------------------------------------------------------- proximal Newton
@dataclass(frozen=True)
class L1Fit:
    """Result of :func:`proximal_newton`."""

    beta: np.ndarray
    objective: float
    rounds: int
    converged: bool


def _soft(z: float, k: float) -> float:
    return float(np.sign(z) * max(abs(z) - k, 0.0))


def _quadratic_step(
    beta: np.ndarray, g: np.ndarray, A: np.ndarray, pen: np.ndarray, sweeps: int = 500
) -> np.ndarray:
    """Minimiser ``z`` of ``-g^T (z - beta) + (z - beta)^T A (z - beta) / 2 + sum pen |z|``."""
    z = beta.copy()
    r = np.zeros_like(beta)  # A (z - beta)
    for _ in range(sweeps):
        biggest = 0.0
        for j in range(z.size):
            a = A[j, j]
            if a <= 0:
                continue
            grad_j = -g[j] + r[j]
            new = _soft(a * z[j] - grad_j, pen[j]) / a
            change = new - z[j]
            if change != 0.0:
                r += A[:, j] * change
                z[j] = new
                biggest = max(biggest, abs(change))
        if biggest <= 1e-13 * (1.0 + np.max(np.abs(z))):
            break
    return z


def proximal_newton(
    query: Callable[[np.ndarray], SiteStats],
    beta0: ArrayLike,
    l1: float,
    penalty_mask: ArrayLike | None = None,
    tol: float = 1e-9,
    max_rounds: int = 200,
) -> L1Fit:
    """Minimise ``-l(beta) + l1 ||m beta||_1`` from ``query(beta)``: the sites' summed statistics."""
    if not l1 >= 0:
        raise SettingsError(f"l1 must be non-negative, got {l1!r}")
    beta = np.asarray(beta0, dtype=np.float64).reshape(-1).copy()
    mask = np.ones(beta.size) if penalty_mask is None else np.asarray(penalty_mask, float)
    pen = l1 * mask

    def objective(b: np.ndarray, s: SiteStats) -> float:
        return -s.loglik + float(np.sum(pen * np.abs(b)))

    stats = query(beta)
    value, rounds = objective(beta, stats), 1
    while rounds < max_rounds:
        A = -np.asarray(stats.hess, dtype=np.float64)
        z = _quadratic_step(beta, stats.grad, A, pen)
        d = z - beta
        if np.max(np.abs(d), initial=0.0) <= tol * (1.0 + np.max(np.abs(beta), initial=0.0)):
            return L1Fit(beta, value, rounds, True)
        delta = -stats.grad @ d + float(np.sum(pen * (np.abs(z) - np.abs(beta))))
        t = 1.0
        while rounds < max_rounds:
            cand = beta + t * d
            cand_stats = query(cand)
            rounds += 1
            cand_value = objective(cand, cand_stats)
            if cand_value <= value + 1e-4 * t * delta + 1e-12 * (1.0 + abs(value)):
                beta, stats, value = cand, cand_stats, cand_value
                break
            t *= 0.5
            if t < 1e-10:
                return L1Fit(beta, value, rounds, False)
    return L1Fit(beta, value, rounds, False)


def l1_logistic(
    sites: Sequence[tuple[ArrayLike, ArrayLike]], l1: float, tol: float = 1e-9
) -> L1Fit:
    """L1 logistic over ``[(X_s, y_s), ...]``; ``beta = (intercept, coefs)``, intercept free."""
    if not sites:
        raise InputError("l1_logistic needs at least one site")
    p = as_matrix(sites[0][0]).shape[1]
    mask = np.r_[0.0, np.ones(p)]
    return proximal_newton(
        lambda b: sum_site_stats([logistic_site_stats(X, y, b) for X, y in sites]),
        np.zeros(p + 1),
        l1,
        mask,
        tol,
    )


def l1_cox(
    sites: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]], l1: float, tol: float = 1e-9
) -> L1Fit:
    """L1 site-stratified Breslow Cox over ``[(X_s, time_s, event_s), ...]``."""
    if not sites:
        raise InputError("l1_cox needs at least one site")
    p = as_matrix(sites[0][0]).shape[1]
    return proximal_newton(
        lambda b: sum_site_stats([cox_site_stats(X, t, e, b) for X, t, e in sites]),
        np.zeros(p),
        l1,
        None,
        tol,
    )


def lasso_decisions(
    coefficients: ArrayLike, names: Sequence[str], l1: float, model: str
) -> list[FeatureDecision]:
    """Kept where the L1 coefficient is non-zero."""
    c = np.asarray(coefficients, dtype=np.float64).reshape(-1)
    if c.size != len(names):
        raise InputError(f"{c.size} coefficients for {len(names)} feature names")
    return [
        FeatureDecision(
            n,
            f"L1 {model}",
            bool(b != 0.0),
            f"coefficient {b:.4g} at lambda {l1:g}"
            if b != 0.0
            else f"shrunk to 0 at lambda {l1:g}",
        )
        for n, b in zip(names, c, strict=True)
    ]


def write_selection(path: Path, decisions: Sequence[FeatureDecision]) -> Path:
    """Write the decisions as JSON (``{"decisions": [...], "selected": [...]}``) atomically.

    ``selected`` lists the features kept at every step they went through.
    """
    fates: dict[str, bool] = {}
    for d in decisions:
        fates[d.feature] = fates.get(d.feature, True) and d.kept
    body = {
        "decisions": [asdict(d) for d in decisions],
        "selected": [f for f, k in fates.items() if k],
    }
    return write_atomically(Path(path), json.dumps(body, indent=2).encode())
