"""Client-level differential privacy (``[privacy] mode = "client"``) on Flower's DP wrappers.

The mechanism is DP-FedAvg (McMahan et al. 2018) as Flower's fixed-clipping wrappers implement it,
with two changes a hospital study needs:

* **Clipping at the site** (default, :class:`SiteClippedDP`): each site clips its model update
  ``Δ_i = x_i - x`` (new minus received parameters) to L2 norm ``C`` before it leaves the
  hospital (:func:`site_dp_mod`), so the bound holds whatever the server does and also under
  secure aggregation, where the server never sees a single update. The server re-checks the norm
  of every update it can see and clips (with a warning naming the node) one a misconfigured site
  sent unclipped. :class:`ServerClippedDP` clips at the server instead (Flower's server-side
  wrapper): it needs the server to see raw updates and is refused with secure aggregation.
* **Noise recalibrated to the updates actually aggregated**: Flower calibrates the noise to the
  configured ``num_sampled_clients``; when sites drop out, fewer updates are averaged, the
  sensitivity of the mean grows, and that noise would be too small. Here the standard deviation is
  computed each round from the replies received.

Sensitivity. With capped example counts ``w_i = min(n_i, M)`` (``M = max_examples``; every site's
reported count is capped at the site and again at the server) over the ``k`` updates aggregated,
the released update is the weighted mean ``Δ̄ = Σ_i w_i Δ_i / W`` with ``W = Σ_i w_i``. The set
of sites taking part in a round and their capped counts are public (a hospital consortium names
its members; the coordinator sees who answered); what is protected is the content of any one
site's update ("zero-out" neighbours: site j's update replaced by zero). Replacing ``Δ_j`` by zero
moves ``Δ̄`` by ``w_j Δ_j / W``, of norm at most ``w_j C / W``, so::

    sensitivity = C · max_i w_i / W          noise stdev σ = z · C · max_i w_i / W

with ``z`` the noise multiplier. For equal weights this is Flower's ``z C / k`` with ``k`` the
number of updates aggregated (not the number sampled). Every release is therefore a Gaussian
mechanism with noise multiplier ``z`` whatever the weights, which is why the uniform-weight
restriction of Flower's accounted mode is replaced by this calibration. The cap bounds how much
one large hospital dominates ``max_i w_i / W`` (and so the noise). Outside the guarantee, as in
Flower: the per-site training metrics and counts, and evaluation metrics.

Accounting. No sampling amplification is claimed (every accepted site is asked each round;
dropouts are not random sampling). Flower's accountant configuration names the relation
``ADD_OR_REMOVE_ONE``; for an un-amplified Gaussian release of sensitivity ``C·max w/W`` and
noise ``z`` times it, zero-out and add/remove give the same privacy curve. ``R`` releases of a Gaussian mechanism with multipliers
``z_r`` compose to a Gaussian mechanism with ``μ = sqrt(Σ_r 1 / z_r²)``.
:class:`GaussianAccountant` implements Flower's ``PrivacyAccountant`` protocol for that case
(Flower's own ``RdpAccountant`` needs the optional ``dp-accounting`` package):

* ``"rdp"``: Rényi DP, ``ρ(α) = α μ² / 2``, converted with Balle et al. 2020 (Thm 21),
  ``ε = min_α ρ(α) + log((α-1)/α) - (log δ + log α) / (α - 1)`` (what Opacus' RDP accountant
  computes for sample rate 1);
* ``"gaussian"``: the exact curve of the composed Gaussian (Balle & Wang 2018; Dong et al.
  2019), ``δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2)``, the tight value a PRV accountant
  converges to; a study with ``accountant = "prv"`` gets this one.

The flag a site sees. The server's wrapper writes Flower's ``clipping_norm`` key, the count cap
``dp-max-examples`` and ``dp-clipping`` (``"site"`` or ``"server"``) into the train config. The
same ClientApp serves studies with and without client-level DP: without those keys the site mod
passes messages through, unless the study carried in the config asks for client-level DP, in
which case the site refuses to train (its update would leave unclipped).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
)
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode
from flwr.serverapp import (
    GaussianPrivacyEvent,
    Grid,
    NeighboringRelation,
    PrivacySpent,
    SamplingMethod,
)
from flwr.serverapp import PrivacyConfig as FlowerPrivacyConfig
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr

from fedrad.federation.config import ConfigError, StudyConfig

log = logging.getLogger("fedrad.privacy")

#: Train-config key of the per-site cap on the reported example count (set by the wrapper).
KEY_MAX_EXAMPLES = "dp-max-examples"
#: Train-config key saying where updates are clipped: ``"site"`` or ``"server"``.
KEY_DP_CLIPPING = "dp-clipping"
#: Metric key of a site's example count (Flower's FedAvg ``weighted_by_key``).
WEIGHT_KEY = "num-examples"
#: Study strategies whose aggregation is the (weighted) mean the sensitivity analysis covers.
DP_STRATEGIES = ("fedavg", "fedprox")

AccountingMethod = Literal["rdp", "gaussian"]

#: Rényi orders: Opacus' defaults, extended upwards for large noise multipliers.
RDP_ORDERS = np.array(
    [1 + x / 10.0 for x in range(1, 100)]
    + list(range(12, 64))
    + [64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024]
)


# --------------------------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------------------------


def _rdp_epsilon(mu: float, delta: float) -> tuple[float, float]:
    """ε and the optimal order of a ``μ``-Gaussian mechanism from its RDP curve ``α μ² / 2``."""
    a = RDP_ORDERS
    eps = 0.5 * a * mu * mu + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1)
    i = int(np.argmin(eps))
    return max(float(eps[i]), 0.0), float(a[i])


def _rdp_delta(mu: float, epsilon: float) -> float:
    """δ at ``epsilon`` from the RDP curve (the same conversion, solved for δ)."""
    a = RDP_ORDERS
    log_delta = (a - 1) * (0.5 * a * mu * mu - epsilon + np.log((a - 1) / a)) - np.log(a)
    return float(min(1.0, math.exp(float(np.min(log_delta)))))


def _gaussian_delta(mu: float, epsilon: float) -> float:
    """Exact δ(ε) of a ``μ``-Gaussian mechanism: ``Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2)``."""
    if mu == 0.0:
        return 0.0
    first = float(ndtr(-epsilon / mu + mu / 2))
    second = math.exp(epsilon + float(log_ndtr(-epsilon / mu - mu / 2)))
    return max(first - second, 0.0)


def _gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact ε at ``delta`` of a ``μ``-Gaussian mechanism (root of :func:`_gaussian_delta`)."""
    if mu == 0.0 or _gaussian_delta(mu, 0.0) <= delta:
        return 0.0
    upper = _rdp_epsilon(mu, delta)[0] + 1.0  # RDP bounds the exact value from above
    return float(brentq(lambda e: _gaussian_delta(mu, e) - delta, 0.0, upper, xtol=1e-12))


