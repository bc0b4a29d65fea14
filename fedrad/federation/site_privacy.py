"""A site's sample-level differential privacy for one round of a study.

The study (``[privacy] mode = "sample"``) sets either a noise multiplier or a target epsilon for
the *whole study*. A site plans its noise once, for all rounds together, from its own Poisson
sampling rate ``q = batch_size / n_train`` and the study's total number of DP-SGD steps
(``rounds x local_epochs x ceil(1 / q)``), so that the study spends exactly the target at that site.

Before training a round the site asks its persistent privacy ledger whether the round fits in the
budget of its ``site.toml``; it refuses the round (:class:`~fedrad.privacy.ledger.PrivacyBudgetExceeded`)
otherwise. After training it records the round in the ledger (idempotent for a retried round) and
reports what it has spent.

Planning the noise takes a few dozen accountant evaluations (about a second), and a deployed
ClientApp is a fresh process for every round, so a site keeps the noise it planned in its cache
folder (:data:`PLAN_CACHE`). A cached noise multiplier is never trusted blindly: it is used only
when one accountant evaluation confirms that it spends the target, ``epsilon in [target - 0.01,
target]`` (what :func:`~fedrad.privacy.planning.plan_noise` guarantees); otherwise the site plans
again. The cache is a convenience: unreadable, stale or unwritable, it is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fedrad.errors import FedradError
from fedrad.federation.config import SiteConfig, StudyConfig


@dataclass(frozen=True)
class RoundPlan:
    """The DP-SGD mechanism a site runs in one round of a study."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    total_steps: int


def plan_round(study: StudyConfig, n_train: int, cache_dir: Path | None = None) -> RoundPlan:
    """The noise multiplier and steps of each round, planned for all of the study's rounds.

    With ``cache_dir`` (the site's cache folder) a planned noise is kept in
    ``cache_dir/``:data:`PLAN_CACHE` and reused, once verified, by later rounds and processes.
    """
    from fedrad.privacy.planning import steps_for

    t, p = study.training, study.privacy
    sample_rate, steps_per_round = steps_for(n_train, t.batch_size, t.local_epochs, 1)
    steps_per_round = int(steps_per_round)
    total = steps_per_round * t.rounds
    if p.noise_multiplier is not None:
        sigma = float(p.noise_multiplier)
    else:
        sigma = planned_noise(
            float(p.target_epsilon), p.delta, sample_rate, total, p.accountant, cache_dir
        )
    return RoundPlan(sigma, sample_rate, steps_per_round, total)


#: The site's noise plans, in its cache folder.
PLAN_CACHE = "dp-noise-plans.json"
PLAN_CACHE_FORMAT = "fedrad-dp-noise-plans"
#: Tolerance of a plan: its epsilon lies in ``[target - PLAN_TOLERANCE, target]``.
PLAN_TOLERANCE = 0.01
#: Most plans kept in the cache (the oldest are dropped).
MAX_CACHED_PLANS = 64


def planned_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    cache_dir: Path | None = None,
) -> float:
    """:func:`~fedrad.privacy.planning.plan_noise` for ``(sigma, sample_rate, steps)``, cached on disk.

    A cached ``sigma`` is returned only if ``epsilon([(sigma, sample_rate, steps)], delta)`` lies
    in ``[target_epsilon - PLAN_TOLERANCE, target_epsilon]``, the guarantee of a fresh plan, so a
    stale or edited cache can never make a site overspend.
    """
    from fedrad.privacy.planning import plan_noise

    if cache_dir is None:
        return plan_noise(
            target_epsilon, delta, sample_rate, steps, accountant, tolerance=PLAN_TOLERANCE
        )
    path = Path(cache_dir) / PLAN_CACHE
    key = json.dumps([target_epsilon, delta, sample_rate, steps, accountant])
    plans = _read_plans(path)
    cached = plans.get(key)
    if cached is not None and _spends_target(
        cached, target_epsilon, delta, sample_rate, steps, accountant
    ):
        return cached
    sigma = plan_noise(
        target_epsilon, delta, sample_rate, steps, accountant, tolerance=PLAN_TOLERANCE
    )
    plans.pop(key, None)
    plans[key] = sigma
    while len(plans) > MAX_CACHED_PLANS:
        plans.pop(next(iter(plans)))
    _write_plans(path, plans)
    return sigma


