"""Calibration slope and intercept from per-site logit moments, against the pooled fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from fedrad.errors import InputError
from fedrad.learn import (
    BinaryEvalStats,
    calibration_intercept,
    calibration_slope,
    combine_binary_eval,
    site_binary_eval,
)
from fedrad.learn.federated_eval import (
    CALIBRATION_BINS,
    calibration_from_moments,
    logit_moments,
)


def _sites(seed: int, scale: float, shift: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Four sites of different size and prevalence; ``scale`` sets how (over)confident ``p`` is."""
    rng = np.random.default_rng(seed)
    out = []
    for n, prevalence in [(40, 0.3), (250, 0.4), (90, 0.2), (60, 0.5)]:
        y = (rng.random(n) < prevalence).astype(float)
        p = expit(shift + scale * ((2 * y - 1) + rng.normal(size=n)))
        out.append((y, p))
    return out


# scale 0.3: under-confident (pooled slope about 7); 1: about 2; 3: about 0.7; 8 and 20:
# over-confident (slope 0.25 and 0.11), with 25% and 71% of p within 1e-6 of 0 or 1, where the
# probability-histogram bin centres alone miss the slope by 0.1 to 1.
@pytest.mark.parametrize(
    ("seed", "scale", "shift"),
    [(0, 0.3, 0.2), (1, 1.0, 0.0), (2, 3.0, -1.0), (3, 8.0, 0.5), (4, 20.0, -2.0)],
)
def test_site_moments_reproduce_pooled_calibration(seed: int, scale: float, shift: float) -> None:
    sites = _sites(seed, scale, shift)
    y = np.concatenate([s[0] for s in sites])
    p = np.concatenate([s[1] for s in sites])
    messages = [site_binary_eval(yy, pp, n_bins=200).to_arrays() for yy, pp in sites]
    combined = combine_binary_eval([BinaryEvalStats.from_arrays(m) for m in messages])
    slope, intercept = calibration_slope(y, p), calibration_intercept(y, p)
    assert math.isfinite(slope) and math.isfinite(intercept)
    # Tolerance: the two-point rule errs only through within-bin curvature (4th order in the bin
    # width, at most 0.5 logit); observed errors are about 1e-7. 1e-4 (relative on the slope,
    # absolute on the intercept) is three orders of magnitude below their standard errors at
    # n = 440 (about 0.1 to 0.3), so the federated figures are interchangeable with pooled ones.
    assert combined["calibration_slope"] == pytest.approx(slope, rel=1e-4)
    assert combined["calibration_intercept"] == pytest.approx(intercept, abs=1e-4)


def test_moments_are_additive_over_sites() -> None:
    sites = _sites(7, 2.0, 0.0)
    y = np.concatenate([s[0] for s in sites])
    p = np.concatenate([s[1] for s in sites])
    summed = np.sum([logit_moments(yy, pp) for yy, pp in sites], axis=0)
    np.testing.assert_allclose(summed, logit_moments(y, p), rtol=1e-12, atol=1e-9)
    assert summed.shape == (3, 2, CALIBRATION_BINS)
    assert summed[0].sum() == y.size


def test_calibration_is_nan_without_moments_or_with_one_class() -> None:
    y, p = np.array([0.0, 1.0, 1.0, 0.0]), np.array([0.2, 0.7, 0.4, 0.1])
    old = site_binary_eval(y, p, n_bins=200)
    legacy = BinaryEvalStats(old.hist, old.confusion, old.n, old.sq_error)  # histograms only
    out = combine_binary_eval([legacy, site_binary_eval(y, p, n_bins=200)])
    assert math.isnan(out["calibration_slope"]) and math.isnan(out["calibration_intercept"])
    one_class = calibration_from_moments(logit_moments(np.zeros(5), np.linspace(0.1, 0.5, 5)))
    assert math.isnan(one_class["calibration_slope"])


def test_malformed_moments_are_rejected() -> None:
    with pytest.raises(InputError, match="logit moments"):
        calibration_from_moments(np.zeros((3, 2, 10)))
    y, p = np.array([0.0, 1.0]), np.array([0.2, 0.7])
    arrays = site_binary_eval(y, p, n_bins=20).to_arrays()
    with pytest.raises(InputError, match="calibration bins"):
        BinaryEvalStats.from_arrays([*arrays[:3], np.zeros(6 * 7)])
