"""Planning a study's DP-SGD: the step schedule of a site and the noise that spends a target epsilon.

Schedule (:func:`steps_for`): DP-SGD samples every batch by Poisson sampling, each of the site's
``n`` training rows joining independently with probability ``q = min(1, B / n)`` (``B`` the study's
batch size, so the expected batch is ``B``); one local epoch is ``ceil(1 / q) = ceil(n / B)`` steps
(as many as an ordinary shuffled epoch has batches), and the whole study is
``T = rounds * local_epochs * ceil(1 / q)`` steps at that rate.

Noise (:func:`plan_noise`): the smallest-noise ``sigma`` (to within the tolerance) whose composition
over the ``T`` steps -- after the ``prior`` mechanisms, if any -- costs at most ``target_epsilon``
at ``delta``:  ``epsilon(prior + [(sigma, q, T)]) in [target - tolerance, target]``.

Decision on ``prior``: a study's ``target_epsilon`` is the budget of *that study alone*, so the
ClientApp plans with ``prior=()``; what the site has spent in other studies is the ledger's
business (:class:`fedrad.privacy.ledger.PrivacyLedger` refuses rounds that would exceed the site's
budget). ``prior`` serves re-planning the rest of a study whose earlier part ran at other settings
(e.g. a resumed study whose sampling rate changed): pass the mechanisms already spent *in this
study* and the total study target.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from fedrad.privacy.accountant import (
    Accountant,
    Mechanism,
    PrivacyError,
    check_accountant,
    check_delta,
    epsilon,
)

#: Largest noise multiplier :func:`plan_noise` will return by default.
MAX_NOISE = 1.0e4
#: Smallest noise multiplier :func:`plan_noise` searches down to.
MIN_NOISE = 1.0e-3


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise PrivacyError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class StepSchedule:
    """DP-SGD steps of one site in a study: Poisson ``sample_rate`` and step counts.

    ``steps_per_round = local_epochs * steps_per_epoch``; ``steps = rounds * steps_per_round``.
    Unpacks as the pair ``(sample_rate, steps)``: ``q, T = steps_for(n, B, epochs, rounds)``.
    """

    n_train: int
    batch_size: int
    sample_rate: float
    steps_per_epoch: int
    local_epochs: int
    rounds: int

    @property
    def steps_per_round(self) -> int:
        """DP-SGD steps of one round of local training."""
        return self.local_epochs * self.steps_per_epoch

    @property
    def steps(self) -> int:
        """DP-SGD steps of the whole study (all rounds)."""
        return self.rounds * self.steps_per_round

    def __iter__(self) -> Iterator[float | int]:
        """``(sample_rate, steps)``, so a schedule unpacks like a pair."""
        return iter((self.sample_rate, self.steps))

    def round_mechanism(self, noise_multiplier: float) -> Mechanism:
        """What one round spends: ``Mechanism(noise_multiplier, sample_rate, steps_per_round)``."""
        return Mechanism(noise_multiplier, self.sample_rate, self.steps_per_round)

    def study_mechanism(self, noise_multiplier: float) -> Mechanism:
        """What the whole study spends: ``Mechanism(noise_multiplier, sample_rate, steps)``."""
        return Mechanism(noise_multiplier, self.sample_rate, self.steps)


def steps_for(
    n_train: int, batch_size: int | None, local_epochs: int = 1, rounds: int = 1
) -> StepSchedule:
    """The Poisson schedule: ``q = min(1, B / n)``, ``ceil(1 / q) = ceil(n / B)`` steps per epoch.

    ``batch_size=None`` means full batch (``q = 1``, one step per epoch). Integer arithmetic, so
    ``steps_per_epoch`` is exact for every ``(n, B)``.
    """
    n = _positive_int(n_train, "n_train (training rows of the site)")
    b = n if batch_size is None else _positive_int(batch_size, "batch_size")
    epochs = _positive_int(local_epochs, "local_epochs")
    r = _positive_int(rounds, "rounds")
    b = min(b, n)
    return StepSchedule(
        n_train=n,
        batch_size=b,
        sample_rate=b / n,
        steps_per_epoch=-(-n // b),
        local_epochs=epochs,
        rounds=r,
    )


def plan_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: Accountant = "prv",
    prior: Sequence[Mechanism] = (),
    *,
    tolerance: float = 0.01,
    max_noise: float = MAX_NOISE,
) -> float:
    """The noise multiplier ``sigma`` with ``epsilon(prior + [(sigma, q, steps)]) in [t - tol, t]``.

    ``t = target_epsilon``, ``tol = tolerance``, ``q = sample_rate``. The returned ``sigma`` never
    overspends (its epsilon is at most the target, as computed by
    :func:`fedrad.privacy.accountant.epsilon` with the same ``accountant``) and is within
    ``tolerance`` of it. Search: bracket ``sigma`` by doubling/halving, then regula falsi (Illinois)
    on ``log epsilon`` against ``log sigma``, which is nearly linear: about 5-10 accountant calls.
    PRV calls are slow (0.2-2 s), so PRV starts from the (cheap) RDP answer and brackets tightly
    around it: about 3-5 PRV calls.

    Results are memoised, so asking again each round costs nothing.

    Raises :class:`PrivacyError` when the target cannot be reached: it is not positive, ``prior``
    alone already spends it, or it needs more noise than ``max_noise`` (a model that noisy learns
    nothing: raise the target, the batch size, or lower the number of rounds/epochs).
    """
    if isinstance(target_epsilon, bool) or not isinstance(target_epsilon, numbers.Real):
        raise PrivacyError(f"target_epsilon must be a number, got {target_epsilon!r}")
    target = float(target_epsilon)
    if not (math.isfinite(target) and target > 0):
        raise PrivacyError(
            f"target_epsilon must be a positive finite number, got {target_epsilon!r}"
        )
    if not (math.isfinite(tolerance) and 0 < tolerance < target):
        raise PrivacyError(f"tolerance must lie in (0, target_epsilon), got {tolerance!r}")
    delta = check_delta(delta)
    accountant = check_accountant(accountant)  # type: ignore[assignment]
    steps = _positive_int(steps, "steps")
    rate = Mechanism(1.0, sample_rate, steps).sample_rate  # validated
    if not (math.isfinite(max_noise) and max_noise > 0):
        raise PrivacyError(f"max_noise must be positive, got {max_noise!r}")
    return _plan(target, delta, rate, steps, accountant, tuple(prior), tolerance, max_noise)


@functools.lru_cache(maxsize=256)
def _plan(
    target: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: Accountant,
    prior: tuple[Mechanism, ...],
    tolerance: float,
    max_noise: float,
) -> float:
    """:func:`plan_noise` on validated arguments, memoised (a site asks again every round)."""
    describe = f"sample_rate={sample_rate:g}, steps={steps}, delta={delta:g}, {accountant}"
    already = epsilon(prior, delta, accountant)
    if already >= target - tolerance:
        raise PrivacyError(
            f"target epsilon {target:g} is unreachable: the prior mechanisms already spend "
            f"{already:.4g} at delta={delta:g}; raise the target"
        )

    def eps(sigma: float) -> float:
        return epsilon((*prior, Mechanism(sigma, sample_rate, steps)), delta, accountant)

    start, factor = 1.0, 2.0
    if accountant == "prv":
        # RDP is cheap and its sigma is a few percent above PRV's: start there, bracket tightly.
        try:
            start = _plan(target, delta, sample_rate, steps, "rdp", prior, target / 20, max_noise)
            factor = 1.15
        except PrivacyError:  # RDP is looser: it may call unreachable what PRV can still reach
            start = max_noise
    return _solve(eps, target, tolerance, start, factor, max_noise, describe)


def _solve(
    eps: Callable[[float], float],
    target: float,
    tolerance: float,
    start: float,
    factor: float,
    max_noise: float,
    describe: str,
) -> float:
    """Decreasing ``eps``: a ``sigma`` with ``eps(sigma)`` in ``[target - tolerance, target]``.

    Bracket from ``start`` by steps of ``factor``, then Illinois regula falsi on
    ``(log sigma, log eps)``.
    """
    aim = target - tolerance / 2
    hi = min(start, max_noise)
    e_hi = eps(hi)
    while e_hi > target:  # more noise until within budget
        if hi >= max_noise:
            raise PrivacyError(
                f"target epsilon {target:g} is unreachable with noise_multiplier <= "
                f"{max_noise:g} ({describe}); raise the target, or lower the rounds, local "
                "epochs or batch size"
            )
        hi = min(factor * hi, max_noise)
        e_hi = eps(hi)
    if e_hi >= target - tolerance:
        return hi
    lo = hi / factor
    e_lo = eps(lo)
    while e_lo <= target:  # less noise until over budget
        hi, e_hi = lo, e_lo
        if e_hi >= target - tolerance or lo <= MIN_NOISE:
            return hi
        lo = lo / factor
        e_lo = eps(lo)
    # Invariant: eps(lo) > target >= eps(hi).
    x_lo, x_hi = math.log(lo), math.log(hi)
    g_lo = math.log(e_lo / aim) if math.isfinite(e_lo) else 50.0
    g_hi = math.log(e_hi / aim)
    side = 0
    for _ in range(100):
        x = (x_lo * g_hi - x_hi * g_lo) / (g_hi - g_lo)
        if not x_lo < x < x_hi:
            x = (x_lo + x_hi) / 2
        e = eps(math.exp(x))
        if e <= target:
            if e >= target - tolerance:
                return math.exp(x)
            x_hi, g_hi = x, math.log(e / aim)
            if side == -1:
                g_lo /= 2
            side = -1
        else:
            x_lo, g_lo = x, (math.log(e / aim) if math.isfinite(e) else 50.0)
            if side == 1:
                g_hi /= 2
            side = 1
        if x_hi - x_lo < 1e-12:
            break
    return math.exp(x_hi)
