"""Reference accounting "from scratch": what the ledger computed before the accountant was memoised.

Every call builds Opacus' accountants anew: the RDP accountant from its history, and for PRV the
safe domain with Opacus' own ``compute_safe_domain_size`` (its RDP bound is the slow part), the
mesh widened exactly as :mod:`fedrad.privacy.accountant` widens it, then discretisation and FFT
composition. Nothing is merged unless ``merge`` is true and nothing is cached, so it is an
independent check of the fast path (and the "before" of ``benchmarks/dp_round_cost.py``).
Not part of the library: it exists to be compared with.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from fedrad.privacy.accountant import (
    MAX_PRV_EPS_ERROR,
    MAX_PRV_POINTS,
    PRV_EPS_ERROR,
    Mechanism,
)

History = list[tuple[float, float, int]]


def reference_history(mechanisms: Sequence[Mechanism], merge: bool = True) -> History:
    """``[(sigma, q, steps)]`` of the mechanisms with steps; equal ``(sigma, q)`` summed if ``merge``."""
    history: History = []
    for m in mechanisms:
        if m.steps == 0:
            continue
        same = [
            i
            for i, (s, q, _) in enumerate(history)
            if (s, q) == (m.noise_multiplier, m.sample_rate)
        ]
        if merge and same:
            sigma, q, steps = history[same[0]]
            history[same[0]] = (sigma, q, steps + m.steps)
        else:
            history.append((m.noise_multiplier, m.sample_rate, m.steps))
    return history


def reference_rdp(history: History, delta: float) -> float:
    """Opacus' ``RDPAccountant`` on ``history``, built afresh."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta))


def reference_prv(history: History, delta: float) -> float:
    """PRV composition of ``history`` with Opacus' building blocks, nothing reused between calls.

    Domain ``L`` from Opacus' ``compute_safe_domain_size``; error allowance
    ``max(0.01, 2 L sqrt(T log(12 / delta_error) / 2) / MAX_PRV_POINTS)``; RDP beyond
    ``MAX_PRV_EPS_ERROR`` or when the numerics fail (as the library does).
    """
    from opacus.accountants.analysis.prv import (
        Domain,
        PoissonSubsampledGaussianPRV,
        TruncatedPrivacyRandomVariable,
        compose_heterogeneous,
        compute_safe_domain_size,
        discretize,
    )

    delta_error = delta / 1000
    total = sum(steps for _, _, steps in history)
    half_width = compute_safe_domain_size(
        prvs=[PoissonSubsampledGaussianPRV(q, sigma) for sigma, q, _ in history],
        max_self_compositions=[steps for _, _, steps in history],
        eps_error=PRV_EPS_ERROR,
        delta_error=delta_error,
    )
    scale = math.sqrt(total * math.log(12 / delta_error) / 2)
    eps_error = max(PRV_EPS_ERROR, 2.0 * half_width * scale / MAX_PRV_POINTS)
    if eps_error > MAX_PRV_EPS_ERROR:
        return reference_rdp(history, delta)
    half_width = max(half_width, eps_error + 3.0)
    domain = Domain.create_aligned(-half_width, half_width, eps_error / scale)
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
    except (ValueError, RuntimeError, FloatingPointError):
        return reference_rdp(history, delta)
    value = float(upper)
    return value if math.isfinite(value) else reference_rdp(history, delta)


def reference_epsilon(
    mechanisms: Sequence[Mechanism], delta: float, accountant: str = "prv", merge: bool = True
) -> float:
    """Epsilon of the composition of ``mechanisms`` at ``delta``, computed from scratch."""
    history = reference_history(mechanisms, merge)
    if not history:
        return 0.0
    if any(sigma == 0.0 for sigma, _, _ in history):
        return math.inf
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        value = (
            reference_rdp(history, delta) if accountant == "rdp" else reference_prv(history, delta)
        )
    return max(value, 0.0)
