"""Calibration slope and intercept by federated Newton-Raphson, against the pooled fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from fedrad.errors import InputError
from fedrad.learn import calibration_intercept, calibration_slope
from fedrad.learn.federated_calibration import (
    N_STATISTICS,
    START,
    calibration_statistics,
    check_statistics,
    fit_calibration,
    pooled_calibration,
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


def _federated(sites: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """What the server fits: each exchange adds up every site's nine sums at ``c``."""
    return fit_calibration(
        lambda c: np.sum([calibration_statistics(y, p, c) for y, p in sites], axis=0)
    )


# scale 0.3: under-confident (pooled slope about 7); 1: about 2; 3: about 0.7; 8 and 20:
# over-confident (slope 0.25 and 0.11), with many p within 1e-6 of 0 or 1.
@pytest.mark.parametrize(
    ("seed", "scale", "shift"),
    [(0, 0.3, 0.2), (1, 1.0, 0.0), (2, 3.0, -1.0), (3, 8.0, 0.5), (4, 20.0, -2.0)],
)
def test_federated_fit_equals_the_pooled_calibration(seed: int, scale: float, shift: float) -> None:
    sites = _sites(seed, scale, shift)
    y = np.concatenate([s[0] for s in sites])
    p = np.concatenate([s[1] for s in sites])
    slope, intercept = calibration_slope(y, p), calibration_intercept(y, p)
    assert math.isfinite(slope) and math.isfinite(intercept)
    out = _federated(sites)
    assert out["calibration_slope"] == pytest.approx(slope, rel=1e-8, abs=1e-10)
    assert out["calibration_intercept"] == pytest.approx(intercept, rel=1e-8, abs=1e-10)
    assert 2 <= out["calibration_exchanges"] <= 30


def test_a_calibrated_model_converges_at_the_start() -> None:
    """p drawn from the model itself: slope near 1, intercept near 0, in a few exchanges."""
    rng = np.random.default_rng(5)
    p = expit(rng.normal(scale=2.0, size=20000))
    y = (rng.random(p.size) < p).astype(float)
    out = pooled_calibration(y, p)
    assert out["calibration_slope"] == pytest.approx(1.0, abs=0.05)
    assert out["calibration_intercept"] == pytest.approx(0.0, abs=0.05)
    assert out["calibration_exchanges"] <= 6


def test_statistics_are_additive_over_sites() -> None:
    sites = _sites(7, 2.0, 0.0)
    y = np.concatenate([s[0] for s in sites])
    p = np.concatenate([s[1] for s in sites])
    c = np.array([0.3, 0.8, -0.2])
    summed = np.sum([calibration_statistics(yy, pp, c) for yy, pp in sites], axis=0)
    np.testing.assert_allclose(summed, calibration_statistics(y, p, c), rtol=1e-12)
    assert summed.shape == (N_STATISTICS,)
    # nine sums, whatever the number of patients: nothing per patient
    assert calibration_statistics(y[:3], p[:3], START).shape == (N_STATISTICS,)


def test_a_site_without_held_out_cases_adds_nothing() -> None:
    out = calibration_statistics(np.zeros(0), np.zeros(0), START)
    np.testing.assert_array_equal(out, np.zeros(N_STATISTICS))


def test_calibration_is_nan_with_one_class_or_separation() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    one_class = pooled_calibration(np.zeros(6), p)
    assert math.isnan(one_class["calibration_slope"])
    assert math.isnan(one_class["calibration_intercept"])
    separated = pooled_calibration(np.array([0, 0, 0, 1, 1, 1.0]), p)
    assert math.isnan(separated["calibration_slope"])  # no finite slope maximises it
    assert separated["calibration_intercept"] == pytest.approx(
        calibration_intercept(np.array([0, 0, 0, 1, 1, 1.0]), p), abs=1e-9
    )


def test_malformed_statistics_and_coefficients_are_rejected() -> None:
    with pytest.raises(InputError, match="9 finite numbers"):
        check_statistics(np.zeros(8))
    with pytest.raises(InputError, match="9 finite numbers"):
        check_statistics(np.full(N_STATISTICS, np.nan))
    bad = np.zeros(N_STATISTICS)
    bad[2] = -1.0
    with pytest.raises(InputError, match="non-negative"):
        check_statistics(bad)
    with pytest.raises(InputError, match="coefficients"):
        calibration_statistics([0, 1], [0.2, 0.7], [0.0, 1.0])
    with pytest.raises(InputError, match="9 finite"):
        fit_calibration(lambda c: np.zeros(3))
