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
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fedrad.errors import FedradError
from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.site.secret import SITE_SECRET, write_site_secret


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


#: The site's secret (kept under its historical name; see :mod:`fedrad.site.secret`).
DP_SECRET = SITE_SECRET


def write_dp_secret(site: SiteConfig, secret: bytes | None = None) -> Path:
    """Write the site's secret (see :func:`fedrad.site.secret.write_site_secret`)."""
    return write_site_secret(site, secret)


def site_ledger(site: SiteConfig, study: StudyConfig):
    """The site's persistent ledger, with its own (finite) budget and delta from ``site.toml``."""
    from fedrad.privacy.ledger import PrivacyLedger

    return PrivacyLedger(
        site.ledger_path, site.site_policy.epsilon_budget, site.delta, study.privacy.accountant
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
    study_hash: str,
    input_hash: str,
    seed: int,
    min_noise_multiplier: float = 0.0,
    max_study_epsilon: float | None = None,
    proximal_mu: float = 0.0,
    global_params: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Check the budget, run DP-SGD for one round, record it; returns the training result.

    The ledger entry is keyed by ``(study_hash, run_id, server_round)`` and records
    ``input_hash`` (the global model and config trained from): a second, different release of
    the round is refused. ``seed`` (the site's, from its secret and that key) drives the Poisson
    sampling and the noise. The site's policy adds: the planned noise must be at least
    ``min_noise_multiplier`` and the whole study's epsilon at most ``max_study_epsilon``.

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
    from fedrad.privacy.accountant import epsilon as composed_epsilon
    from fedrad.site.refusal import SiteRefusal

    plan = plan_round(study, int(np.asarray(X).shape[0]), site.cache_dir)
    if plan.noise_multiplier < min_noise_multiplier:
        raise SiteRefusal(
            "policy",
            f"the study's DP-SGD noise multiplier {plan.noise_multiplier:.3g} at this site is "
            f"below its min_noise_multiplier {min_noise_multiplier:g}",
        )
    mechanism = Mechanism(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
    if max_study_epsilon is not None:
        whole = Mechanism(plan.noise_multiplier, plan.sample_rate, plan.total_steps)
        study_epsilon = composed_epsilon([whole], site.delta, study.privacy.accountant)
        if study_epsilon > max_study_epsilon + 1e-9:
            raise SiteRefusal(
                "policy",
                f"the whole study would spend epsilon {study_epsilon:.3g} at this site, above "
                f"its max_study_epsilon {max_study_epsilon:g}",
            )
    ledger = site_ledger(site, study)
    delta = study.privacy.delta
    key = dict(
        study=study.name,
        run_id=run_id,
        round=server_round,
        study_delta=delta,
        study_hash=study_hash,
        input_hash=input_hash,
    )
    ledger.check(mechanism, **key)
    result = train_local_private(
        model,
        X,
        target,
        epochs=study.training.local_epochs,
        lr=study.training.learning_rate,
        batch_size=study.training.batch_size,
        seed=seed,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=study.privacy.max_grad_norm,
        proximal_mu=proximal_mu,
        global_params=global_params,
        optimizer=study.training.optimizer,
        l2=study.model.l2,
    )
    ledger.record(mechanism, **key)
    return {
        **result,
        "epsilon": ledger.spent(),
        "epsilon-study": ledger.spent(study=study.name, run_id=run_id),
        "epsilon-budget": ledger.budget,
        "noise-multiplier": plan.noise_multiplier,
        "sample-rate": plan.sample_rate,
        "delta": site.delta,
    }
