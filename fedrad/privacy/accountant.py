"""Privacy accounting of DP-SGD: the epsilon that a sequence of sampled Gaussian mechanisms spends.

One DP-SGD step with Poisson sampling rate ``q`` (each row joins the batch independently with
probability ``q``), per-sample clipping to norm ``C`` and Gaussian noise ``N(0, sigma^2 C^2)`` on
the summed clipped gradients is the *Poisson-subsampled Gaussian mechanism* with noise multiplier
``sigma``. A :class:`Mechanism` is ``steps`` such steps with the same ``(sigma, q)``; a site's
spending is the adaptive composition of all its mechanisms, and :func:`epsilon` returns the smallest
``epsilon`` (an upper bound) such that the composition is ``(epsilon, delta)``-DP.

Two accountants of Opacus are offered:

- ``"prv"`` (default): numerical composition of privacy loss random variables (Gopi, Lee & Wutschitz
  2021). The privacy loss distribution of every step is discretised on a mesh and the compositions
  are convolved by FFT; Opacus returns the *upper end* of the error interval,
  ``eps_hat(delta - delta_error) + eps_error`` where ``|eps_hat - eps| <= eps_error``: a guarantee,
  not an estimate, at most about ``2 eps_error`` above the exact epsilon. The mesh has
  ``2 L / h`` points with ``h = eps_error / sqrt(T log(12 / delta_error) / 2)`` (``T`` the total
  number of steps, ``delta_error = delta / 1000``, ``L`` an RDP bound of the loss tail); memory and
  time grow with it, so when the default ``eps_error`` would need more than
  :data:`MAX_PRV_POINTS` points the error allowance is widened until the mesh fits (still an upper
  bound, just looser). Beyond :data:`MAX_PRV_EPS_ERROR`, or when the PRV numerics fail (tail
  overflow, or a ``delta`` too small for the mesh) -- in practice only for epsilons far outside
  any meaningful budget, tens to hundreds -- the RDP bound, also valid, is returned instead.
- ``"rdp"``: Rényi DP of the sampled Gaussian mechanism (Mironov, Talwar & Zhang 2019) summed over
  steps at orders ``alpha`` in Opacus' grid (1.1 ... 10.9, 12 ... 63), converted with
  ``eps = min_alpha [RDP(alpha) + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1)]``
  (Balle et al. 2020). Looser than PRV, cheap and robust.

Cost: both accountants need the RDP of one step of every ``(sigma, q)`` at each order (a series
per fractional order, about 0.1 s; PRV needs it for its domain), which is memoised per
``(sigma, q)``; and :func:`epsilon` is memoised per (merged history, delta, accountant), so the
four questions a site's round asks its ledger cost one composition. Both caches are bounded, and
the results are the same to the last bit as composing from scratch.

Opacus is imported on first use, so importing this module stays light.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedrad.errors import FedradError

Accountant = Literal["prv", "rdp"]
ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp")

#: Default error allowance of the PRV accountant (Opacus' default).
PRV_EPS_ERROR = 0.01
#: Largest PRV mesh (points); about 70 MB and 2 s of work on one core.
MAX_PRV_POINTS = 1_000_000
#: Largest error allowance the PRV accountant is widened to before falling back to RDP.
MAX_PRV_EPS_ERROR = 0.5
#: RDP orders ``alpha`` of both accountants (Opacus' default grid: 1.1 ... 10.9, 12 ... 63).
RDP_ORDERS: tuple[float, ...] = tuple(1 + x / 10.0 for x in range(1, 100)) + tuple(range(12, 64))


class PrivacyError(FedradError):
    """Differential-privacy settings or bookkeeping are invalid (bad noise, rate, delta, ...)."""


def _finite_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PrivacyError(f"{what} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise PrivacyError(f"{what} must be finite, got {value!r}")
    return out


def check_delta(delta: object) -> float:
    """``delta`` as a float in ``(0, 1)``, or :class:`PrivacyError`."""
    d = _finite_number(delta, "delta")
    if not 0.0 < d < 1.0:
        raise PrivacyError(f"delta must lie in (0, 1), got {delta!r} (typical: 1e-5, below 1/n)")
    return d


def check_accountant(accountant: object) -> str:
    """``accountant`` if it is ``"prv"`` or ``"rdp"``, else :class:`PrivacyError`."""
    if accountant not in ACCOUNTANTS:
        raise PrivacyError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    return str(accountant)


@dataclass(frozen=True)
class Mechanism:
    """``steps`` DP-SGD steps with noise multiplier ``noise_multiplier`` and Poisson rate ``sample_rate``.

    ``noise_multiplier`` is ``sigma``: the noise standard deviation divided by the clipping norm;
    ``0`` means no noise (infinite epsilon). ``sample_rate`` is the Poisson sampling probability
    ``q`` in ``(0, 1]``; ``steps`` a non-negative integer (0 spends nothing).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        sigma = _finite_number(self.noise_multiplier, "noise_multiplier")
        if sigma < 0:
            raise PrivacyError(f"noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        q = _finite_number(self.sample_rate, "sample_rate")
        if not 0.0 < q <= 1.0:
            raise PrivacyError(f"sample_rate must lie in (0, 1], got {self.sample_rate!r}")
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise PrivacyError(f"steps must be a non-negative integer, got {steps!r}")
        object.__setattr__(self, "steps", int(steps))
        object.__setattr__(self, "noise_multiplier", sigma)
        object.__setattr__(self, "sample_rate", q)


def _history(mechanisms: Iterable[Mechanism]) -> list[tuple[float, float, int]]:
    """Opacus accountant history ``[(sigma, q, steps)]``; equal ``(sigma, q)`` merged, 0 steps dropped.

    Composition is commutative, so merging equal mechanisms changes nothing but the work.
    """
    merged: dict[tuple[float, float], int] = {}
    for m in mechanisms:
        if not isinstance(m, Mechanism):
            raise PrivacyError(f"expected a Mechanism, got {type(m).__name__}")
        if m.steps > 0:
            key = (m.noise_multiplier, m.sample_rate)
            merged[key] = merged.get(key, 0) + m.steps
    return [(sigma, q, steps) for (sigma, q), steps in merged.items()]


@functools.lru_cache(maxsize=1024)
def _rdp_per_step(sigma: float, q: float) -> np.ndarray:
    """RDP of *one* sampled Gaussian step at every order of :data:`RDP_ORDERS` (read-only array).

    This is the slow part of both accountants (a series per fractional order, about 0.1 s), and a
    site runs the same ``(sigma, q)`` round after round, so it is memoised. RDP composes by
    addition, so ``s`` steps cost exactly ``s * _rdp_per_step(sigma, q)`` -- the product Opacus'
    ``compute_rdp(steps=s)`` forms itself, so the result is the same to the last bit.
    """
    from opacus.accountants.analysis.rdp import compute_rdp

    rdp = np.asarray(
        compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(RDP_ORDERS)), dtype=float
    )
    rdp.setflags(write=False)
    return rdp


