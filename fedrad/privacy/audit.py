"""Empirical privacy audit of fedrad's DP-SGD: a lower bound on epsilon from one training run.

The one-run audit of Steinke, Nasr & Jagielski (2023, "Privacy auditing with one (1) training
run", NeurIPS) with white-box Dirac canaries:

- Model: logistic regression over ``d = k + m`` features. The ``n_rows`` ordinary rows use
  features ``0 .. k-1`` only; canary ``i`` (``i < m``) is the row ``c e_{k+i}`` (its only non-zero
  feature is its own coordinate) with label 1.
- Each canary is included in the training set independently with probability 1/2 (``S_i``);
  the model, initialised at zero, is trained once with fedrad's DP-SGD
  (:func:`fedrad.privacy.dp_sgd.run_dp_sgd`) at a Poisson rate and step count fixed in advance, so
  the mechanism is exactly the one the accountant analyses (add/remove of a canary changes
  nothing else).
- Score of canary ``i``: its weight ``w_{k+i}`` after training. Only canary ``i``'s own clipped
  gradient and the Gaussian noise move that weight, and its gradient pushes it up.
- Guesses: "in" for the ``g`` highest scores, "out" for the ``g`` lowest, abstain on the rest
  (``r = 2 g`` guesses, ``g`` fixed before training); ``v`` = number of correct guesses.

Bound (their Theorem 3.1 / Corollary 5.4, valid for any ``(epsilon, delta)``-DP algorithm): with
``p = e^eps / (1 + e^eps)`` and ``W ~ Binomial(r, p)``, the probability of ``v`` or more correct
guesses is at most::

    P(eps, delta) = min(1, P[W >= v] + 2 m delta * max_{1 <= i <= v} P[v - i <= W < v] / i)

so an algorithm for which the observed ``v`` has ``P(eps, delta) < 1 - confidence`` is *not*
``(eps, delta)``-DP at that confidence. The lower bound is the largest such ``eps`` (found by
bisection; ``P`` increases with ``eps``). A correct DP-SGD with an accountant's claimed epsilon
must never give a lower bound above the claim (up to the 5 % chance the confidence allows); a bug
that skips clipping or noise shows up as a bound far above the claim. One-run audits are loose
for the final model only (the bound at ``m = 1000`` rarely exceeds 1 even when the claim is 4); the
positive control (``noise_multiplier = 0``) shows the attack itself works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedrad.learn.training import owned_tensor
from fedrad.privacy.accountant import (
    Accountant,
    Mechanism,
    PrivacyError,
    check_accountant,
    check_delta,
    epsilon,
)


@dataclass(frozen=True)
class AuditResult:
    """Outcome of :func:`audit_epsilon`: the empirical lower bound next to the claimed epsilon."""

    lower_bound_epsilon: float
    claimed_epsilon: float
    delta: float
    confidence: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    n_canaries: int
    n_included: int
    n_guesses: int
    n_correct: int

    @property
    def consistent(self) -> bool:
        """``True`` when the lower bound does not exceed the claim (no privacy violation seen)."""
        return self.lower_bound_epsilon <= self.claimed_epsilon


def audit_p_value(
    n_canaries: int, n_guesses: int, n_correct: int, epsilon: float, delta: float
) -> float:
    """``P(eps, delta)`` of the module docstring: the chance of ``>= n_correct`` right guesses.

    ``m = n_canaries``, ``r = n_guesses``, ``v = n_correct``; the ``delta`` term uses
    ``P[v - i <= W < v] = sum_{j = v - i}^{v - 1} Binomial(r, p).pmf(j)``, accumulated as ``i`` grows.
    """
    from scipy.stats import binom

    m, r, v = n_canaries, n_guesses, n_correct
    if not 0 <= v <= r <= m:
        raise PrivacyError(f"need 0 <= correct <= guesses <= canaries, got {v}, {r}, {m}")
    p = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(binom.sf(v - 1, r, p))
    if delta == 0 or v == 0:
        return min(1.0, tail)
    i = np.arange(1, v + 1)
    between = np.cumsum(binom.pmf(v - i, r, p))
    return min(1.0, tail + 2.0 * m * delta * float(np.max(between / i)))


def epsilon_lower_bound(
    n_canaries: int, n_guesses: int, n_correct: int, delta: float, confidence: float = 0.95
) -> float:
    """The largest ``eps`` with :func:`audit_p_value` below ``1 - confidence`` (0 if none).

    Bisection to ``1e-6``; the search stops at ``eps = 100`` (then returns 100).
    """
    if not 0.0 < confidence < 1.0:
        raise PrivacyError(f"confidence must lie in (0, 1), got {confidence!r}")
    if not 0.0 <= delta < 1.0:
        raise PrivacyError(f"delta must lie in [0, 1), got {delta!r}")
    alpha = 1.0 - confidence

    def rejected(eps: float) -> bool:
        return audit_p_value(n_canaries, n_guesses, n_correct, eps, delta) < alpha

    if not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejected(hi):
        lo, hi = hi, 2 * hi
        if hi > 100.0:
            return 100.0
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rejected(mid) else (lo, mid)
    return lo


def _canary_data(
    rng: np.random.Generator, n_rows: int, n_features: int, n_canaries: int, value: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, y, included)``: ordinary rows then the included canaries (``value`` at ``k + i``)."""
    d = n_features + n_canaries
    ordinary = np.zeros((n_rows, d))
    ordinary[:, :n_features] = rng.normal(size=(n_rows, n_features))
    w = rng.normal(size=n_features)
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-ordinary[:, :n_features] @ w))).astype(float)
    included = rng.random(n_canaries) < 0.5
    idx = np.flatnonzero(included)
    canaries = np.zeros((idx.size, d))
    canaries[np.arange(idx.size), n_features + idx] = value
    return np.vstack([ordinary, canaries]), np.concatenate([y, np.ones(idx.size)]), included


