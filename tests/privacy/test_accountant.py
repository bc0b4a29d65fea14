"""Accounting: golden values of the issue, composition, the Gaussian closed form, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr

from fedrad.errors import FedradError
from fedrad.privacy.accountant import Mechanism, PrivacyError, epsilon, prv_eps_error

# Sampling rate 0.1, 200 steps, delta 1e-3 (the acceptance values).
GOLDEN_Q, GOLDEN_STEPS, GOLDEN_DELTA = 0.1, 200, 1e-3


@pytest.mark.parametrize(
    ("noise", "expected", "tol"),
    [
        # Opacus 1.6 gives 7.1069: within 0.01.
        (1.0, 7.10, 0.01),
        # Opacus 1.6 gives 3.5329. PRV returns the *upper end* of its error interval,
        # estimate + error with error <= eps_error = 0.01: the estimate is 3.5225 (the issue's
        # 3.52), the guarantee 3.5329, hence abs 0.02 here.
        (1.5, 3.52, 0.02),
    ],
)
def test_golden_prv(noise: float, expected: float, tol: float) -> None:
    mech = Mechanism(noise, GOLDEN_Q, GOLDEN_STEPS)
    assert epsilon([mech], GOLDEN_DELTA, "prv") == pytest.approx(expected, abs=tol)


@pytest.mark.parametrize(
    ("noise", "expected"),
    [
        # The issue says 8.25; Opacus 1.6 gives 8.1842 (best order alpha = 2.5). The value
        # is not reproduced: see test_rdp_golden_discrepancy_is_not_the_alpha_grid.
        (1.0, 8.18),
        (1.5, 4.05),  # Opacus 1.6: 4.0471 (alpha = 3.7)
    ],
)
def test_golden_rdp(noise: float, expected: float) -> None:
    mech = Mechanism(noise, GOLDEN_Q, GOLDEN_STEPS)
    assert epsilon([mech], GOLDEN_DELTA, "rdp") == pytest.approx(expected, abs=0.01)


def test_rdp_golden_discrepancy_is_not_the_alpha_grid() -> None:
    """Minimising the RDP conversion over a fine continuum of orders gives 8.18, not 8.25.

    So a finer alpha grid cannot explain the issue's 8.25 (a finer grid only lowers the value);
    Mironov's original conversion ``rdp - log(delta) / (alpha - 1)`` gives 9.30, the GDP
    accountant 6.86. 8.25 is what 203 (not 200) steps give.
    """
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = np.linspace(2.0, 3.0, 201)  # both optima (2.46 and 2.53) lie inside
    rdp = np.asarray(compute_rdp(q=0.1, noise_multiplier=1.0, steps=200, orders=list(orders)))
    balle = rdp + np.log((orders - 1) / orders) - (np.log(1e-3) + np.log(orders)) / (orders - 1)
    classic = rdp - np.log(1e-3) / (orders - 1)
    assert balle.min() == pytest.approx(8.18, abs=0.01)
    assert classic.min() == pytest.approx(9.30, abs=0.01)
    assert epsilon([Mechanism(1.0, 0.1, 203)], 1e-3, "rdp") == pytest.approx(8.25, abs=0.01)


def _gaussian_epsilon(noise: float, steps: int, delta: float) -> float:
    """Exact epsilon of ``steps`` Gaussian mechanisms without subsampling (Balle & Wang 2018).

    ``delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)``, ``mu = sqrt(steps) / noise``.
    """
    mu = math.sqrt(steps) / noise

    def gap(eps: float) -> float:
        return ndtr(-eps / mu + mu / 2) - math.exp(eps + log_ndtr(-eps / mu - mu / 2)) - delta

    return brentq(gap, 0.0, 700.0, xtol=1e-10)


@pytest.mark.parametrize(("noise", "steps"), [(5.0, 50), (2.0, 100), (1.0, 400)])
def test_prv_matches_gaussian_closed_form_at_rate_one(noise: float, steps: int) -> None:
    """With q = 1 the composition is Gaussian with mu = sqrt(T)/sigma: PRV bounds it from above.

    Opacus returns ``eps_hat(delta - delta_err) + eps_err`` with ``|eps_hat - eps| <= eps_err`` and
    ``delta_err = delta / 1000``, so ``eps(delta) <= got <= eps(delta - delta_err) + 2 eps_err``.
    (1.0, 400) needs a mesh above the point limit, so it also covers the widened error allowance.
    """
    exact = _gaussian_epsilon(noise, steps, 1e-5)
    exact_shifted = _gaussian_epsilon(noise, steps, 1e-5 * (1 - 1e-3))
    err = prv_eps_error([(noise, 1.0, steps)], 1e-5)
    got = epsilon([Mechanism(noise, 1.0, steps)], 1e-5, "prv")
    assert exact <= got <= exact_shifted + 2 * err
    assert got <= epsilon([Mechanism(noise, 1.0, steps)], 1e-5, "rdp")


def test_widened_error_allowance_only_when_the_mesh_is_too_large() -> None:
    assert prv_eps_error([(1.0, 0.1, 200)], 1e-3) == 0.01
    assert prv_eps_error([(1.0, 1.0, 400)], 1e-5) > 0.01


def test_composition_is_subadditive_and_merges_equal_mechanisms() -> None:
    a, b = Mechanism(1.2, 0.05, 300), Mechanism(2.0, 0.2, 100)
    ea, eb = epsilon([a], 1e-5), epsilon([b], 1e-5)
    both = epsilon([a, b], 1e-5)
    assert max(ea, eb) < both < ea + eb
    assert epsilon([b, a], 1e-5) == pytest.approx(both, rel=1e-9)  # order does not matter
    halves = [Mechanism(1.2, 0.05, 150), Mechanism(1.2, 0.05, 150)]
    assert epsilon(halves, 1e-5) == epsilon([a], 1e-5)
    assert epsilon([*halves, Mechanism(3.0, 0.05, 0)], 1e-5, "rdp") == epsilon([a], 1e-5, "rdp")


@pytest.mark.parametrize(
    "mech", [Mechanism(0.8, 0.01, 1000), Mechanism(1.0, 0.1, 200), Mechanism(3.0, 0.5, 50)]
)
def test_prv_is_tighter_than_rdp(mech: Mechanism) -> None:
    assert epsilon([mech], 1e-5, "prv") < epsilon([mech], 1e-5, "rdp")


def test_degenerate_cases() -> None:
    assert epsilon([], 1e-5) == 0.0
    assert epsilon([Mechanism(1.0, 0.1, 0)], 1e-5) == 0.0
    assert epsilon([Mechanism(0.0, 0.1, 10)], 1e-5) == math.inf
    assert epsilon([Mechanism(0.0, 0.1, 10)], 1e-5, "rdp") == math.inf


def test_tiny_noise_falls_back_to_rdp_instead_of_exhausting_memory() -> None:
    """sigma = 0.05 would need a PRV mesh of ~10^9 points (Opacus itself runs out of memory)."""
    mech = Mechanism(0.05, 0.3, 400)
    got = epsilon([mech], 1e-5, "prv")
    assert math.isfinite(got)
    assert got == epsilon([mech], 1e-5, "rdp")


@pytest.mark.parametrize(
    "args",
    [
        (-1.0, 0.1, 10),
        (math.nan, 0.1, 10),
        (1.0, 0.0, 10),
        (1.0, 1.5, 10),
        (1.0, 0.1, -1),
        (1.0, 0.1, 2.5),
        (1.0, 0.1, True),
        ("1", 0.1, 10),
    ],
)
def test_bad_mechanism_is_refused(args: tuple) -> None:
    with pytest.raises(PrivacyError):
        Mechanism(*args)


@pytest.mark.parametrize(("delta", "accountant"), [(0.0, "prv"), (1.0, "rdp"), (1e-5, "gdp")])
def test_bad_delta_or_accountant_is_refused(delta: float, accountant: str) -> None:
    with pytest.raises(PrivacyError, match=r"delta|accountant") as info:
        epsilon([Mechanism(1.0, 0.1, 10)], delta, accountant)  # type: ignore[arg-type]
    assert isinstance(info.value, FedradError)


def test_non_mechanism_is_refused() -> None:
    with pytest.raises(PrivacyError, match="Mechanism"):
        epsilon([(1.0, 0.1, 10)], 1e-5)  # type: ignore[list-item]
