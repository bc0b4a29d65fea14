"""Federated evaluation from aggregates: sums over a site's held-out cases, never a patient's row.

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
pooled values exactly. A histogram is a sum, but at a site with few held-out cases most bins hold
at most one patient: it then tells each held-out patient's score to within ``1/B`` and class,
without an id. Small sites that must not reveal that much need fewer bins (or secure aggregation
of the evaluation sums, which fedrad does not do yet).

Calibration slope and intercept are not sums of fixed statistics: they are fitted by federated
Newton-Raphson over the final model's held-out predictions (:mod:`fedrad.learn.federated_calibration`),
each exchange carrying nine sums per site.

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
    concordance_counts,
    confusion_counts,
    metrics_from_confusion,
)

DEFAULT_BINS = 1000


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
    """A site's evaluation aggregates (all additive over sites)."""

    hist: np.ndarray
    confusion: np.ndarray  # [tp, fp, tn, fn]
    n: float
    sq_error: float

    def to_arrays(self) -> list[np.ndarray]:
        """``[hist, confusion, [n, sq_error]]`` as float64 arrays."""
        return [
            self.hist.astype(np.float64),
            self.confusion.astype(np.float64),
            np.array([self.n, self.sq_error]),
        ]

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray]) -> BinaryEvalStats:
        """Inverse of :meth:`to_arrays`, with shape checks."""
        if len(arrays) != 3:
            raise InputError(f"evaluation message must hold 3 arrays, got {len(arrays)}")
        hist, conf, tail = (np.asarray(a, dtype=np.float64) for a in arrays)
        if hist.ndim != 2 or hist.shape[0] != 2 or conf.shape != (4,) or tail.shape != (2,):
            raise InputError(
                "evaluation message: expected hist (2, B), confusion (4,), [n, sse] (2,)"
            )
        if np.any(hist < 0) or np.any(conf < 0) or not np.all(np.isfinite(tail)):
            raise InputError("evaluation message: counts must be non-negative and finite")
        return cls(hist, conf, float(tail[0]), float(tail[1]))


def site_binary_eval(
    y: ArrayLike, p: ArrayLike, threshold: float = 0.5, n_bins: int = DEFAULT_BINS
) -> BinaryEvalStats:
    """A site's aggregates for the pooled binary metrics."""
    yy = as_binary(y)
    pp = as_probability(p, yy.shape[0])
    c = confusion_counts(yy, pp, threshold)
    return BinaryEvalStats(
        hist=score_histograms(yy, pp, n_bins),
        confusion=np.array([c["tp"], c["fp"], c["tn"], c["fn"]], dtype=np.float64),
        n=float(yy.shape[0]),
        sq_error=float(np.sum((pp - yy) ** 2)),
    )


def combine_binary_eval(stats: Sequence[BinaryEvalStats]) -> dict[str, float]:
    """Pooled metrics from summed site aggregates.

    AUC (binned) and its bound, confusion metrics and the Brier score (calibration needs the
    federated fit of :mod:`fedrad.learn.federated_calibration`).
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