def audit_epsilon(
    noise_multiplier: float,
    *,
    n_canaries: int = 1000,
    n_guesses: int = 400,
    n_rows: int = 100,
    n_features: int = 4,
    sample_rate: float = 0.1,
    epochs: int = 10,
    lr: float = 1.0,
    max_grad_norm: float = 1.0,
    canary_value: float = 10.0,
    delta: float = 1e-5,
    confidence: float = 0.95,
    accountant: Accountant = "prv",
    seed: int = 0,
) -> AuditResult:
    """Audit fedrad's DP-SGD at ``noise_multiplier`` with one training run (module docstring).

    Trains ``epochs * ceil(1 / sample_rate)`` DP-SGD steps at Poisson rate ``sample_rate`` over
    ``n_rows`` ordinary rows plus the included canaries; the mean's denominator is the expected
    batch ``sample_rate * (n_rows + n_canaries / 2)``, fixed in advance. ``n_guesses`` (even, at
    most ``n_canaries``) guesses are made, half "in" and half "out". ``claimed_epsilon`` is the
    accountant's epsilon of ``Mechanism(noise_multiplier, sample_rate, steps)`` at ``delta``
    (``inf`` without noise). Deterministic for a ``seed``.
    """
    from fedrad.learn.models import LogisticModel
    from fedrad.privacy.dp_sgd import run_dp_sgd

    delta = check_delta(delta)
    accountant = check_accountant(accountant)  # type: ignore[assignment]
    for name, value in (("n_canaries", n_canaries), ("n_rows", n_rows), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PrivacyError(f"{name} must be a positive integer, got {value!r}")
    if n_guesses % 2 or not 0 < n_guesses <= n_canaries:
        raise PrivacyError(f"n_guesses must be even and in (0, n_canaries], got {n_guesses!r}")
    if not 0.0 < sample_rate <= 1.0:
        raise PrivacyError(f"sample_rate must lie in (0, 1], got {sample_rate!r}")
    steps_per_epoch = math.ceil(1.0 / sample_rate - 1e-12)
    mechanism = Mechanism(noise_multiplier, sample_rate, epochs * steps_per_epoch)

    rng = np.random.default_rng(seed)
    X, y, included = _canary_data(rng, n_rows, n_features, n_canaries, canary_value)
    model = LogisticModel(n_features + n_canaries).to(torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    tensors = [owned_tensor(X, torch.float64), owned_tensor(y, torch.float64)]
    run_dp_sgd(
        model,
        tensors,
        sample_rate=sample_rate,
        steps_per_epoch=steps_per_epoch,
        expected_batch_size=sample_rate * (n_rows + n_canaries / 2),
        epochs=epochs,
        lr=lr,
        seed=int(rng.integers(2**62)),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
    )
    scores = model.linear.weight.detach().numpy()[0, n_features:]
    order = np.argsort(scores, kind="stable")  # ties (e.g. untouched weights) broken by index
    half = n_guesses // 2
    correct = int(np.sum(~included[order[:half]]) + np.sum(included[order[-half:]]))
    return AuditResult(
        lower_bound_epsilon=epsilon_lower_bound(n_canaries, n_guesses, correct, delta, confidence),
        claimed_epsilon=epsilon([mechanism], delta, accountant),
        delta=delta,
        confidence=confidence,
        noise_multiplier=mechanism.noise_multiplier,
        sample_rate=sample_rate,
        steps=mechanism.steps,
        n_canaries=n_canaries,
        n_included=int(included.sum()),
        n_guesses=n_guesses,
        n_correct=correct,
    )
