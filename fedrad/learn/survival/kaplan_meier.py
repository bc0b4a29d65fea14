"""Federated Kaplan-Meier with Greenwood variance and pointwise bands, from grid counts.

From summed counts of :func:`fedrad.learn.survival.grid.grid_counts` (``n_k`` at risk and ``d_k``
events in interval ``k``), at each grid edge ``e_k``:

    S(e_k)    = prod_{j <= k} (1 - d_j / n_j)
    Var S     = S(e_k)^2 sum_{j <= k} d_j / (n_j (n_j - d_j))          (Greenwood)

Pointwise ``1 - alpha`` band on the log-log scale (Kalbfleisch and Prentice): with
``v = sum d / (n (n - d)) / log(S)^2``, ``S^exp(+z sqrt v)`` (lower) and ``S^exp(-z sqrt v)``
(upper); where ``S`` is 0 or 1 the band is ``[S, S]`` (by convention, as ``v`` is undefined).
Summing the sites' counts and applying these formulas gives exactly the pooled estimate at grid
resolution; what the counts reveal is documented in :mod:`~fedrad.learn.survival.grid`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from fedrad.errors import InputError, SettingsError
from fedrad.learn.survival.grid import check_cells, check_edges


@dataclass(frozen=True)
class KaplanMeier:
    """Survival at each grid edge with Greenwood SE, band, and the counts behind it."""

    edges: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray
    survival: np.ndarray
    se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float


def sum_counts(site_counts: Sequence[ArrayLike], min_cell_count: int = 0) -> np.ndarray:
    """Sum of the sites' count tables (what secure aggregation delivers), shapes checked."""
    if not site_counts:
        raise InputError("no site counts to combine")
    arrays = [np.asarray(c, dtype=np.float64) for c in site_counts]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise InputError(f"sites used different time grids or groups: shapes {sorted(shapes)}")
    total = np.sum(arrays, axis=0)
    if np.any(total < 0) or not np.all(np.isfinite(total)):
        raise InputError("survival counts must be finite and non-negative")
    check_cells(total, min_cell_count, what="summed")
    return total


def kaplan_meier(edges: ArrayLike, counts: ArrayLike, level: float = 0.95) -> KaplanMeier:
    """Kaplan-Meier estimate from a ``(3, K)`` (or ``(1, 3, K)``) summed count table."""
    if not 0.0 < level < 1.0:
        raise SettingsError(f"level must lie in (0, 1), got {level}")
    e = check_edges(edges)
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 3 and c.shape[0] == 1:
        c = c[0]
    if c.shape != (3, e.size):
        raise InputError(f"counts must be (3, {e.size}) for {e.size} grid edges, got {c.shape}")
    n, d = c[0], c[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n > 0, 1.0 - d / n, 1.0)
        surv = np.cumprod(factor)
        term = np.where((n > 0) & (n > d), d / (n * (n - d)), 0.0)
        green = np.cumsum(term)
        se = surv * np.sqrt(green)
        z = norm.ppf(0.5 + level / 2.0)
        inner = (surv > 0) & (surv < 1)
        log_s = np.log(np.where(inner, surv, 0.5))
        width = z * np.sqrt(green) / np.abs(log_s)
        low = np.where(inner, surv ** np.exp(width), surv)
        high = np.where(inner, surv ** np.exp(-width), surv)
    return KaplanMeier(e, n, d, surv, se, low, high, level)