def _spends_target(
    sigma: float, target: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> bool:
    """Whether ``sigma`` spends the target to within the plan's tolerance (never more)."""
    from fedrad.privacy.accountant import Mechanism, PrivacyError, epsilon

    try:
        spent = epsilon([Mechanism(sigma, sample_rate, steps)], delta, accountant)  # type: ignore[arg-type]
    except PrivacyError:
        return False
    return target - PLAN_TOLERANCE <= spent <= target


def _read_plans(path: Path) -> dict[str, float]:
    """The cached plans ``{key: sigma}``; ``{}`` when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("format") != PLAN_CACHE_FORMAT:
        return {}
    plans = data.get("plans")
    if not isinstance(plans, dict):
        return {}
    return {
        str(key): float(value)
        for key, value in plans.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    }


def _write_plans(path: Path, plans: dict[str, float]) -> None:
    """Replace the cache file atomically; a cache that cannot be written is skipped."""
    from fedrad.secure.files import write_atomically

    text = json.dumps({"format": PLAN_CACHE_FORMAT, "version": 1, "plans": plans}, indent=1)
    with contextlib.suppress(OSError):
        write_atomically(path, (text + "\n").encode("utf-8"))


#: The site's secret for DP-SGD randomness, in its keys folder (created on first use).
DP_SECRET = "dp-noise.secret"


def write_dp_secret(site: SiteConfig, secret: bytes | None = None) -> Path:
    """Write the site's DP noise secret (random unless given: simulations derive it from the
    scenario seed so that runs repeat), readable by the site only."""
    from fedrad.secure.files import write_owner_only

    return write_owner_only(
        site.keys_dir / DP_SECRET, secret if secret is not None else secrets.token_bytes(32)
    )


def dp_seed(site: SiteConfig, study: StudyConfig, server_round: int) -> int:
    """The seed of a round's Poisson sampling and Gaussian noise: HMAC-SHA256 of (study, seed,
    round) under the site's secret. The server cannot regenerate (and so subtract) the noise,
    and a retried round draws the same noise, so the ledger rightly counts it once."""
    path = site.keys_dir / DP_SECRET
    if not path.exists():
        write_dp_secret(site)
    secret = path.read_bytes()
    message = f"{study.name}:{study.seed}:{server_round}".encode()
    return int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:8], "big")


def site_ledger(site: SiteConfig, study: StudyConfig):
    """The site's persistent ledger, with its own budget and delta from ``site.toml``."""
    from fedrad.privacy.ledger import PrivacyLedger

    return PrivacyLedger(
        site.ledger_path, site.epsilon_budget, site.delta, study.privacy.accountant
    )


def train_private_round(
    study: StudyConfig,
    site: SiteConfig,
    model: nn.Module,
    X: np.ndarray,
    target: Any,
    *,
    run_id: int,
    server_round: int,
    proximal_mu: float = 0.0,
    global_params: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Check the budget, run DP-SGD for one round, record it; returns the training result.

    The result holds ``loss``, ``n``, ``steps`` and the privacy figures the site reports:
    ``epsilon`` (all the site has spent, across studies), ``epsilon-study`` (this study so far),
    ``noise-multiplier``, ``sample-rate`` and ``delta``.
    """
    from fedrad.privacy.accountant import Mechanism
    from fedrad.privacy.dp_sgd import train_local_private

    if study.task == "survival":
        raise FedradError(
            "sample-level DP-SGD is not available for Cox models (risk sets make per-patient "
            "gradients dependent); use [privacy] mode = 'client' or 'none' for a survival study"
        )
    plan = plan_round(study, int(np.asarray(X).shape[0]), site.cache_dir)
    mechanism = Mechanism(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
    ledger = site_ledger(site, study)
    delta = study.privacy.delta
    ledger.check(mechanism, study=study.name, run_id=run_id, round=server_round, study_delta=delta)
    result = train_local_private(
        model,
        X,
        target,
        epochs=study.training.local_epochs,
        lr=study.training.learning_rate,
        batch_size=study.training.batch_size,
        seed=dp_seed(site, study, server_round),
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=study.privacy.max_grad_norm,
        proximal_mu=proximal_mu,
        global_params=global_params,
        optimizer=study.training.optimizer,
        l2=study.model.l2,
    )
    ledger.record(mechanism, study=study.name, run_id=run_id, round=server_round, study_delta=delta)
    return {
        **result,
        "epsilon": ledger.spent(),
        "epsilon-study": ledger.spent(study=study.name, run_id=run_id),
        "noise-multiplier": plan.noise_multiplier,
        "sample-rate": plan.sample_rate,
        "delta": site.delta,
    }
