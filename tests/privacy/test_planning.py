"""Planning: the Poisson step schedule and noise calibration to a target epsilon."""

from __future__ import annotations

import pytest

from fedrad.privacy.accountant import Mechanism, PrivacyError, epsilon
from fedrad.privacy.planning import plan_noise, steps_for


@pytest.mark.parametrize(
    ("n", "batch", "epochs", "rounds", "rate", "per_epoch", "total"),
    [
        (100, 30, 2, 20, 0.3, 4, 160),  # ceil(100 / 30) = 4
        (1000, 32, 1, 1, 0.032, 32, 32),  # ceil(31.25) = 32
        (100, 10, 3, 5, 0.1, 10, 150),  # exact division
        (100, 100, 2, 3, 1.0, 1, 6),
        (50, 200, 1, 4, 1.0, 1, 4),  # batch larger than the site: rate capped at 1
        (7, None, 2, 2, 1.0, 1, 4),  # full batch
    ],
)
def test_steps_for(n, batch, epochs, rounds, rate, per_epoch, total) -> None:
    schedule = steps_for(n, batch, epochs, rounds)
    assert schedule.sample_rate == pytest.approx(rate, rel=1e-12)
    assert schedule.steps_per_epoch == per_epoch
    assert schedule.steps_per_round == per_epoch * epochs
    assert schedule.steps == total
    assert schedule.round_mechanism(1.0) == Mechanism(1.0, schedule.sample_rate, per_epoch * epochs)
    assert schedule.study_mechanism(1.0).steps == total


@pytest.mark.parametrize(
    "args", [(0, 10, 1, 1), (10, 0, 1, 1), (10, 5, 0, 1), (10, 5, 1, 0), (10.0, 5, 1, 1)]
)
def test_steps_for_refuses_bad_counts(args: tuple) -> None:
    with pytest.raises(PrivacyError, match="positive integer"):
        steps_for(*args)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
@pytest.mark.parametrize("target", [1.0, 2.0, 4.0, 8.0])
def test_plan_noise_lands_on_target(target: float, accountant: str) -> None:
    sigma = plan_noise(target, 1e-5, 0.1, 200, accountant)  # type: ignore[arg-type]
    spent = epsilon([Mechanism(sigma, 0.1, 200)], 1e-5, accountant)  # type: ignore[arg-type]
    assert target - 0.01 <= spent <= target


def test_plan_noise_for_a_study_schedule() -> None:
    """All rounds together spend the target: plan for the study's steps, not one round's."""
    schedule = steps_for(n_train=150, batch_size=16, local_epochs=2, rounds=20)
    sigma = plan_noise(3.0, 1e-5, schedule.sample_rate, schedule.steps, "rdp")
    per_round = [schedule.round_mechanism(sigma)] * schedule.rounds
    assert 2.99 <= epsilon(per_round, 1e-5, "rdp") <= 3.0
    one_round = plan_noise(3.0, 1e-5, schedule.sample_rate, schedule.steps_per_round, "rdp")
    assert one_round < sigma  # a one-round plan would overspend 20-fold composition


def test_plan_noise_after_prior_spending() -> None:
    prior = (Mechanism(2.0, 0.05, 400),)
    before = epsilon(prior, 1e-5, "rdp")
    sigma = plan_noise(2 * before, 1e-5, 0.1, 100, "rdp", prior)
    total = epsilon([*prior, Mechanism(sigma, 0.1, 100)], 1e-5, "rdp")
    assert 2 * before - 0.01 <= total <= 2 * before
    assert sigma > plan_noise(2 * before, 1e-5, 0.1, 100, "rdp")


def test_unreachable_target_after_prior_is_a_clear_error() -> None:
    prior = (Mechanism(0.8, 0.2, 300),)
    with pytest.raises(PrivacyError, match=r"unreachable: the prior mechanisms already spend"):
        plan_noise(1.0, 1e-5, 0.1, 100, "rdp", prior)


def test_target_needing_too_much_noise_is_a_clear_error() -> None:
    with pytest.raises(PrivacyError, match=r"unreachable with noise_multiplier <= 2") as info:
        plan_noise(0.05, 1e-5, 0.5, 1000, "rdp", max_noise=2.0)
    assert "raise the target" in str(info.value)


@pytest.mark.parametrize(
    ("target", "delta", "rate", "steps"),
    [(0.0, 1e-5, 0.1, 10), (-1.0, 1e-5, 0.1, 10), (1.0, 0.0, 0.1, 10), (1.0, 1e-5, 0.0, 10)],
)
def test_plan_noise_refuses_bad_inputs(target, delta, rate, steps) -> None:
    with pytest.raises(PrivacyError):
        plan_noise(target, delta, rate, steps, "rdp")


def test_plan_noise_refuses_zero_steps() -> None:
    with pytest.raises(PrivacyError, match="steps"):
        plan_noise(1.0, 1e-5, 0.1, 0, "rdp")


def test_prv_reaches_a_target_that_rdp_calls_unreachable() -> None:
    """PRV is tighter: with max_noise between the two answers only PRV can plan it."""
    rdp_sigma = plan_noise(1.0, 1e-5, 0.1, 200, "rdp")
    prv_sigma = plan_noise(1.0, 1e-5, 0.1, 200, "prv")
    cap = (rdp_sigma + prv_sigma) / 2
    with pytest.raises(PrivacyError, match="unreachable"):
        plan_noise(1.0, 1e-5, 0.1, 200, "rdp", max_noise=cap)
    sigma = plan_noise(1.0, 1e-5, 0.1, 200, "prv", max_noise=cap)
    assert 0.99 <= epsilon([Mechanism(sigma, 0.1, 200)], 1e-5, "prv") <= 1.0


def test_schedule_unpacks_as_rate_and_steps() -> None:
    rate, steps = steps_for(100, 30, 2, 20)
    assert (rate, steps) == (0.3, 160)
