"""Validation statistics: DeLong's test, bootstrap CIs, calibration CIs and split helpers.

- :mod:`~fedrad.learn.validation.delong`: fast DeLong (Sun and Xu 2014), paired and unpaired,
  also from summed score histograms.
- :mod:`~fedrad.learn.validation.bootstrap`: stratified, seeded percentile and BCa intervals for
  AUC and C-index, and their sums-only federated forms.
- :mod:`~fedrad.learn.validation.calibration_ci`: calibration slope and intercept with Wald CIs.
- :mod:`~fedrad.learn.validation.splits`: stratified k-fold and leave-one-site-out.
"""

from fedrad.learn.validation.bootstrap import (
    BootstrapCI,
    bootstrap_auc,
    bootstrap_auc_histograms,
    bootstrap_ci,
    bootstrap_cindex,
    combine_concordance_replicates,
    site_concordance_replicates,
)
from fedrad.learn.validation.calibration_ci import calibration_with_ci, pooled_calibration_ci
from fedrad.learn.validation.delong import (
    AUCComparison,
    auc_covariance,
    delong_from_histograms,
    delong_paired,
    delong_unpaired,
    paired_histograms,
    placement_values,
)
from fedrad.learn.validation.splits import kfold_masks, leave_one_site_out, stratified_kfold

__all__ = [
    "AUCComparison",
    "BootstrapCI",
    "auc_covariance",
    "bootstrap_auc",
    "bootstrap_auc_histograms",
    "bootstrap_ci",
    "bootstrap_cindex",
    "calibration_with_ci",
    "combine_concordance_replicates",
    "delong_from_histograms",
    "delong_paired",
    "delong_unpaired",
    "kfold_masks",
    "leave_one_site_out",
    "paired_histograms",
    "placement_values",
    "pooled_calibration_ci",
    "site_concordance_replicates",
    "stratified_kfold",
]