def _rdp_epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """RDP accountant: ``sum_i steps_i * RDP_i(alpha)`` converted at ``delta`` (Balle et al.).

    Same arithmetic, in the same order, as Opacus' ``RDPAccountant.get_epsilon`` on ``history``.
    """
    from opacus.accountants.analysis.rdp import get_privacy_spent

    rdp = sum([_rdp_per_step(sigma, q) * steps for sigma, q, steps in history])
    eps, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    return float(eps)


def _prv_domain(history: Sequence[tuple[float, float, int]], delta: float) -> tuple[float, float]:
    """Opacus' safe PRV domain half-width ``L`` and the error allowance that fits the mesh limit.

    Mesh points ``= 2 L / h`` with ``h = eps_error / sqrt(T log(12 / delta_error) / 2)``, so the
    smallest allowance that fits :data:`MAX_PRV_POINTS` is
    ``2 L sqrt(T log(12 / delta_error) / 2) / MAX_PRV_POINTS``; never below :data:`PRV_EPS_ERROR`.
    ``L = max(L_rdp, eps_error) + 3`` (Gopi et al., remark 5.6, as Opacus computes it), with
    ``L_rdp`` the larger of the RDP epsilon of the history at ``delta_error / 4`` and of each single
    step at ``delta_error / (8 T)``.
    """
    delta_error = delta / 1000
    total = sum(steps for _, _, steps in history)
    # L_rdp: the RDP epsilon of the whole history at delta_error / 4, and of every single step at
    # delta_error / (8 T) (what Opacus' compute_safe_domain_size computes, from memoised RDP).
    tail = _rdp_epsilon(history, delta_error / 4)
    for sigma, q, _ in history:
        tail = max(tail, _rdp_epsilon([(sigma, q, 1)], delta_error / (8 * total)))
    half_width = max(tail, PRV_EPS_ERROR) + 3.0
    scale = math.sqrt(total * math.log(12 / delta_error) / 2)
    eps_error = max(PRV_EPS_ERROR, 2.0 * half_width * scale / MAX_PRV_POINTS)
    return max(half_width, eps_error + 3.0), eps_error


