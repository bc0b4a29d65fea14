"""The site's privacy contract: the ``[policy]`` table of its ``site.toml``.

The site is the authority on what leaves it, not the study: a study (or a single message) that
asks for more than the policy allows is refused, and the refusal names the clause it breaks.
Every clause has a safe default, so a hospital that writes no ``[policy]`` at all gets:

========================  ========================  ==========================================
clause                    default                   what it bounds
========================  ========================  ==========================================
``privacy_modes``         ``["sample"]``            how a model update may be protected: only
                                                    per-patient DP-SGD (``"none"`` and the
                                                    distributed ``"client"`` mode must be listed)
``trust_server_noise``    ``false``                 client-level DP whose noise the *server* adds
                                                    (``client-central``) trusts the server
``min_noise_multiplier``  ``0.5``                   the least DP-SGD noise (sigma) the site runs
``max_study_epsilon``     ``8.0``                   the most epsilon one study may spend here
``epsilon_budget``        ``[privacy]``, else 20    the site's lifetime budget, all studies
``require_secure_agg``    ``true``                  model updates only through SecAgg+
``min_secagg_sites``      ``3``                     the smallest SecAgg+ cohort the site joins
``min_secagg_threshold``  ``2``                     the smallest reconstruction threshold
``strategies``            ``["fedavg", "fedprox"]`` the aggregation strategies it trains for
``statistics``            check, moments, evaluate, the aggregate statistics it answers (add
                          calibration               ``newton`` to allow the exact mode)
``min_cell_count``        ``3``                     the fewest patients behind any released count
                                                    or sum (smaller counts are withheld; 3 is
                                                    DataSHIELD's ``nfilter.tab`` default)
``max_runs_per_study``    ``10``                    runs of one approved study it serves
``max_queries``           newton 50, calibration    releases of one kind in one run
                          25, evaluate rounds + 1
========================  ========================  ==========================================

``check_study`` lists the clauses a study breaks (empty: the policy allows it); ``fedrad site
check`` prints the policy beside the study with those clauses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fedrad.federation.config import ConfigError, StudyConfig

#: Privacy modes a policy may list. ``client`` is client-level DP with noise added at each site
#: before secure aggregation; ``client-central`` is client-level DP whose noise the server adds.
POLICY_PRIVACY_MODES = ("none", "sample", "client", "client-central")
#: Statistics (query and evaluation actions) a policy may allow.
POLICY_STATISTICS = ("check", "moments", "evaluate", "calibration", "newton")
DEFAULT_STATISTICS = ("check", "moments", "evaluate", "calibration")
DEFAULT_LIFETIME_BUDGET = 20.0


@dataclass(frozen=True)
class SitePolicy:
    """What this site allows a study to compute and release (see the module docstring)."""

    privacy_modes: tuple[str, ...] = ("sample",)
    trust_server_noise: bool = False
    min_noise_multiplier: float = 0.5
    max_study_epsilon: float = 8.0
    epsilon_budget: float = DEFAULT_LIFETIME_BUDGET
    require_secure_aggregation: bool = True
    min_secagg_sites: int = 3
    min_secagg_threshold: int = 2
    strategies: tuple[str, ...] = ("fedavg", "fedprox")
    statistics: tuple[str, ...] = DEFAULT_STATISTICS
    min_cell_count: int = 3
    max_runs_per_study: int = 10
    max_queries: dict[str, int] = field(default_factory=lambda: {"newton": 50, "calibration": 25})

    def __post_init__(self) -> None:
        bad = sorted(set(self.privacy_modes) - set(POLICY_PRIVACY_MODES))
        if bad:
            raise ConfigError(
                f"[policy] privacy_modes: unknown mode(s) {', '.join(bad)}; "
                f"use {', '.join(POLICY_PRIVACY_MODES)}"
            )
        bad = sorted(set(self.statistics) - set(POLICY_STATISTICS))
        if bad:
            raise ConfigError(
                f"[policy] statistics: unknown statistic(s) {', '.join(bad)}; "
                f"use {', '.join(POLICY_STATISTICS)}"
            )
        if not self.epsilon_budget > 0 or self.epsilon_budget == float("inf"):
            raise ConfigError("[policy] epsilon_budget must be positive and finite")
        if not self.max_study_epsilon > 0:
            raise ConfigError("[policy] max_study_epsilon must be positive")
        if self.min_cell_count < 1:
            raise ConfigError("[policy] min_cell_count must be at least 1")
        if self.min_secagg_threshold < 2 and "none" not in self.privacy_modes:
            raise ConfigError(
                "[policy] min_secagg_threshold must be at least 2: with a threshold of 1 a "
                "single other node can unmask this site's update"
            )

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def from_dict(data: dict[str, Any], where: str, lifetime_budget: float | None) -> SitePolicy:
        """The policy of a ``[policy]`` table (``lifetime_budget``: ``[privacy] epsilon_budget``)."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(SitePolicy)}
        unknown = sorted(set(data) - known)
        if unknown:
            from difflib import get_close_matches

            hints = []
            for key in unknown:
                close = get_close_matches(key, sorted(known), n=1)
                hints.append(f"{key}" + (f" (did you mean {close[0]}?)" if close else ""))
            raise ConfigError(f"{where} [policy]: unknown key(s) {', '.join(hints)}")
        for key in ("privacy_modes", "strategies", "statistics"):
            if key in data:
                data[key] = tuple(str(v) for v in data[key])
        if "max_queries" in data:
            data["max_queries"] = {str(k): int(v) for k, v in dict(data["max_queries"]).items()}
        if lifetime_budget is not None:
            if "epsilon_budget" in data and float(data["epsilon_budget"]) != lifetime_budget:
                raise ConfigError(
                    f"{where}: [privacy] epsilon_budget and [policy] epsilon_budget differ; "
                    "keep one"
                )
            data["epsilon_budget"] = lifetime_budget
        return SitePolicy(**data)

    def to_toml(self) -> str:
        """The ``[policy]`` table that :meth:`from_dict` reads back."""
        lines = ["[policy]"]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "max_queries":
                continue
            if f.name == "epsilon_budget" and value == DEFAULT_LIFETIME_BUDGET:
                continue  # the default; a site sets its own in [privacy] epsilon_budget
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
        lines.append("[policy.max_queries]")
        lines += [f"{k} = {v}" for k, v in sorted(self.max_queries.items())]
        return "\n".join(lines) + "\n"

    @staticmethod
    def allowing(study: StudyConfig, **overrides: Any) -> SitePolicy:
        """The default policy, widened just enough to admit ``study`` (virtual sites of a
        simulation whose scenario asks for more than the default allows, e.g. ``--no-dp``)."""
        default = SitePolicy()
        mode = _policy_mode(study)
        changes: dict[str, Any] = {
            "privacy_modes": tuple(dict.fromkeys((*default.privacy_modes, mode))),
            "trust_server_noise": mode == "client-central",
            "strategies": tuple(dict.fromkeys((*default.strategies, study.training.strategy))),
            "require_secure_aggregation": study.secure_aggregation.enabled,
        }
        if study.training.strategy == "exact":
            changes["statistics"] = tuple(dict.fromkeys((*default.statistics, "newton")))
        if study.privacy.noise_multiplier is not None:
            changes["min_noise_multiplier"] = min(
                default.min_noise_multiplier, study.privacy.noise_multiplier
            )
        if study.privacy.target_epsilon is not None:
            changes["max_study_epsilon"] = max(
                default.max_study_epsilon, study.privacy.target_epsilon
            )
        changes.update(overrides)
        return dataclasses.replace(default, **changes)

    @staticmethod
    def sandbox() -> SitePolicy:
        """A policy that admits every study: for virtual sites of method tests only, never a
        hospital's (it allows training without DP and the exact mode in the clear)."""
        return SitePolicy(
            privacy_modes=POLICY_PRIVACY_MODES,
            trust_server_noise=True,
            min_noise_multiplier=0.0,
            max_study_epsilon=1e6,
            epsilon_budget=1e6,
            require_secure_aggregation=False,
            min_secagg_sites=2,
            min_secagg_threshold=2,
            strategies=(
                "fedavg",
                "fedprox",
                "fedadam",
                "fedmedian",
                "fedtrimmedavg",
                "krum",
                "exact",
            ),
            statistics=POLICY_STATISTICS,
            min_cell_count=1,
            max_runs_per_study=1000,
            max_queries={"newton": 200, "calibration": 200},
        )

    # -- judging a study -----------------------------------------------------------------

    def query_limit(self, kind: str, study: StudyConfig) -> int:
        """The most releases of ``kind`` the site makes in one run of ``study``."""
        if kind == "evaluate":
            return self.max_queries.get("evaluate", study.training.rounds + 1)
        if kind in ("check", "moments"):
            return self.max_queries.get(kind, 3)
        return self.max_queries.get(kind, 25)

    def rows(self) -> list[tuple[str, str]]:
        """(clause, value) for display."""
        return [(f.name, _toml_value(getattr(self, f.name))) for f in dataclasses.fields(self)]


