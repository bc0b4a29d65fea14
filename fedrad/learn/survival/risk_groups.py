"""Risk groups at the training median, found by federated bisection on counts.

A case is *high risk* (group 1) when its score exceeds the cut-off, else *low risk* (group 0). The
cut-off is the median of the training risk scores: with ``n`` training cases and
``target = ceil(n / 2)``, any ``c`` in ``[x_(target), x_(target+1))`` gives the same groups as
``numpy.median``. The server finds it without seeing a score: each round it sends thresholds, each
site returns how many of its training scores lie at or below each (:func:`site_counts_below`,
plus its ``n``), and the server narrows ``[low, high]`` around the first threshold reaching
``target`` (:func:`federated_median`). What the counts reveal: the number of a site's training
cases below each threshold, i.e. a coarse empirical distribution of its risk scores near the
median; send them through secure aggregation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from fedrad.errors import InputError, SettingsError
from fedrad.learn._validation import as_vector


def risk_groups(risk: ArrayLike, cutoff: float) -> np.ndarray:
    """``1`` (high risk) where ``risk > cutoff``, else ``0``."""
    return (as_vector(risk, name="risk") > cutoff).astype(np.int64)


def site_counts_below(risk: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
    """``[#{risk <= t} for t in thresholds] + [n]``: a site's reply to one bisection round."""
    r = np.sort(as_vector(risk, name="risk"))
    t = as_vector(thresholds, name="thresholds")
    return np.append(np.searchsorted(r, t, side="right").astype(np.float64), float(r.size))


def federated_median(
    query: Callable[[np.ndarray], np.ndarray],
    low: float,
    high: float,
    n_thresholds: int = 16,
    tol: float = 1e-10,
    max_rounds: int = 60,
) -> float:
    """Cut-off ``c`` with ``#{risk <= c} >= ceil(n / 2)`` to within ``tol``, from summed counts.

    ``query(thresholds)`` returns the sites' summed :func:`site_counts_below`. ``[low, high]`` must
    bracket the scores (e.g. the range of a bounded score, or a generous agreed range).
    """
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise SettingsError(f"bisection range must be finite with low < high, got [{low}, {high}]")
    if n_thresholds < 1:
        raise SettingsError("n_thresholds must be positive")
    for _ in range(max_rounds):
        grid = np.linspace(low, high, n_thresholds + 2)
        counts = np.asarray(query(grid), dtype=np.float64)
        below, n = counts[:-1], counts[-1]
        target = np.ceil(n / 2.0)
        if n < 1 or below[-1] < target or below[0] >= target:
            raise InputError("the bisection range does not bracket the median risk score")
        k = int(np.argmax(below >= target))
        low, high = float(grid[k - 1]), float(grid[k])
        if high - low <= tol * (1.0 + abs(high)):
            break
    return high
