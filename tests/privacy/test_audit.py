"""One-run privacy audit: the bound's formula, the positive control, and no violation under DP."""

from __future__ import annotations

import math

import pytest

from fedrad.privacy.accountant import PrivacyError
from fedrad.privacy.audit import audit_epsilon, audit_p_value, epsilon_lower_bound
from fedrad.privacy.planning import plan_noise

DELTA = 1e-5
RATE, EPOCHS = 0.1, 10  # the audit's defaults: 100 steps


def test_bound_without_delta_has_a_closed_form() -> None:
    """All r = m = 100 guesses right, delta = 0: P = p^100 with p = e^eps / (1 + e^eps), so the
    bound is the eps where p^100 = 0.05: logit(0.05 ** (1 / 100))."""
    p = 0.05 ** (1 / 100)
    assert epsilon_lower_bound(100, 100, 100, 0.0) == pytest.approx(math.log(p / (1 - p)), abs=1e-5)


def test_p_value_properties() -> None:
    assert audit_p_value(1000, 400, 200, 0.0, 0.0) == pytest.approx(0.5, abs=0.03)  # coin flips
    low, high = audit_p_value(1000, 400, 300, 1.0, DELTA), audit_p_value(1000, 400, 300, 2.0, DELTA)
    assert low < high  # larger epsilon explains more correct guesses
    assert audit_p_value(1000, 400, 300, 1.0, 1e-3) > audit_p_value(1000, 400, 300, 1.0, 0.0)
    with pytest.raises(PrivacyError):
        audit_p_value(10, 20, 5, 1.0, DELTA)


def test_bound_is_zero_for_chance_level_and_shrinks_with_delta() -> None:
    assert epsilon_lower_bound(1000, 400, 200, DELTA) == 0.0
    assert epsilon_lower_bound(1000, 400, 380, 1e-3) < epsilon_lower_bound(1000, 400, 380, 0.0)


def test_positive_control_without_noise_is_caught() -> None:
    """Without noise the canaries' weights give them away: the bound must be at least 4."""
    result = audit_epsilon(0.0, seed=1)
    assert result.claimed_epsilon == math.inf
    assert result.n_correct == result.n_guesses == 400
    assert result.lower_bound_epsilon >= 4.0
    assert result.steps == EPOCHS * 10 and result.sample_rate == RATE


@pytest.mark.parametrize("target", [1.0, 2.0, 4.0])
def test_dp_sgd_never_beats_its_claim(target: float) -> None:
    sigma = plan_noise(target, DELTA, RATE, EPOCHS * 10, "prv")
    result = audit_epsilon(sigma, delta=DELTA, accountant="prv", seed=2)
    assert target - 0.01 <= result.claimed_epsilon <= target
    assert result.lower_bound_epsilon <= result.claimed_epsilon
    assert result.consistent
    assert result.n_correct > result.n_guesses / 2  # the attack still sees some signal


def test_audit_is_deterministic() -> None:
    assert audit_epsilon(1.0, n_canaries=200, n_guesses=100, seed=3) == audit_epsilon(
        1.0, n_canaries=200, n_guesses=100, seed=3
    )


@pytest.mark.parametrize(
    "overrides",
    [{"n_guesses": 401}, {"n_guesses": 2000}, {"sample_rate": 0.0}, {"n_canaries": 0},
     {"delta": 0.0}],
)  # fmt: skip
def test_bad_audit_settings_are_refused(overrides: dict) -> None:
    with pytest.raises(PrivacyError):
        audit_epsilon(1.0, **overrides)
