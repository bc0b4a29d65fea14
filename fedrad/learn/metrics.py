"""Performance metrics in plain numpy (binary classification and survival).

Conventions: ``y`` holds 0/1 labels, ``p`` predicted probabilities of class 1; a patient is predicted
positive when ``p >= threshold``. A metric whose denominator is zero (e.g. sensitivity without
positives, AUC with one class) is ``nan`` rather than an error, since a single site may lack a class.

Definitions:

- AUC (Mann-Whitney): ``AUC = P(p_pos > p_neg) + 0.5 P(p_pos = p_neg)``, computed from mid-ranks as
  ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``.
- Sensitivity ``TP / (TP + FN)``, specificity ``TN / (TN + FP)``, balanced accuracy their mean,
  F1 ``2 TP / (2 TP + FP + FN)``.
- Brier score ``(1/n) sum_i (p_i - y_i)^2``.
- Calibration (logistic recalibration, Cox 1958): with ``l_i = logit(p_i)`` (``p`` clipped to
  ``[1e-12, 1 - 1e-12]``), the *calibration slope* is ``b`` in the maximum-likelihood fit
  ``logit P(y_i = 1) = a + b l_i``; the *calibration intercept* (calibration-in-the-large) is ``a``
  in ``logit P(y_i = 1) = a + l_i``, i.e. the slope fixed to 1 via an offset. Ideal values: slope 1,
  intercept 0. Both are ``nan`` when the fit has no finite maximum (one class, separation).
- Harrell's C-index for a risk score (higher = earlier event): a pair ``(i, j)`` is comparable when
  ``event_i = 1`` and ``t_i < t_j``, or ``t_i = t_j`` with ``event_j = 0`` (``j`` is known to outlive
  ``i``'s event); it is concordant when ``risk_i > risk_j`` and counts 0.5 when the risks tie.
  ``C = (concordant + 0.5 tied) / comparable``. Pairs of events at the same time are not comparable.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from fedrad.learn._validation import as_binary, as_probability, as_survival, as_vector

_EPS = 1e-12


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with tied values sharing their average rank."""
    order = np.argsort(values, kind="stable")
    sorted_vals = values[order]
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # mean of ranks first+1 .. first+counts
    ranks = np.empty(values.shape[0], dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def roc_auc(y: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve by the Mann-Whitney statistic (ties count 0.5)."""
    yy = as_binary(y)
    s = as_vector(score, yy.shape[0], name="score")
    n_pos = float(yy.sum())
    n_neg = float(yy.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r_pos = float(_midranks(s)[yy == 1].sum())
    return (r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def confusion_counts(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> dict[str, int]:
    """``{"tp", "fp", "tn", "fn"}`` with prediction positive when ``p >= threshold``."""
    yy = as_binary(y)
    pred = as_vector(p, yy.shape[0], name="p") >= threshold
    pos = yy == 1
    return {
        "tp": int(np.sum(pred & pos)),
        "fp": int(np.sum(pred & ~pos)),
        "tn": int(np.sum(~pred & ~pos)),
        "fn": int(np.sum(~pred & pos)),
    }


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def metrics_from_confusion(counts: dict[str, int]) -> dict[str, float]:
    """Sensitivity, specificity, balanced accuracy, F1 and accuracy from confusion counts."""
    tp, fp, tn, fn = (float(counts[k]) for k in ("tp", "fp", "tn", "fn"))
    sens = _ratio(tp, tp + fn)
    spec = _ratio(tn, tn + fp)
    return {
        "sensitivity": sens,
        "specificity": spec,
        "balanced_accuracy": 0.5 * (sens + spec),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
    }


def sensitivity(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> float:
    """``TP / (TP + FN)``."""
    return metrics_from_confusion(confusion_counts(y, p, threshold))["sensitivity"]


def specificity(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> float:
    """``TN / (TN + FP)``."""
    return metrics_from_confusion(confusion_counts(y, p, threshold))["specificity"]


def balanced_accuracy(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> float:
    """``(sensitivity + specificity) / 2``."""
    return metrics_from_confusion(confusion_counts(y, p, threshold))["balanced_accuracy"]


def f1_score(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> float:
    """``2 TP / (2 TP + FP + FN)``."""
    return metrics_from_confusion(confusion_counts(y, p, threshold))["f1"]


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """``(1/n) sum_i (p_i - y_i)^2``."""
    yy = as_binary(y)
    pp = as_probability(p, yy.shape[0])
    return float(np.mean((pp - yy) ** 2)) if yy.size else float("nan")


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with ``p`` clipped to ``[1e-12, 1 - 1e-12]`` (finite for 0 and 1)."""
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _logistic_mle(
    Z: np.ndarray, y: np.ndarray, offset: np.ndarray, max_iter: int = 100
) -> np.ndarray | None:
    """Unpenalised logistic MLE of ``logit P(y=1) = offset + Z b`` by Newton with step halving.

    Returns ``None`` when no finite maximum is reached (separation, one class).
    """
    b = np.zeros(Z.shape[1])

    def loglik(beta: np.ndarray) -> float:
        eta = offset + Z @ beta
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = loglik(b)
    for _ in range(max_iter):
        eta = offset + Z @ b
        mu = 0.5 * (1.0 + np.tanh(0.5 * eta))
        grad = Z.T @ (y - mu)
        info = (Z * (mu * (1.0 - mu))[:, None]).T @ Z
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            return None
        t = 1.0
        while True:
            cand = b + t * step
            new = loglik(cand)
            if new >= current - 1e-12 * (1.0 + abs(current)) or t < 1e-10:
                break
            t *= 0.5
        b, current = cand, new
        if np.max(np.abs(t * step)) <= 1e-10 * (1.0 + np.max(np.abs(b))):
            return b if np.all(np.abs(b) < 1e6) else None
    return None


def calibration_slope(y: ArrayLike, p: ArrayLike) -> float:
    """``b`` in ``logit P(y=1) = a + b logit(p)`` (maximum likelihood); ideal 1."""
    yy = as_binary(y)
    lp = logit(as_probability(p, yy.shape[0]))
    Z = np.column_stack([np.ones_like(lp), lp])
    b = _logistic_mle(Z, yy, np.zeros_like(lp))
    return float("nan") if b is None else float(b[1])


def calibration_intercept(y: ArrayLike, p: ArrayLike) -> float:
    """``a`` in ``logit P(y=1) = a + logit(p)`` (slope fixed to 1 by an offset); ideal 0."""
    yy = as_binary(y)
    lp = logit(as_probability(p, yy.shape[0]))
    b = _logistic_mle(np.ones((lp.shape[0], 1)), yy, lp)
    return float("nan") if b is None else float(b[0])


def binary_metrics(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """All binary metrics of this module in one dict (plus ``n`` and confusion counts)."""
    yy = as_binary(y)
    pp = as_probability(p, yy.shape[0])
    counts = confusion_counts(yy, pp, threshold)
    out: dict[str, float] = {"n": float(yy.shape[0]), "auc": roc_auc(yy, pp)}
    out.update(metrics_from_confusion(counts))
    out.update(
        brier=brier_score(yy, pp),
        calibration_slope=calibration_slope(yy, pp),
        calibration_intercept=calibration_intercept(yy, pp),
    )
    out.update({k: float(v) for k, v in counts.items()})
    return out


def concordance_counts(
    time: ArrayLike, event: ArrayLike, risk: ArrayLike, block: int = 1024
) -> tuple[float, float]:
    """``(concordant + 0.5 tied-risk, comparable)`` pair counts for Harrell's C-index.

    Pairs are formed by broadcasting ``block`` events at a time against all patients, so memory is
    ``O(block * n)``.
    """
    t, e = as_survival(time, event)
    r = as_vector(risk, t.shape[0], name="risk")
    events = np.flatnonzero(e == 1)
    score, comparable = 0.0, 0.0
    for start in range(0, events.shape[0], block):
        idx = events[start : start + block]
        ti, ri = t[idx, None], r[idx, None]
        comp = (ti < t[None, :]) | ((ti == t[None, :]) & (e[None, :] == 0))
        comparable += float(comp.sum())
        score += float(np.sum(comp & (ri > r[None, :]))) + 0.5 * float(
            np.sum(comp & (ri == r[None, :]))
        )
    return score, comparable


def concordance_index(time: ArrayLike, event: ArrayLike, risk: ArrayLike) -> float:
    """Harrell's C-index (``nan`` without comparable pairs)."""
    score, comparable = concordance_counts(time, event, risk)
    return _ratio(score, comparable)
