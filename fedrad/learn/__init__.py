"""fedrad.learn: models, local training, metrics and exact federated fits.

Everything a site computes for the server is a sum over its patients (moments, histograms,
confusion counts, gradients and Hessians) or a model update, so it can travel through secure
aggregation; no patient row leaves the site. Modules:

- :mod:`~fedrad.learn.models`: logistic, MLP and Cox torch models, factory, parameter transport.
- :mod:`~fedrad.learn.losses` / :mod:`~fedrad.learn.training`: BCE and Breslow Cox losses, FedProx,
  local training written so that Opacus can wrap it.
- :mod:`~fedrad.learn.metrics`: AUC, confusion metrics, Brier, calibration, Harrell's C.
- :mod:`~fedrad.learn.standardise`: federated z-scoring from per-site moments.
- :mod:`~fedrad.learn.federated_eval`: pooled metrics from per-site aggregates.
- :mod:`~fedrad.learn.federated_calibration`: calibration slope and intercept by federated
  Newton-Raphson over the sites' held-out predictions.
- :mod:`~fedrad.learn.newton` / :mod:`~fedrad.learn.cox`: exact federated Newton-Raphson for
  logistic regression and the site-stratified Cox model.
- :mod:`~fedrad.learn.validation`: DeLong's test, bootstrap CIs, calibration CIs, splits.
- :mod:`~fedrad.learn.survival`: grid counts, Kaplan-Meier, stratified log-rank, risk groups.
- :mod:`~fedrad.learn.selection`: federated covariance filters, univariate ranking, L1 fits.
"""

from fedrad.learn.cox import cox_site_stats, fit_cox_newton
from fedrad.learn.federated_calibration import (
    calibration_statistics,
    fit_calibration,
    pooled_calibration,
)
from fedrad.learn.federated_eval import (
    BinaryEvalStats,
    auc_from_histograms,
    combine_binary_eval,
    combine_concordance,
    score_histograms,
    site_binary_eval,
    site_concordance,
)
from fedrad.learn.losses import bce_loss, cox_breslow_loss
from fedrad.learn.metrics import (
    balanced_accuracy,
    binary_metrics,
    brier_score,
    calibration_intercept,
    calibration_slope,
    concordance_counts,
    concordance_index,
    confusion_counts,
    f1_score,
    metrics_from_confusion,
    roc_auc,
    sensitivity,
    specificity,
)
from fedrad.learn.models import (
    CoxModel,
    LogisticModel,
    MLPModel,
    build_model,
    get_parameters,
    model_dtype,
    model_task,
    parameter_names,
    set_parameters,
)
from fedrad.learn.newton import (
    NewtonState,
    SiteStats,
    federated_newton,
    fit_logistic_newton,
    logistic_site_stats,
    newton_init,
    newton_step,
    sum_site_stats,
)
from fedrad.learn.selection import (
    FeatureDecision,
    l1_cox,
    l1_logistic,
    proximal_newton,
)
from fedrad.learn.standardise import Moments, Standardiser, combine_moments, mean_var, site_moments
from fedrad.learn.training import (
    loss_for,
    make_loader,
    make_optimizer,
    predict,
    predict_proba,
    run_epochs,
    train_local,
)

__all__ = [
    "BinaryEvalStats",
    "CoxModel",
    "FeatureDecision",
    "LogisticModel",
    "MLPModel",
    "Moments",
    "NewtonState",
    "SiteStats",
    "Standardiser",
    "auc_from_histograms",
    "balanced_accuracy",
    "bce_loss",
    "binary_metrics",
    "brier_score",
    "build_model",
    "calibration_intercept",
    "calibration_slope",
    "calibration_statistics",
    "combine_binary_eval",
    "combine_concordance",
    "combine_moments",
    "concordance_counts",
    "concordance_index",
    "confusion_counts",
    "cox_breslow_loss",
    "cox_site_stats",
    "f1_score",
    "federated_newton",
    "fit_calibration",
    "fit_cox_newton",
    "fit_logistic_newton",
    "get_parameters",
    "l1_cox",
    "l1_logistic",
    "logistic_site_stats",
    "loss_for",
    "make_loader",
    "make_optimizer",
    "mean_var",
    "metrics_from_confusion",
    "model_dtype",
    "model_task",
    "newton_init",
    "newton_step",
    "parameter_names",
    "pooled_calibration",
    "predict",
    "predict_proba",
    "proximal_newton",
    "roc_auc",
    "run_epochs",
    "score_histograms",
    "sensitivity",
    "set_parameters",
    "site_binary_eval",
    "site_concordance",
    "site_moments",
    "specificity",
    "sum_site_stats",
    "train_local",
]
