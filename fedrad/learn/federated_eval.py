"""Federated evaluation from aggregates: no per-patient score or label leaves a site.

Binary outcome. Each site sends

- score histograms by class on fixed bin edges ``0, 1/B, ..., 1`` (``B = n_bins``; ``p`` falls in
  bin ``min(floor(p B), B - 1)``): ``H[0, k]`` negatives and ``H[1, k]`` positives in bin ``k``;
- confusion counts ``(TP, FP, TN, FN)`` at the study threshold;
- ``n`` and the sum of squared errors ``sum (p - y)^2`` (for the Brier score).

All are sums, so secure aggregation applies. The server adds them up. The pooled AUC treats scores
in one bin as tied:

    AUC_H = sum_k H[1, k] (sum_{m<k} H[0, m] + 0.5 H[0, k]) / (N_pos N_neg)

which differs from the exact pooled AUC only through pairs that share a bin:
``|AUC_H - AUC| <= 0.5 * sum_k H[1, k] H[0, k] / (N_pos N_neg)`` (the bound is returned too).
Sensitivity, specificity, balanced accuracy and F1 from the summed confusion counts equal the
pooled values exactly.

Calibration (slope ``b`` of ``logit P(y=1) = a + b l`` and intercept ``a`` of
``logit P(y=1) = a + l``, ``l = logit(p)``, as in :mod:`fedrad.learn.metrics`). The logistic
recalibration likelihood is not a sum of fixed statistics, so each site also sends per-class
*logit moments* on fixed calibration bins ``k`` (edges on the logit scale: the union of
``logit(j / 200)``, which is fine near ``p = 0.5``, and a grid of step 0.5 over
``[-27.5, 27.5]``, which is fine in the tails): ``n[c, k]``, ``S1[c, k] = sum l`` and
``S2[c, k] = sum l^2`` over the site's patients of class ``c`` in bin ``k``. The server sums them
and replaces each (class, bin) cluster by two pseudo-patients at ``m +- s``
(``m = S1 / n``, ``s^2 = S2 / n - m^2``), each of weight ``n / 2``: the two-point rule that matches
the cluster's mean and variance, so the log-likelihood ``sum_i [y_i eta_i - log(1 + e^eta_i)]`` is
reproduced exactly in its linear part and up to fourth-order terms in the bin width in its
convex part. Its maximum-likelihood fit then differs from the pooled fit by far less than the fits'
own standard errors (observed about 1e-7 for slopes between 0.1 and 7, also when most ``p`` lie
within 1e-6 of 0 or 1; a fit on the score-histogram bin centres alone misses by 0.05 to 1).
Without the moments (sites that send only histograms) the calibration entries are ``nan``.

Survival. Harrell's C-index is not decomposable: pairs of patients from different sites are never
formed. Each site sends ``(concordant + 0.5 tied, comparable)`` for its own pairs; the server's
``sum(concordant) / sum(comparable)`` is the mean of per-site C-indices weighted by their numbers of
comparable pairs, i.e. a *within-site* C-index, not the pooled one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fedrad.errors import InputError
from fedrad.learn._validation import as_binary, as_probability
from fedrad.learn.metrics import (
    _logistic_mle,
    _logit,
    concordance_counts,
    confusion_counts,
    metrics_from_confusion,
)

DEFAULT_BINS = 1000


def _calibration_edges() -> np.ndarray:
    """Inner edges of the calibration bins on the logit scale (see the module docstring)."""
    j = np.arange(1, 200)
    fine_middle = np.log(j) - np.log(200 - j)
    tails = np.arange(-55, 56) * 0.5
    return np.unique(np.concatenate([fine_middle, tails]))


#: Inner edges of the calibration bins (logit scale); ``len(CALIBRATION_EDGES) + 1`` bins.
CALIBRATION_EDGES = _calibration_edges()
CALIBRATION_BINS = CALIBRATION_EDGES.shape[0] + 1


def logit_moments(y: ArrayLike, p: ArrayLike) -> np.ndarray:
    """``(3, 2, CALIBRATION_BINS)``: count, sum and sum of squares of ``logit(p)`` per class and bin.

    ``[0, c, k] = n``, ``[1, c, k] = sum l``, ``[2, c, k] = sum l^2`` over the patients of class
    ``c`` whose ``l = logit(p)`` (``p`` clipped to ``[1e-12, 1 - 1e-12]``) falls in bin ``k``.
    """
    yy = as_binary(y)
    lp = _logit(as_probability(p, yy.shape[0]))
    bins = np.searchsorted(CALIBRATION_EDGES, lp, side="right")
    cls = yy.astype(np.int64)
    out = np.zeros((3, 2, CALIBRATION_BINS), dtype=np.float64)
    for row, values in enumerate((np.ones_like(lp), lp, lp * lp)):
        np.add.at(out[row], (cls, bins), values)
    return out


def calibration_from_moments(moments: ArrayLike) -> dict[str, float]:
    """Calibration slope and intercept from summed :func:`logit_moments` (two-point rule).

    Both are ``nan`` when the recalibration fit has no finite maximum (one class, separation).
    """
    m = np.asarray(moments, dtype=np.float64)
    if m.shape != (3, 2, CALIBRATION_BINS) or np.any(m[0] < 0) or not np.all(np.isfinite(m)):
        raise InputError(
            f"logit moments must be a finite (3, 2, {CALIBRATION_BINS}) array with counts >= 0"
        )
    count = np.rint(m[0]).astype(np.int64)
    cls, bins = np.nonzero(count)
    n = count[cls, bins]
    mean = m[1, cls, bins] / n
    sd = np.sqrt(np.maximum(m[2, cls, bins] / n - mean**2, 0.0))
    # two pseudo-patients per (class, bin), each repeated n times: weights 2n instead of n
    # scale the log-likelihood by 2 and leave its maximiser unchanged
    lp = np.repeat(np.concatenate([mean - sd, mean + sd]), np.concatenate([n, n]))
    yy = np.repeat(np.concatenate([cls, cls]).astype(np.float64), np.concatenate([n, n]))
    nan = {"calibration_slope": float("nan"), "calibration_intercept": float("nan")}
    if yy.size == 0:
        return nan
    slope = _logistic_mle(np.column_stack([np.ones_like(lp), lp]), yy, np.zeros_like(lp))
    intercept = _logistic_mle(np.ones((lp.shape[0], 1)), yy, lp)
    return {
        "calibration_slope": nan["calibration_slope"] if slope is None else float(slope[1]),
        "calibration_intercept": nan["calibration_intercept"]
        if intercept is None
        else float(intercept[0]),
    }


def score_histograms(y: ArrayLike, p: ArrayLike, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """``(2, n_bins)`` counts of scores per bin of ``[0, 1]``: row 0 negatives, row 1 positives."""
    if n_bins < 1:
        raise InputError(f"n_bins must be positive, got {n_bins}")
    yy = as_binary(y)
    pp = as_probability(p, yy.shape[0])
    bins = np.minimum((pp * n_bins).astype(np.int64), n_bins - 1)
    hist = np.zeros((2, n_bins), dtype=np.float64)
    np.add.at(hist, (yy.astype(np.int64), bins), 1.0)
    return hist


def auc_from_histograms(hist: ArrayLike) -> tuple[float, float]:
    """``(AUC, bound)`` from summed class histograms; ``bound`` caps ``|AUC - exact AUC|``."""
    h = np.asarray(hist, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != 2 or np.any(h < 0):
        raise InputError("score histograms must be a (2, n_bins) array of non-negative counts")
    neg, pos = h
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return float("nan"), float("nan")
    below = np.cumsum(neg) - neg
    auc = float(np.sum(pos * (below + 0.5 * neg)) / (n_pos * n_neg))
    bound = float(0.5 * np.sum(pos * neg) / (n_pos * n_neg))
    return auc, bound


@dataclass(frozen=True)
class BinaryEvalStats:
    """A site's evaluation aggregates (all additive over sites).

    ``logit_moments`` (:func:`logit_moments`) is optional: without it the calibration metrics of
    :func:`combine_binary_eval` are ``nan``.
    """

    hist: np.ndarray
    confusion: np.ndarray  # [tp, fp, tn, fn]
    n: float
    sq_error: float
    logit_moments: np.ndarray | None = None

    def to_arrays(self) -> list[np.ndarray]:
        """``[hist, confusion, [n, sq_error]]`` (+ ``logit_moments``) as float64 arrays."""
        out = [
            self.hist.astype(np.float64),
            self.confusion.astype(np.float64),
            np.array([self.n, self.sq_error]),
        ]
        if self.logit_moments is not None:
            out.append(self.logit_moments.astype(np.float64))
        return out

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray]) -> BinaryEvalStats:
        """Inverse of :meth:`to_arrays`, with shape checks."""
        if len(arrays) not in (3, 4):
            raise InputError(f"evaluation message must hold 3 or 4 arrays, got {len(arrays)}")
        hist, conf, tail = (np.asarray(a, dtype=np.float64) for a in arrays[:3])
        if hist.ndim != 2 or hist.shape[0] != 2 or conf.shape != (4,) or tail.shape != (2,):
            raise InputError(
                "evaluation message: expected hist (2, B), confusion (4,), [n, sse] (2,)"
            )
        if np.any(hist < 0) or np.any(conf < 0) or not np.all(np.isfinite(tail)):
            raise InputError("evaluation message: counts must be non-negative and finite")
        moments = None
        if len(arrays) == 4:
            moments = np.asarray(arrays[3], dtype=np.float64).reshape(3, 2, -1)
            if moments.shape[2] != CALIBRATION_BINS:
                raise InputError(
                    f"evaluation message: logit moments need {CALIBRATION_BINS} calibration bins"
                )
        return cls(hist, conf, float(tail[0]), float(tail[1]), moments)


def site_binary_eval(
    y: ArrayLike, p: ArrayLike, threshold: float = 0.5, n_bins: int = DEFAULT_BINS
) -> BinaryEvalStats:
    """A site's aggregates for the pooled binary metrics (with its logit moments)."""
    yy = as_binary(y)
    pp = as_probability(p, yy.shape[0])
    c = confusion_counts(yy, pp, threshold)
    return BinaryEvalStats(
        hist=score_histograms(yy, pp, n_bins),
        confusion=np.array([c["tp"], c["fp"], c["tn"], c["fn"]], dtype=np.float64),
        n=float(yy.shape[0]),
        sq_error=float(np.sum((pp - yy) ** 2)),
        logit_moments=logit_moments(yy, pp),
    )


