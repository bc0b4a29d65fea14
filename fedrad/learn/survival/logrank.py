"""(Stratified) log-rank test from grid counts: each site sends its O - E and variance sums.

For groups ``g = 1..G`` in one stratum, at grid interval ``k`` with ``n_gk`` at risk and ``d_gk``
events (``n_k``, ``d_k`` their totals):

    (O - E)_g = sum_k (d_gk - n_gk d_k / n_k)
    V_gh      = sum_k d_k (n_k - d_k) / (n_k - 1) * (n_gk / n_k) (delta_gh - n_hk / n_k)

(terms with ``n_k < 2`` are 0). The stratified statistic sums ``O - E`` and ``V`` over strata (here
the sites: a separate baseline hazard per site) and is ``chi2 = u^T V^-1 u`` on ``u = (O - E)``
without its last group, with ``G - 1`` degrees of freedom. A site computes its sums from its own
``(G, 3, K)`` counts (:func:`site_logrank_sums`), the server adds them (:func:`combine_logrank`).
The unstratified pooled test is :func:`logrank_sums` of the *summed* counts.

What a site's sums reveal: ``G + G^2`` numbers (observed minus expected events and their
covariance over the whole grid), fewer than its counts; send them through secure aggregation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import chi2

from fedrad.errors import InputError
from fedrad.learn.survival.grid import grid_counts


@dataclass(frozen=True)
class LogRankResult:
    """Observed minus expected events per group, their covariance, chi-square, df, p-value."""

    observed_minus_expected: np.ndarray
    variance: np.ndarray
    statistic: float
    df: int
    p_value: float


def logrank_sums(counts: ArrayLike) -> np.ndarray:
    """``[O - E (G values), V (G x G values, row-major)]`` of one stratum's ``(G, 3, K)`` counts."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 3 or c.shape[1] != 3 or c.shape[0] < 2:
        raise InputError("log-rank needs (groups >= 2, 3, K) counts")
    n_g, d_g = c[:, 0, :], c[:, 1, :]
    n, d = n_g.sum(axis=0), d_g.sum(axis=0)
    ok = n >= 2
    share = np.where(n > 0, n_g / np.where(n > 0, n, 1.0), 0.0)
    o_e = np.sum(d_g - share * d, axis=1)
    scale = np.where(ok, d * (n - d) / np.where(ok, n - 1.0, 1.0), 0.0)
    G = c.shape[0]
    v = np.einsum("k,gk,gh->gh", scale, share, np.eye(G)) - np.einsum(
        "k,gk,hk->gh", scale, share, share
    )
    return np.concatenate([o_e, v.ravel()])


def site_logrank_sums(
    time: ArrayLike,
    event: ArrayLike,
    group: ArrayLike,
    edges: ArrayLike,
    n_groups: int = 2,
    min_cell_count: int = 0,
) -> np.ndarray:
    """A site's log-rank sums (one stratum) at grid resolution; ``G + G^2`` values."""
    counts = grid_counts(time, event, edges, group, n_groups, min_cell_count)
    return logrank_sums(counts)


def combine_logrank(site_sums: Sequence[ArrayLike], n_groups: int = 2) -> LogRankResult:
    """The stratified log-rank test from the sites' summed ``O - E`` and variance."""
    if not site_sums:
        raise InputError("no site log-rank sums to combine")
    G = n_groups
    total = np.sum([np.asarray(s, dtype=np.float64).reshape(-1) for s in site_sums], axis=0)
    if total.shape != (G + G * G,):
        raise InputError(f"log-rank sums must hold {G + G * G} values for {G} groups")
    u, v = total[:G], total[G:].reshape(G, G)
    try:
        stat = float(u[:-1] @ np.linalg.solve(v[:-1, :-1], u[:-1]))
    except np.linalg.LinAlgError:
        stat = float("nan")
    return LogRankResult(u, v, stat, G - 1, float(chi2.sf(stat, G - 1)))
