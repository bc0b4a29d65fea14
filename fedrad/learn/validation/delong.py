"""DeLong's test for areas under ROC curves, by the fast midrank algorithm of Sun and Xu (2014).

For ``m`` positives with scores ``X_i`` and ``n`` negatives with scores ``Y_j`` let
``psi(x, y) = 1`` if ``x > y``, ``0.5`` if ``x = y``, else ``0``. The placement values are

    V10_i = (1/n) sum_j psi(X_i, Y_j),      V01_j = (1/m) sum_i psi(X_i, Y_j),

and ``AUC = mean(V10) = mean(V01)``. Sun and Xu obtain them in ``O((m + n) log(m + n))`` from
midranks: with ``Z`` the midranks in the combined sample, ``R`` those among positives only and ``S``
among negatives only, ``V10_i = (Z_i - R_i) / n`` and ``V01_j = 1 - (Z_j - S_j) / m``.

For ``k`` scores on the same cases (paired), DeLong, DeLong and Clarke-Pearson (1988) estimate the
covariance of the AUCs as ``S = S10 / m + S01 / n`` with ``S10``, ``S01`` the sample covariance
matrices (ddof 1) of the placement values. Two correlated AUCs are compared by
``z = (A1 - A2) / sqrt(S11 + S22 - 2 S12)`` (two-sided normal p-value). Unpaired AUCs (different
test sets, e.g. two sites) are independent: ``z = (A1 - A2) / sqrt(var1 + var2)``.

Federation: placement values are per-patient, so a site cannot send them. Score histograms are
sums: :func:`delong_from_histograms` runs the same test on binned scores (scores in one bin tie),
from the class histograms of :func:`fedrad.learn.federated_eval.score_histograms` (unpaired) or
from the joint class-wise 2-D histograms of :func:`paired_histograms` (paired). What they reveal:
the number of held-out positives and negatives in each score bin (or bin pair), summed over the
sites delivered; send them through secure aggregation, with a bin count coarse enough that a bin
rarely holds a single case of a small site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from fedrad.errors import InputError
from fedrad.learn._validation import as_binary, as_probability, as_vector
from fedrad.learn.metrics import _midranks


@dataclass(frozen=True)
class AUCComparison:
    """Result of a DeLong test: the AUCs, their covariance, ``z`` and the two-sided p-value."""

    auc: np.ndarray
    covariance: np.ndarray
    difference: float
    se_difference: float
    z: float
    p_value: float

    def ci(self, level: float = 0.95) -> np.ndarray:
        """Wald confidence intervals ``(k, 2)`` of the AUCs (clipped to ``[0, 1]``)."""
        q = norm.ppf(0.5 + level / 2.0)
        se = np.sqrt(np.diag(self.covariance))
        return np.clip(np.column_stack([self.auc - q * se, self.auc + q * se]), 0.0, 1.0)


def _scores(y: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    yy = as_binary(y)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2 or s.shape[1] != yy.shape[0]:
        raise InputError(f"scores must be (k, {yy.shape[0]}) for {yy.shape[0]} labels")
    for row in s:
        as_vector(row, yy.shape[0], name="score")
    if yy.sum() == 0 or yy.sum() == yy.shape[0]:
        raise InputError("DeLong's test needs both positives and negatives")
    return yy, s


def placement_values(y: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(V10, V01)`` of one score by the midrank algorithm (module docstring)."""
    yy, s = _scores(y, score)
    pos, neg = s[0, yy == 1], s[0, yy == 0]
    m, n = pos.shape[0], neg.shape[0]
    z = _midranks(np.concatenate([pos, neg]))
    v10 = (z[:m] - _midranks(pos)) / n
    v01 = 1.0 - (z[m:] - _midranks(neg)) / m
    return v10, v01


def auc_covariance(y: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``(k,)`` and DeLong covariance ``(k, k)`` of ``k`` scores on the same cases."""
    yy, s = _scores(y, scores)
    parts = [placement_values(yy, row) for row in s]
    v10 = np.array([p[0] for p in parts])
    v01 = np.array([p[1] for p in parts])
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise InputError("DeLong's variance needs at least 2 positives and 2 negatives")
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return v10.mean(axis=1), cov


def _compare(auc: np.ndarray, cov: np.ndarray, var_diff: float) -> AUCComparison:
    diff = float(auc[0] - auc[1])
    se = math.sqrt(max(var_diff, 0.0))
    z = diff / se if se > 0.0 else (0.0 if diff == 0.0 else math.copysign(math.inf, diff))
    return AUCComparison(auc, cov, diff, se, z, float(2.0 * norm.sf(abs(z))))


def delong_paired(y: ArrayLike, score_a: ArrayLike, score_b: ArrayLike) -> AUCComparison:
    """DeLong's test of ``AUC(score_a) = AUC(score_b)`` on the same cases."""
    n = np.asarray(y).reshape(-1).shape[0]
    scores = np.vstack(
        [as_vector(score_a, n, name="score_a"), as_vector(score_b, n, name="score_b")]
    )
    auc, cov = auc_covariance(y, scores)
    return _compare(auc, cov, cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])