def combine_binary_eval(stats: Sequence[BinaryEvalStats]) -> dict[str, float]:
    """Pooled metrics from summed site aggregates.

    AUC (binned) and its bound, confusion metrics, Brier score, and calibration slope and
    intercept (``nan`` unless every site sent its logit moments).
    """
    if not stats:
        raise InputError("combine_binary_eval needs at least one site's statistics")
    shapes = {s.hist.shape for s in stats}
    if len(shapes) != 1:
        raise InputError(f"sites used different histogram bins: {sorted(shapes)}")
    hist = np.sum([s.hist for s in stats], axis=0)
    conf = np.sum([s.confusion for s in stats], axis=0)
    n = float(sum(s.n for s in stats))
    auc, bound = auc_from_histograms(hist)
    counts = dict(zip(("tp", "fp", "tn", "fn"), (int(v) for v in conf), strict=True))
    out: dict[str, float] = {"n": n, "auc": auc, "auc_binning_bound": bound}
    out.update(metrics_from_confusion(counts))
    out["brier"] = sum(s.sq_error for s in stats) / n if n > 0 else float("nan")
    if all(s.logit_moments is not None for s in stats):
        out.update(calibration_from_moments(np.sum([s.logit_moments for s in stats], axis=0)))
    else:
        out.update(calibration_slope=float("nan"), calibration_intercept=float("nan"))
    out.update({k: float(v) for k, v in counts.items()})
    return out


def site_concordance(time: ArrayLike, event: ArrayLike, risk: ArrayLike) -> np.ndarray:
    """A site's ``[concordant + 0.5 tied, comparable]`` pair counts (within-site pairs only)."""
    return np.array(concordance_counts(time, event, risk), dtype=np.float64)


def combine_concordance(site_counts: Sequence[ArrayLike]) -> dict[str, float]:
    """Within-site C-index: comparable-pair-weighted mean of per-site C-indices (not the pooled C)."""
    counts = np.array([np.asarray(c, dtype=np.float64).reshape(2) for c in site_counts])
    if counts.size == 0:
        raise InputError("combine_concordance needs at least one site's counts")
    score, comparable = counts.sum(axis=0)
    return {
        "c_index": float(score / comparable) if comparable > 0 else float("nan"),
        "comparable_pairs": float(comparable),
    }
