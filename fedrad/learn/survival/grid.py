"""Survival counts on a coarse agreed time grid: what a site sends instead of event times.

Grid edges ``0 < e_1 < ... < e_K`` (agreed by the study, the same at every site) define intervals
``I_1 = [0, e_1]`` and ``I_k = (e_(k-1), e_k]``. For each interval a site counts

    at_risk_k  = #{i : t_i > e_(k-1)}   (all cases for k = 1)
    events_k   = #{i : t_i in I_k, event_i = 1}
    censored_k = #{i : t_i in I_k, event_i = 0}

Cases followed beyond ``e_K`` are at risk in every interval and leave the grid censored after
``e_K``. The counts are those of the data with every time replaced by the upper edge of its
interval ("grid resolution"), so any estimator computed from them equals the same estimator on the
pooled data coarsened that way. All three rows are sums over cases, hence additive over sites.

What they reveal: how many of a site's cases had an event or were censored in each interval, and
how many were still followed at its start; no individual time. With few cases per interval that
can single out a patient, so the site refuses (:class:`SmallCellError`) to release a grid in which
an event or censoring count lies in ``1 .. min_cell_count - 1``: the study then agrees a coarser
grid. Send the counts through secure aggregation (the server then applies the same check to the
sums).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from fedrad.errors import InputError, SettingsError
from fedrad.learn._validation import as_survival

#: Row order of a count table.
ROWS = ("at_risk", "events", "censored")


class SmallCellError(InputError):
    """A count in ``1 .. min_cell_count - 1``: releasing the grid could single out a patient."""


def check_edges(edges: ArrayLike) -> np.ndarray:
    """Grid edges as a strictly increasing positive float array."""
    e = np.asarray(edges, dtype=np.float64).reshape(-1)
    if e.size < 1 or not np.all(np.isfinite(e)) or e[0] <= 0 or np.any(np.diff(e) <= 0):
        raise SettingsError("time grid edges must be positive, finite and strictly increasing")
    return e


def interval_index(time: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Interval ``0 .. K-1`` of each time (``K`` for times beyond the last edge)."""
    return np.searchsorted(edges, time, side="left")


def check_cells(counts: np.ndarray, min_cell_count: int, what: str = "site") -> None:
    """Raise :class:`SmallCellError` if an event or censoring count is in ``1 .. min - 1``."""
    if min_cell_count < 0:
        raise SettingsError(f"min_cell_count must be non-negative, got {min_cell_count}")
    cells = counts[..., 1:, :]
    small = (cells > 0) & (cells < min_cell_count)
    if np.any(small):
        k = sorted({int(i) for i in np.argwhere(small)[:, -1]})
        raise SmallCellError(
            f"{what} counts fall below the minimum cell count {min_cell_count} in grid "
            f"interval(s) {k[:10]}; agree a coarser time grid"
        )


def grid_counts(
    time: ArrayLike,
    event: ArrayLike,
    edges: ArrayLike,
    group: ArrayLike | None = None,
    n_groups: int = 1,
    min_cell_count: int = 0,
) -> np.ndarray:
    """A site's ``(n_groups, 3, K)`` counts (rows :data:`ROWS`), one block per group.

    ``group`` holds integer labels ``0 .. n_groups-1`` (e.g. risk groups); without it all cases
    form group 0.
    """
    t, e = as_survival(time, event)
    g_edges = check_edges(edges)
    K = g_edges.size
    if group is None:
        g = np.zeros(t.shape[0], dtype=np.int64)
    else:
        g = np.asarray(group).reshape(-1)
        if g.shape[0] != t.shape[0] or not np.all((g >= 0) & (g < n_groups) & (g == g.astype(int))):
            raise InputError(f"group must hold one integer label in 0..{n_groups - 1} per case")
        g = g.astype(np.int64)
    k = interval_index(t, g_edges)
    out = np.zeros((n_groups, 3, K))
    inside = k < K
    np.add.at(out, (g[inside], 1 + (1 - e[inside]).astype(np.int64), k[inside]), 1.0)
    leaving = np.zeros((n_groups, K + 1))
    np.add.at(leaving, (g, k), 1.0)
    out[:, 0, :] = leaving[:, ::-1].cumsum(axis=1)[:, ::-1][:, :K]
    check_cells(out, min_cell_count)
    return out


def coarsen(time: ArrayLike, event: ArrayLike, edges: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Pooled data at grid resolution (the reference): each time moved to its interval's upper
    edge; times beyond the last edge become censorings just after it."""
    t, e = as_survival(time, event)
    g = check_edges(edges)
    k = interval_index(t, g)
    beyond = k >= g.size
    coarse = np.where(beyond, g[-1] * (1 + 1e-9) + 1e-9, g[np.minimum(k, g.size - 1)])
    return coarse, np.where(beyond, 0.0, e)