def epsilon_after(
    noise_multiplier: float, releases: int, delta: float, method: AccountingMethod = "rdp"
) -> float:
    """ε after ``releases`` Gaussian releases of multiplier ``z``: ``μ = sqrt(releases) / z``."""
    mu = math.sqrt(releases) / noise_multiplier
    return _rdp_epsilon(mu, delta)[0] if method == "rdp" else _gaussian_epsilon(mu, delta)


def noise_multiplier_for(
    epsilon: float, releases: int, delta: float, method: AccountingMethod = "rdp"
) -> float:
    """The smallest noise multiplier whose ``releases`` rounds spend at most ``epsilon``."""
    if not epsilon > 0 or releases < 1:
        raise ConfigError("a noise multiplier needs a positive epsilon and at least one round")

    def excess(mu: float) -> float:
        eps = _rdp_epsilon(mu, delta)[0] if method == "rdp" else _gaussian_epsilon(mu, delta)
        return eps - epsilon

    hi = 1.0
    while excess(hi) < 0:
        hi *= 2.0
    mu = brentq(excess, 1e-9, hi, xtol=1e-12)
    z = math.sqrt(releases) / mu
    return z * (1 + 1e-9)  # never below the target by round-off


class GaussianAccountant:
    """Flower ``PrivacyAccountant`` for un-amplified Gaussian releases (client-level DP).

    ``method="rdp"`` converts the Rényi curve ``ρ(α) = α μ² / 2`` (orders :data:`RDP_ORDERS`);
    ``method="gaussian"`` uses the exact privacy curve of the composed Gaussian mechanism,
    ``μ = sqrt(Σ count / z²)`` over the composed events. Only
    ``sampling_method = NO_AMPLIFICATION`` is supported (no sampling amplification is claimed).
    """

    def __init__(self, config: FlowerPrivacyConfig, method: AccountingMethod = "rdp") -> None:
        if config.sampling_method is not SamplingMethod.NO_AMPLIFICATION:
            raise ValueError("GaussianAccountant supports sampling_method='no-amplification' only")
        if method not in ("rdp", "gaussian"):
            raise ValueError(f"accounting method {method!r}: use 'rdp' or 'gaussian'")
        self._config = config
        self.method: AccountingMethod = method
        self._compositions: list[tuple[GaussianPrivacyEvent, int]] = []

    @property
    def config(self) -> FlowerPrivacyConfig:
        """The privacy configuration (Flower's type)."""
        return self._config

    @property
    def num_releases(self) -> int:
        """Number of composed releases."""
        return sum(count for _, count in self._compositions)

    def _mu(self, extra: Iterable[tuple[GaussianPrivacyEvent, int]] = ()) -> float:
        pairs = [*self._compositions, *extra]
        return math.sqrt(sum(count / e.noise_multiplier**2 for e, count in pairs))

    def _check(self, event: GaussianPrivacyEvent, count: int) -> None:
        if event.population_size != self._config.population_size:
            raise ValueError(
                f"event population {event.population_size} differs from the accountant's "
                f"{self._config.population_size}"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive integer")

    def compose(self, event: GaussianPrivacyEvent, count: int = 1) -> None:
        """Compose ``count`` identical Gaussian releases."""
        self._check(event, count)
        self._compositions.append((event, count))

    def _epsilon(self, mu: float, delta: float) -> tuple[float, float | None]:
        if self.method == "rdp":
            return _rdp_epsilon(mu, delta)
        return _gaussian_epsilon(mu, delta), None

    def get_epsilon(self, delta: float) -> float:
        """Cumulative ε at ``delta``."""
        _check_delta(delta)
        return self._epsilon(self._mu(), delta)[0]

    def get_delta(self, epsilon: float) -> float:
        """Cumulative δ at ``epsilon``."""
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ValueError("epsilon must be non-negative and finite")
        mu = self._mu()
        return _rdp_delta(mu, epsilon) if self.method == "rdp" else _gaussian_delta(mu, epsilon)

    def get_privacy_spent(self, delta: float | None = None) -> PrivacySpent:
        """Cumulative (ε, δ) at ``delta`` (default: the configured target δ)."""
        delta = self._config.target_delta if delta is None else delta
        _check_delta(delta)
        epsilon, order = self._epsilon(self._mu(), delta)
        return PrivacySpent(
            epsilon=epsilon,
            delta=delta,
            num_releases=self.num_releases,
            accounting_method=self.method,
            optimal_order=order,
        )

    def would_exceed(
        self, event: GaussianPrivacyEvent, max_epsilon: float | None = None, count: int = 1
    ) -> bool:
        """Whether composing ``event`` would take ε (at the target δ) above the limit."""
        self._check(event, count)
        limit = self._config.max_epsilon if max_epsilon is None else max_epsilon
        if limit is None:
            raise ValueError("max_epsilon must be given here or in the PrivacyConfig")
        mu = self._mu([(event, count)])
        return self._epsilon(mu, self._config.target_delta)[0] > limit

    def state_dict(self) -> dict[str, object]:
        """JSON-serialisable state (configuration, method and composed events)."""
        c = self._config
        return {
            "method": self.method,
            "config": {
                "target_delta": c.target_delta,
                "population_size": c.population_size,
                "neighboring_relation": c.neighboring_relation.value,
                "sampling_method": c.sampling_method.value,
                "max_epsilon": c.max_epsilon,
            },
            "compositions": [
                {
                    "noise_multiplier": e.noise_multiplier,
                    "sample_size": e.sample_size,
                    "population_size": e.population_size,
                    "count": n,
                }
                for e, n in self._compositions
            ],
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` output (same configuration and method only)."""
        if state.get("method") != self.method or state.get("config") != self.state_dict()["config"]:
            raise ValueError("accountant state was saved with another configuration or method")
        entries = state.get("compositions")
        if not isinstance(entries, list):
            raise ValueError("accountant state has no list of compositions")
        restored = []
        for entry in entries:
            event = GaussianPrivacyEvent(
                noise_multiplier=float(entry["noise_multiplier"]),
                sample_size=int(entry["sample_size"]),
                population_size=int(entry["population_size"]),
            )
            self._check(event, int(entry["count"]))
            restored.append((event, int(entry["count"])))
        self._compositions = restored


def _check_delta(delta: float) -> None:
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise ValueError("delta must lie in (0, 1)")


def make_accountant(study: StudyConfig, n_sites: int) -> GaussianAccountant:
    """The study's accountant: δ of ``[privacy]``, population ``n_sites``, no amplification.

    ``accountant = "rdp"`` gives the RDP bound; ``"prv"`` (the default) the exact Gaussian curve.
    """
    p = study.privacy
    config = FlowerPrivacyConfig(
        target_delta=p.delta,
        population_size=n_sites,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
        max_epsilon=p.target_epsilon,
    )
    return GaussianAccountant(config, "rdp" if p.accountant == "rdp" else "gaussian")


# --------------------------------------------------------------------------------------------
# Clipping and noise
# --------------------------------------------------------------------------------------------


def update_norm(new: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """L2 norm of the flattened update ``new - reference``: ``sqrt(Σ_l ||new_l - ref_l||²)``."""
    return math.sqrt(
        sum(
            float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
            for a, b in zip(new, reference, strict=True)
        )
    )


def clip_update(
    new: Sequence[np.ndarray], reference: Sequence[np.ndarray], clipping_norm: float
) -> tuple[list[np.ndarray], float]:
    """``reference + Δ · min(1, C / ||Δ||)`` with ``Δ = new - reference``, and ``||Δ||``.

    Arrays within the norm come back unchanged (bit for bit); a zero update is left as it is
    (Flower's own clipping divides by the norm and fails on it).
    """
    norm = update_norm(new, reference)
    if norm <= clipping_norm:
        return [np.asarray(a) for a in new], norm
    scale = clipping_norm / norm
    clipped = [
        (
            np.asarray(b, np.float64)
            + scale * (np.asarray(a, np.float64) - np.asarray(b, np.float64))
        ).astype(np.asarray(a).dtype)
        for a, b in zip(new, reference, strict=True)
    ]
    return clipped, norm


def noise_stdev(noise_multiplier: float, clipping_norm: float, weights: Sequence[float]) -> float:
    """Noise standard deviation for the weighted mean of clipped updates actually aggregated.

    ``σ = z · C · max_i w_i / Σ_i w_i`` (``z C / k`` for ``k`` equal weights).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0 or not np.all(w > 0):
        raise ValueError("noise calibration needs at least one positive weight")
    return float(noise_multiplier * clipping_norm * w.max() / w.sum())


def _roundoff(arrays: Sequence[np.ndarray], clipping_norm: float) -> float:
    """Slack for re-measuring a site-clipped update: ``1e-6 C + 4 eps(dtype) ||x||``."""
    size = math.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in arrays))
    eps = max((np.finfo(a.dtype).eps for a in arrays if a.dtype.kind == "f"), default=0.0)
    return 1e-6 * clipping_norm + 4 * float(eps) * size


def _record(arrays: Sequence[np.ndarray], like: ArrayRecord) -> ArrayRecord:
    return ArrayRecord(
        {k: Array(np.ascontiguousarray(v)) for k, v in zip(like.keys(), arrays, strict=True)}
    )


# --------------------------------------------------------------------------------------------
# Server: Flower's wrappers with per-round recalibration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundRelease:
    """What one round released: counts, the noise actually added and the privacy spent so far."""

    server_round: int
    sampled: int
    aggregated: int
    dropped: int
    clipped_at_server: int
    noise_stdev: float
    epsilon: float | None
    delta: float


class _RecalibratedFixedClipping:
    """Per-round noise recalibration, count cap and checks shared by the two wrappers.

    Mixed in before one of Flower's fixed-clipping wrappers; replaces their ``configure_train``
    and ``aggregate_train`` (the rest, including ``privacy_spent`` and evaluation, is Flower's).
    """

    clip_at_site: bool = True
    strategy: FedAvg
    noise_multiplier: float
    clipping_norm: float
    accountant: GaussianAccountant | None

    def __init__(
        self,
        strategy: FedAvg,
        noise_multiplier: float,
        clipping_norm: float,
        num_sampled_clients: int,
        *,
        max_examples: int,
        accountant: GaussianAccountant | None = None,
        noise_seed: int | None = None,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            strategy, noise_multiplier, clipping_norm, num_sampled_clients, accountant=accountant
        )
        if noise_multiplier <= 0:
            raise ValueError("client-level DP needs a positive noise multiplier")
        if max_examples < 1:
            raise ValueError("max_examples must be at least 1")
        self.max_examples = int(max_examples)
        self.noise_seed = noise_seed
        self._entropy_rng = np.random.default_rng() if noise_seed is None else None
        self._current: list[np.ndarray] = []
        self._sampled: dict[int, int] = {}
        #: One entry per round that released an aggregate (or aggregated nothing).
        self.releases: list[RoundRelease] = []

    def _rng(self, server_round: int) -> np.random.Generator:
        """Seeded per round (simulation: reproducible and resume-safe) or fresh OS entropy."""
        if self._entropy_rng is not None:
            return self._entropy_rng
        return np.random.default_rng([int(self.noise_seed), int(server_round)])

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the inner strategy for the round's messages; flag DP in the train config."""
        self._current = arrays.to_numpy_ndarrays()
        self.current_arrays = arrays
        config[KEY_DP_CLIPPING] = "site" if self.clip_at_site else "server"
        if self.clip_at_site:
            config[KEY_CLIPPING_NORM] = float(self.clipping_norm)
            config[KEY_MAX_EXAMPLES] = self.max_examples
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._sampled[server_round] = len(messages)
        acc = self.accountant
        if acc is not None and messages and acc.config.max_epsilon is not None:
            event = self._event(len(messages))
            if acc.would_exceed(event):
                spent = acc.get_privacy_spent()
                raise PrivacyBudgetExhausted(
                    f"round {server_round} would take client-level epsilon above "
                    f"{acc.config.max_epsilon} (spent {spent.epsilon:.4g} at delta "
                    f"{spent.delta:g} after {spent.num_releases} rounds)"
                )
        return messages

    def _event(self, sample_size: int) -> GaussianPrivacyEvent:
        assert self.accountant is not None
        population = self.accountant.config.population_size
        return GaussianPrivacyEvent(
            noise_multiplier=self.noise_multiplier,
            sample_size=min(max(sample_size, 1), population),
            population_size=population,
        )

    def _accept(self, reply: Message) -> tuple[Message, bool] | None:
        """The reply with its update clipped and its count capped, or None if it is unusable."""
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("node %s dropped out of the round: %s", node, reply.error.reason)
            return None
        arrays = list(reply.content.array_records.items())
        metrics = list(reply.content.metric_records.values())
        if len(arrays) != 1 or len(metrics) != 1 or WEIGHT_KEY not in metrics[0]:
            log.warning(
                "node %s: reply lacks one ArrayRecord and its %s; left out", node, WEIGHT_KEY
            )
            return None
        key, record = arrays[0]
        new = record.to_numpy_ndarrays()
        shapes_ok = len(new) == len(self._current) and all(
            a.shape == b.shape for a, b in zip(new, self._current, strict=False)
        )
        if not shapes_ok or not all(np.all(np.isfinite(a)) for a in new):
            log.warning("node %s: update has the wrong shapes or non-finite values; left out", node)
            return None
        weight = metrics[0][WEIGHT_KEY]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            log.warning(
                "node %s: %s=%r is not a positive count; left out", node, WEIGHT_KEY, weight
            )
            return None
        clipped, norm = clip_update(new, self._current, self.clipping_norm)
        over = norm > self.clipping_norm + _roundoff(new, self.clipping_norm)
        if over and self.clip_at_site:
            site = reply.content["site"].get("site_id", "?") if "site" in reply.content else "?"
            log.warning(
                "node %s (site %s) sent an update of norm %.4g > clipping norm %.4g: its DP "
                "mod is not active; clipped at the server",
                node,
                site,
                norm,
                self.clipping_norm,
            )
        reply.content[key] = _record(clipped, record)
        metrics[0][WEIGHT_KEY] = min(weight, self.max_examples)
        return reply, over and self.clip_at_site

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Clip, cap, average the updates received and add noise calibrated to them."""
        replies = list(replies)
        sampled = self._sampled.pop(server_round, len(replies))
        accepted = [a for a in (self._accept(r) for r in replies) if a is not None]
        valid = [r for r, _ in accepted]
        clipped_here = sum(flag for _, flag in accepted)
        delta = self.accountant.config.target_delta if self.accountant else float("nan")
        if not valid:
            log.warning("round %d: no usable update; nothing released", server_round)
            self.releases.append(
                RoundRelease(server_round, sampled, 0, sampled, clipped_here, 0.0, None, delta)
            )
            return None, None
        weights = [float(next(iter(r.content.metric_records.values()))[WEIGHT_KEY]) for r in valid]
        stdev = noise_stdev(self.noise_multiplier, self.clipping_norm, weights)
        arrays, metrics = self.strategy.aggregate_train(server_round, valid)
        if arrays is None:
            return None, metrics
        rng = self._rng(server_round)
        noisy = [
            (np.asarray(a, np.float64) + rng.normal(0.0, stdev, np.shape(a))).astype(
                np.asarray(a).dtype
            )
            for a in arrays.to_numpy_ndarrays()
        ]
        epsilon = None
        if self.accountant is not None:
            self.accountant.compose(self._event(len(valid)))
            epsilon = self.accountant.get_privacy_spent().epsilon
        release = RoundRelease(
            server_round=server_round,
            sampled=sampled,
            aggregated=len(valid),
            dropped=max(sampled - len(valid), 0),
            clipped_at_server=clipped_here,
            noise_stdev=stdev,
            epsilon=epsilon,
            delta=delta,
        )
        self.releases.append(release)
        log.info(
            "round %d: %d of %d updates aggregated, noise stdev %.4g, epsilon %s",
            server_round,
            release.aggregated,
            sampled,
            stdev,
            "n/a" if epsilon is None else f"{epsilon:.4g}",
        )
        metrics = MetricRecord() if metrics is None else metrics
        metrics["dp-noise-stdev"] = stdev
        metrics["dp-aggregated"] = len(valid)
        if epsilon is not None:
            metrics["dp-epsilon"] = epsilon
        return _record(noisy, arrays), metrics

    def privacy_report(self) -> dict[str, Any]:
        """Mechanism, per-round releases and accountant state, for the run directory."""
        return {
            "mechanism": "client-level DP-FedAvg (Gaussian, fixed clipping)",
            "clipping": "site" if self.clip_at_site else "server",
            "noise_multiplier": self.noise_multiplier,
            "clipping_norm": self.clipping_norm,
            "max_examples": self.max_examples,
            "sensitivity": "C * max_i w_i / sum_i w_i, w_i = min(n_i, max_examples)",
            "releases": [asdict(r) for r in self.releases],
            "accountant": None if self.accountant is None else self.accountant.state_dict(),
        }


class SiteClippedDP(_RecalibratedFixedClipping, DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed-clipping wrapper, recalibrated per round (sites clip)."""

    clip_at_site = True


class ServerClippedDP(_RecalibratedFixedClipping, DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed-clipping wrapper, recalibrated per round (the server clips)."""

    clip_at_site = False


def expected_sample_size(study: StudyConfig, n_sites: int) -> int:
    """Sites FedAvg asks per round: ``max(int(n_sites · fraction_train), min(min_sites, n))``."""
    t = study.training
    return max(int(n_sites * t.fraction_train), min(t.min_sites, n_sites))


def wrap_client_dp(
    strategy: Strategy,
    study: StudyConfig,
    n_sites: int,
    *,
    clipping: Literal["site", "server"] = "site",
    noise_seed: int | None = None,
) -> SiteClippedDP | ServerClippedDP:
    """``strategy`` wrapped for client-level DP with the study's ``[privacy]`` settings.

    ``clipping="site"`` (default) clips at each hospital (:func:`client_dp_mods` on the
    ClientApp); ``"server"`` clips at the server. ``noise_seed`` makes the noise reproducible
    for simulations only: anyone who knows the seed can subtract the noise, so a real study
    leaves it ``None`` (fresh OS entropy). With ``[privacy] target_epsilon`` set, a study whose
    rounds would spend more is refused here, with the noise multiplier that fits.
    """
    p, t = study.privacy, study.training
    if p.mode != "client":
        raise ConfigError(f"[privacy] mode is {p.mode!r}; client-level DP needs mode = 'client'")
    if (
        t.strategy not in DP_STRATEGIES
        or not isinstance(strategy, FedAvg)
        or type(strategy).aggregate_train is not FedAvg.aggregate_train
    ):
        raise ConfigError(
            f"client-level DP needs an averaging strategy ({', '.join(DP_STRATEGIES)}), not "
            f"{t.strategy!r}: its noise is calibrated to a mean of clipped updates; set "
            "[training] strategy = 'fedavg'"
        )
    if strategy.weighted_by_key != WEIGHT_KEY:
        raise ConfigError(
            f"client-level DP caps the {WEIGHT_KEY!r} weight; the strategy weights by "
            f"{strategy.weighted_by_key!r}"
        )
    if clipping not in ("site", "server"):
        raise ConfigError(f"clipping {clipping!r}: use 'site' or 'server'")
    if clipping == "server" and study.secure_aggregation.enabled:
        raise ConfigError(
            "server-side clipping needs each site's update in the clear; with secure "
            "aggregation clip at the sites (clipping = 'site')"
        )
    for name, value in (
        ("client_noise_multiplier", p.client_noise_multiplier),
        ("client_clipping_norm", p.client_clipping_norm),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"[privacy] {name} must be a positive number, not {value!r}")
    if p.max_examples < 1:
        raise ConfigError(f"[privacy] max_examples must be at least 1, not {p.max_examples!r}")
    if n_sites < 1:
        raise ConfigError("client-level DP needs at least one site")
    accountant = make_accountant(study, n_sites)
    if p.target_epsilon is not None:
        spent = epsilon_after(p.client_noise_multiplier, t.rounds, p.delta, accountant.method)
        if spent > p.target_epsilon:
            z = noise_multiplier_for(p.target_epsilon, t.rounds, p.delta, accountant.method)
            raise ConfigError(
                f"[privacy] client_noise_multiplier = {p.client_noise_multiplier:g} spends "
                f"epsilon {spent:.3g} over {t.rounds} rounds (delta {p.delta:g}), above "
                f"target_epsilon = {p.target_epsilon:g}; use client_noise_multiplier >= "
                f"{z:.4g} or fewer rounds"
            )
    cls = SiteClippedDP if clipping == "site" else ServerClippedDP
    return cls(
        strategy,
        p.client_noise_multiplier,
        p.client_clipping_norm,
        expected_sample_size(study, n_sites),
        max_examples=p.max_examples,
        accountant=accountant,
        noise_seed=noise_seed,
    )


# --------------------------------------------------------------------------------------------
# Site: clipping and the count cap
# --------------------------------------------------------------------------------------------


def _refuse(msg: Message, reason: str) -> Message:
    log.error("site_dp_mod: %s", reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)


def _study_wants_client_dp(config: ConfigRecord) -> bool:
    try:
        return json.loads(str(config["study"]))["privacy"]["mode"] == "client"
    except (KeyError, TypeError, ValueError):
        return False


def site_dp_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Clip the site's update to the study's norm and cap its reported example count.

    Active on train messages whose config carries ``dp-clipping = "site"`` with Flower's
    ``clipping_norm`` and ``dp-max-examples``: the reply's update ``Δ`` becomes
    ``Δ · min(1, C / ||Δ||)`` and its ``num-examples`` ``min(n, M)``. Other messages pass
    through, except a train message of a client-level-DP study without those keys, which the
    site refuses (an error reply) rather than send its update unclipped.
    """
    if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN or msg.has_error():
        return call_next(msg, context)
    configs = list(msg.content.config_records.values())
    config = configs[0] if len(configs) == 1 else None
    mode = None if config is None else config.get(KEY_DP_CLIPPING)
    if mode is None:
        if config is not None and _study_wants_client_dp(config):
            return _refuse(
                msg,
                "the study asks for client-level DP but the server did not send a clipping "
                "norm: its strategy is not wrapped for client-level DP; refusing to train",
            )
        return call_next(msg, context)
    if mode == "server":
        return call_next(msg, context)
    norm = config.get(KEY_CLIPPING_NORM)
    cap = config.get(KEY_MAX_EXAMPLES)
    if (
        mode != "site"
        or isinstance(norm, bool)
        or not isinstance(norm, int | float)
        or not (math.isfinite(norm) and norm > 0)
        or isinstance(cap, bool)
        or not isinstance(cap, int)
        or cap < 1
    ):
        return _refuse(
            msg,
            f"client-level DP config is invalid ({KEY_DP_CLIPPING}={mode!r}, "
            f"{KEY_CLIPPING_NORM}={norm!r}, {KEY_MAX_EXAMPLES}={cap!r})",
        )
    sent = list(msg.content.array_records.values())
    if len(sent) != 1:
        return _refuse(msg, f"expected one ArrayRecord in the train message, found {len(sent)}")
    reference = sent[0].to_numpy_ndarrays()
    out = call_next(msg, context)
    if out.has_error():
        return out
    replies = list(out.content.array_records.items())
    if len(replies) != 1 or list(replies[0][1].keys()) != list(sent[0].keys()):
        return _refuse(out, "the reply must hold one ArrayRecord with the received arrays' keys")
    key, record = replies[0]
    clipped, _ = clip_update(record.to_numpy_ndarrays(), reference, float(norm))
    out.content[key] = _record(clipped, record)
    for metrics in out.content.metric_records.values():
        if WEIGHT_KEY in metrics:
            metrics[WEIGHT_KEY] = min(metrics[WEIGHT_KEY], cap)
    return out


def client_dp_mods() -> list[Mod]:
    """The mods a site's ClientApp needs for client-level DP (inactive for other studies).

    Put them after ``secaggplus_mod`` (closer to the app, so the update is clipped before it is
    masked) and after an egress-audit mod (so the log records what actually leaves).
    """
    return [site_dp_mod]
