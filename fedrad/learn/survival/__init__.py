"""Survival statistics from per-site counts on an agreed time grid (no event time leaves a site).

- :mod:`~fedrad.learn.survival.grid`: the counts a site sends, minimum cell count, coarsening.
- :mod:`~fedrad.learn.survival.kaplan_meier`: Kaplan-Meier with Greenwood variance and bands.
- :mod:`~fedrad.learn.survival.logrank`: stratified log-rank test from O - E and variance sums.
- :mod:`~fedrad.learn.survival.risk_groups`: high/low risk groups at the training median.

The federated site-stratified Cox model is :mod:`fedrad.learn.cox`.
"""

from fedrad.learn.survival.grid import SmallCellError, coarsen, grid_counts
from fedrad.learn.survival.kaplan_meier import KaplanMeier, kaplan_meier, sum_counts
from fedrad.learn.survival.logrank import (
    LogRankResult,
    combine_logrank,
    logrank_sums,
    site_logrank_sums,
)
from fedrad.learn.survival.risk_groups import federated_median, risk_groups, site_counts_below

__all__ = [
    "KaplanMeier",
    "LogRankResult",
    "SmallCellError",
    "coarsen",
    "combine_logrank",
    "federated_median",
    "grid_counts",
    "kaplan_meier",
    "logrank_sums",
    "risk_groups",
    "site_counts_below",
    "site_logrank_sums",
    "sum_counts",
]