def prv_eps_error(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """The PRV error allowance used for an Opacus ``history`` ``[(sigma, q, steps)]`` at ``delta``."""
    return _prv_domain(history, delta)[1]


def _prv_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus' PRV composition (what ``PRVAccountant.get_epsilon`` does) on the widened mesh.

    The domain is computed once here (its RDP bound is the slow part) instead of twice.
    """
    from opacus.accountants.analysis.prv import (
        Domain,
        PoissonSubsampledGaussianPRV,
        TruncatedPrivacyRandomVariable,
        compose_heterogeneous,
        discretize,
    )

    half_width, eps_error = _prv_domain(history, delta)
    if eps_error > MAX_PRV_EPS_ERROR:
        return _rdp_epsilon(history, delta)
    delta_error = delta / 1000
    total = sum(steps for _, _, steps in history)
    mesh = eps_error / math.sqrt(total * math.log(12 / delta_error) / 2)
    domain = Domain.create_aligned(-half_width, half_width, mesh)
    discrete = [
        discretize(
            TruncatedPrivacyRandomVariable(
                PoissonSubsampledGaussianPRV(q, sigma), domain.t_min, domain.t_max
            ),
            domain,
        )
        for sigma, q, _ in history
    ]
    composed = compose_heterogeneous(
        dprvs=discrete, num_self_compositions=[steps for _, _, steps in history]
    )
    try:
        _, _, upper = composed.compute_epsilon(delta, delta_error, eps_error)
    except (ValueError, RuntimeError, FloatingPointError):  # PRV numerics out of range
        return _rdp_epsilon(history, delta)
    value = float(upper)
    if not math.isfinite(value):  # exp overflow in the loss tail (epsilon in the hundreds)
        return _rdp_epsilon(history, delta)
    return value


def epsilon(mechanisms: Sequence[Mechanism], delta: float, accountant: Accountant = "prv") -> float:
    """The ``epsilon`` for which the composition of all ``mechanisms`` is ``(epsilon, delta)``-DP.

    Returns ``0.0`` for no steps and ``inf`` when a mechanism with steps has no noise. See the
    module docstring for the two accountants and the precision of PRV.
    """
    delta = check_delta(delta)
    accountant = check_accountant(accountant)  # type: ignore[assignment]
    return _composed_epsilon(tuple(_history(mechanisms)), delta, accountant)


@functools.lru_cache(maxsize=512)
def _composed_epsilon(
    history: tuple[tuple[float, float, int], ...], delta: float, accountant: Accountant
) -> float:
    """:func:`epsilon` of a merged Opacus ``history`` on validated arguments, memoised.

    A site's round asks for the same composition several times (the ledger's check, its record,
    the spent total and the study's share), and a pure function of hashable arguments need only
    be computed once. Bounded: ``maxsize`` entries of a tuple and a float.
    """
    if not history:
        return 0.0
    if any(sigma == 0.0 for sigma, _, _ in history):
        return math.inf
    try:
        # Opacus warns when the best RDP order is at the end of its grid and numpy overflows in
        # PRV tails at tiny noise; both results are still upper bounds, so keep the logs quiet.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if accountant == "rdp":
                value = _rdp_epsilon(history, delta)
            else:
                value = _prv_epsilon(history, delta)
    except (ValueError, OverflowError, FloatingPointError, RuntimeError) as exc:
        raise PrivacyError(
            f"the {accountant} accountant failed for history {list(history)} at delta={delta}: {exc}; "
            "try the other accountant or a larger noise multiplier"
        ) from exc
    if math.isnan(value):
        raise PrivacyError(f"the {accountant} accountant gave NaN for history {list(history)}")
    return max(value, 0.0)