def _policy_mode(study: StudyConfig) -> str:
    mode = study.privacy.mode
    if mode == "client" and getattr(study.privacy, "client_noise", "server") == "server":
        return "client-central"  # Flower's central DP wrapper: the server adds the noise
    return mode


def check_study(policy: SitePolicy, study: StudyConfig) -> list[str]:
    """Every clause of ``policy`` that ``study`` breaks, each as ``"clause: why"``."""
    broken: list[str] = []
    mode = _policy_mode(study)
    if mode not in policy.privacy_modes:
        broken.append(
            f"privacy_modes: the study trains with privacy mode {mode!r}, the site allows "
            f"{', '.join(policy.privacy_modes)}"
        )
    if mode == "client-central" and not policy.trust_server_noise:
        broken.append(
            "trust_server_noise: the study's client-level DP noise is added by the server, "
            "which this site does not trust"
        )
    privacy = study.privacy
    if mode == "sample":
        if privacy.target_epsilon is not None and privacy.target_epsilon > policy.max_study_epsilon:
            broken.append(
                f"max_study_epsilon: the study targets epsilon {privacy.target_epsilon:g}, the "
                f"site allows at most {policy.max_study_epsilon:g} per study"
            )
        if privacy.target_epsilon is not None and privacy.target_epsilon > policy.epsilon_budget:
            broken.append(
                f"epsilon_budget: the study targets epsilon {privacy.target_epsilon:g}, more than "
                f"the site's lifetime budget {policy.epsilon_budget:g}"
            )
        if (
            privacy.noise_multiplier is not None
            and privacy.noise_multiplier < policy.min_noise_multiplier
        ):
            broken.append(
                f"min_noise_multiplier: the study's noise multiplier {privacy.noise_multiplier:g} "
                f"is below the site's minimum {policy.min_noise_multiplier:g}"
            )
    if study.training.strategy not in policy.strategies:
        broken.append(
            f"strategies: the study aggregates with {study.training.strategy!r}, the site "
            f"trains for {', '.join(policy.strategies)}"
        )
    if study.training.strategy == "exact":
        if "newton" not in policy.statistics:
            broken.append(
                "statistics: the exact mode releases Newton gradients and Hessians, which the "
                "site does not answer (add 'newton' to [policy] statistics)"
            )
        if mode != "none":
            broken.append(
                f"privacy_modes: the exact (Newton-Raphson) mode releases noise-free aggregate "
                f"statistics, so it cannot honour privacy mode {mode!r}; fedrad refuses it "
                "rather than run it silently without DP"
            )
    if (
        policy.require_secure_aggregation
        and study.training.strategy != "exact"
        and not study.secure_aggregation.enabled
    ):
        broken.append("require_secure_aggregation: the study sends model updates without SecAgg+")
    if study.secure_aggregation.enabled:
        threshold = study.secure_aggregation.reconstruction_threshold
        if threshold > 1 and threshold < policy.min_secagg_threshold:
            broken.append(
                f"min_secagg_threshold: the study's reconstruction threshold {threshold:g} is "
                f"below the site's minimum {policy.min_secagg_threshold}"
            )
    return broken


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in sorted(value.items())) + " }"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
