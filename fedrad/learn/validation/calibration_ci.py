"""Calibration slope and intercept with Wald confidence intervals (pooled or federated).

The fits are those of :mod:`fedrad.learn.federated_calibration` (logistic recalibration on
``l = logit(p)``). At the maximum-likelihood estimate the observed information of the slope model
``(a, b)`` is ``[[sum w, sum w l], [sum w l, sum w l^2]]`` and that of the intercept model is
``sum w0``: exactly sums 3-5 and 8 of :func:`calibration_statistics`. So one more exchange at the
fitted coefficients gives the standard errors, ``se(b) = sqrt([I^-1]_22)`` and
``se(a0) = 1 / sqrt(sum w0)``, and the Wald intervals ``estimate +/- z_(1 - alpha/2) se``.
What the extra exchange reveals: nine sums over a site's held-out cases, as every other exchange
of the calibration fit; send them through secure aggregation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from fedrad.errors import SettingsError
from fedrad.learn._validation import as_binary, as_probability
from fedrad.learn.federated_calibration import (
    calibration_statistics,
    check_statistics,
    fit_calibration,
)


def calibration_with_ci(
    query: Callable[[np.ndarray], np.ndarray], level: float = 0.95
) -> dict[str, float]:
    """Slope, intercept, their standard errors and Wald CIs from ``query(c)`` (summed statistics).

    Keys: ``calibration_slope``, ``..._se``, ``..._low``, ``..._high`` and the same for
    ``calibration_intercept``; ``calibration_exchanges`` counts the queries (the fit's, a few to recover the slope model's
    intercept, which :func:`fit_calibration` does not report, and one at the optimum).
    ``nan`` where a fit has no finite maximum.
    """
    if not 0.0 < level < 1.0:
        raise SettingsError(f"level must lie in (0, 1), got {level}")
    fit = fit_calibration(query)
    slope, intercept = fit["calibration_slope"], fit["calibration_intercept"]
    out = dict(fit)
    se_slope = se_intercept = float("nan")
    if np.isfinite(slope) or np.isfinite(intercept):
        # the slope model's intercept is not returned by fit_calibration; refit it from the sums
        coefficients, used = _coefficients(query, slope, intercept)
        s = check_statistics(query(coefficients))
        out["calibration_exchanges"] += 1.0 + used
        if np.isfinite(slope):
            info = np.array([[s[2], s[3]], [s[3], s[4]]])
            se_slope = float(np.sqrt(np.linalg.inv(info)[1, 1]))
        if np.isfinite(intercept) and s[7] > 0:
            se_intercept = float(1.0 / np.sqrt(s[7]))
    q = norm.ppf(0.5 + level / 2.0)
    for name, est, se in (
        ("calibration_slope", slope, se_slope),
        ("calibration_intercept", intercept, se_intercept),
    ):
        out[f"{name}_se"] = se
        out[f"{name}_low"] = est - q * se
        out[f"{name}_high"] = est + q * se
    return out


def _coefficients(
    query: Callable[[np.ndarray], np.ndarray], slope: float, intercept: float
) -> tuple[np.ndarray, int]:
    """``(a, b, a0)`` at the optimum and the number of queries used: ``a`` solves the score equation ``sum(y - mu) = 0`` given
    ``b`` (1-D Newton on the queried sums), since only ``b`` and ``a0`` are reported."""
    b = slope if np.isfinite(slope) else 1.0
    a0 = intercept if np.isfinite(intercept) else 0.0
    a, used = 0.0, 0
    for _ in range(100):
        s = check_statistics(query(np.array([a, b, a0])))
        used += 1
        if s[2] <= 0:
            break
        step = s[0] / s[2]
        a += step
        if abs(step) <= 1e-12 * (1.0 + abs(a)):
            break
    return np.array([a, b, a0]), used


def pooled_calibration_ci(y: ArrayLike, p: ArrayLike, level: float = 0.95) -> dict[str, float]:
    """:func:`calibration_with_ci` on one set of predictions."""
    yy = as_binary(y)
    pp = as_probability(p, yy.shape[0])
    return calibration_with_ci(lambda c: calibration_statistics(yy, pp, c), level)