def delong_unpaired(
    y_a: ArrayLike, score_a: ArrayLike, y_b: ArrayLike, score_b: ArrayLike
) -> AUCComparison:
    """DeLong's test of two AUCs on different (independent) test sets."""
    auc_a, var_a = auc_covariance(y_a, score_a)
    auc_b, var_b = auc_covariance(y_b, score_b)
    cov = np.diag([var_a[0, 0], var_b[0, 0]])
    return _compare(np.array([auc_a[0], auc_b[0]]), cov, cov[0, 0] + cov[1, 1])


# ------------------------------------------------------------------- from summed histograms
def _bin(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def paired_histograms(
    y: ArrayLike, p_a: ArrayLike, p_b: ArrayLike, n_bins: int = 100
) -> np.ndarray:
    """A site's ``(2, n_bins, n_bins)`` counts by class of the bin pair ``(bin(p_a), bin(p_b))``.

    Reveals, per class, how many held-out cases fall in each pair of score bins of the two models
    (a sum over cases: send it through secure aggregation).
    """
    if n_bins < 1:
        raise InputError(f"n_bins must be positive, got {n_bins}")
    yy = as_binary(y)
    a = _bin(as_probability(p_a, yy.shape[0], name="p_a"), n_bins)
    b = _bin(as_probability(p_b, yy.shape[0], name="p_b"), n_bins)
    hist = np.zeros((2, n_bins, n_bins))
    np.add.at(hist, (yy.astype(np.int64), a, b), 1.0)
    return hist


def _binned_placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Placement value of each bin for a positive / a negative, from class bin counts."""
    n, m = neg.sum(), pos.sum()
    v10 = (np.cumsum(neg) - neg + 0.5 * neg) / n
    v01 = (pos.sum() - np.cumsum(pos) + 0.5 * pos) / m
    return v10, v01


def _weighted_cov(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sample covariance (ddof 1) of rows of ``values`` (k, cells) with case counts ``weights``."""
    total = weights.sum()
    mean = values @ weights / total
    centred = values - mean[:, None]
    return (centred * weights) @ centred.T / (total - 1.0)


def delong_from_histograms(hist: ArrayLike) -> AUCComparison | tuple[float, float]:
    """DeLong on binned scores from summed histograms.

    ``hist`` of shape ``(2, B)`` (one model): returns ``(AUC, variance)``. ``hist`` of shape
    ``(2, B, B)`` (:func:`paired_histograms`, two models on the same cases): returns the paired
    :class:`AUCComparison`. Equal to :func:`delong_paired` / :func:`auc_covariance` applied to the
    scores replaced by their bin index.
    """
    h = np.asarray(hist, dtype=np.float64)
    if h.shape[0] != 2 or h.ndim not in (2, 3) or np.any(h < 0):
        raise InputError("histograms must be (2, B) or (2, B, B) non-negative counts")
    neg, pos = h[0], h[1]
    m, n = pos.sum(), neg.sum()
    if m < 2 or n < 2:
        raise InputError("DeLong's variance needs at least 2 positives and 2 negatives")
    if h.ndim == 2:
        v10, v01 = _binned_placements(pos, neg)
        auc = float(v10 @ pos / m)
        var = float(
            _weighted_cov(v10[None], pos)[0, 0] / m + _weighted_cov(v01[None], neg)[0, 0] / n
        )
        return auc, var
    a10, a01 = _binned_placements(pos.sum(axis=1), neg.sum(axis=1))
    b10, b01 = _binned_placements(pos.sum(axis=0), neg.sum(axis=0))
    B = h.shape[1]
    ia, ib = np.meshgrid(np.arange(B), np.arange(B), indexing="ij")
    v10 = np.vstack([a10[ia].ravel(), b10[ib].ravel()])
    v01 = np.vstack([a01[ia].ravel(), b01[ib].ravel()])
    wp, wn = pos.ravel(), neg.ravel()
    auc = v10 @ wp / m
    cov = _weighted_cov(v10, wp) / m + _weighted_cov(v01, wn) / n
    return _compare(auc, cov, cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
