"""Flower strategies a study can choose (``[training] strategy`` in study.toml).

All come from Flower (``flwr.serverapp.strategy``); fedrad only maps the study's names and
parameters onto them. ``exact`` (federated Newton-Raphson) is not a Flower strategy: see
:mod:`fedrad.federation.exact`.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from fedrad.federation.config import StudyConfig

Aggregator = Callable[[list[RecordDict], str], MetricRecord]


def build_strategy(
    study: StudyConfig,
    n_sites: int,
    evaluate_aggregator: Aggregator,
    train_aggregator: Aggregator | None = None,
    *,
    noise_seed: int | None = None,
) -> Strategy:
    """The Flower strategy of ``study``, sampling every accepted site by default.

    ``train_aggregator`` combines the sites' training metrics (default: the example-weighted
    mean training loss); the ServerApp passes one that also keeps each site's privacy spending.
    With ``[privacy] mode = "client"`` the strategy is wrapped in Flower's client-side
    fixed-clipping DP wrapper (:func:`fedrad.federation.client_dp.wrap_client_dp`); ``noise_seed``
    makes its noise reproducible and is for simulation only (``None`` in deployment).
    """
    t = study.training
    common = dict(
        fraction_train=t.fraction_train,
        fraction_evaluate=1.0,
        min_train_nodes=min(t.min_sites, n_sites),
        min_evaluate_nodes=min(t.min_sites, n_sites),
        min_available_nodes=min(t.min_sites, n_sites),
        evaluate_metrics_aggr_fn=evaluate_aggregator,
        train_metrics_aggr_fn=train_aggregator or _train_loss_aggregator,
    )
    name = t.strategy
    if name == "fedavg":
        strategy: Strategy = FedAvg(**common)
    elif name == "fedprox":
        strategy = FedProx(**common, proximal_mu=t.proximal_mu)
    elif name == "fedadam":
        strategy = FedAdam(**common, eta=t.server_learning_rate, eta_l=t.learning_rate)
    elif name == "fedmedian":
        strategy = FedMedian(**common)
    elif name == "fedtrimmedavg":
        strategy = FedTrimmedAvg(**common, beta=t.trim_fraction)
    elif name == "krum":
        strategy = Krum(**common, num_malicious_nodes=t.krum_byzantine)
    else:
        raise ValueError(f"strategy {name!r} is not a Flower strategy")
    if study.privacy.mode == "client":
        from fedrad.federation.client_dp import wrap_client_dp

        strategy = wrap_client_dp(strategy, study, n_sites, noise_seed=noise_seed)
    return strategy


def _train_loss_aggregator(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean training loss over the sites of a round."""
    total, weight = 0.0, 0.0
    for record in records:
        metrics = record["metrics"]
        n = float(metrics[weight_key])
        total += n * float(metrics["train-loss"])
        weight += n
    return MetricRecord(
        {"train-loss": total / weight if weight else float("nan"), weight_key: weight}
    )
