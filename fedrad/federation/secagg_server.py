"""The server's side of secure aggregation: a study's rounds with Flower's SecAgg+.

:func:`secure_fit` runs the rounds with Flower's ``DefaultWorkflow`` whose fit step is
``SecAggPlusWorkflow`` and whose strategy is Flower's (legacy) example-weighted ``FedAvg``, as in
Flower's example ``fl-dp-sa``. The server only ever sees the sum of the sites' masked, quantised
updates and turns it into their weighted mean. After each round fedrad evaluates the global
model at every site (its usual EVALUATE message), saves a checkpoint and appends a history entry.

Dropouts: a site that fails or does not answer within ``timeout`` at any stage is left out. If
it dropped before sending its masked vector, the others' pairwise masks with it are removed and
the round averages the rest; if it dropped after (while unmasking), its update is still in the
aggregate. If fewer sites than the reconstruction threshold remain, Flower halts the round: no
aggregate is released, the global model stays as it was, and the history entry says
``"aggregated": false``.

Precision (per entry, see :func:`aggregate_error_bound`): with ``c = clipping_range``,
``Q = quantization_range``, ``W = max_weight`` and ``S`` the aggregated sites,
``|aggregate - weighted mean| < 3 c |S| / (Q R)`` where ``R = sum_i round(n_i Q / W) / Q``
(about ``sum_i n_i / W``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common import Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from fedrad.federation.config import ConfigError, SecureAggregationConfig, StudyConfig

log = logging.getLogger("fedrad.secagg")

#: Flower's modulus for masked sums (2**32); the sum of all sites' quantised values must fit.
MODULUS_RANGE = 2**32
#: Strategies whose aggregate is a weighted mean, which is all SecAgg+ can compute.
SECURE_STRATEGIES = ("fedavg", "fedprox")


def _count_or_fraction(value: float, key: str) -> int | float:
    """Study value -> Flower's convention: an int is a count, a float in (0, 1] a fraction."""
    if value <= 1:
        return float(value)
    if value != int(value):
        raise ConfigError(
            f"[secure_aggregation] {key} = {value}: give a count of sites (a whole number "
            "above 1) or a fraction of the sampled sites (at most 1)"
        )
    return int(value)


class TracedSecAggPlusWorkflow(SecAggPlusWorkflow):
    """Flower's ``SecAggPlusWorkflow``, keeping the last round's protocol state.

    ``state`` holds the round's sampled nodes and threshold; ``included`` the nodes whose masked
    vectors entered the sum (set once the masking stage is over).
    """

    state: WorkflowState | None = None
    included: set[int] | None = None

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        self.state, self.included = state, None
        return super().setup_stage(grid, context, state)

    def collect_masked_vectors_stage(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        ok = super().collect_masked_vectors_stage(grid, context, state)
        self.included = set(state.active_node_ids)
        return ok


def build_workflow(
    settings: SecureAggregationConfig, n_sites: int, *, max_weight: float = 1000.0
) -> TracedSecAggPlusWorkflow:
    """Flower's ``SecAggPlusWorkflow`` for ``[secure_aggregation]`` and ``n_sites`` sites.

    Raises :class:`ConfigError` when Flower rejects the shares/threshold combination or when
    the masked sum could overflow: ``n_sites * quantization_range`` must stay below ``2**32``.
    """
    if n_sites < 2:
        raise ConfigError(
            f"secure aggregation needs at least 2 sites, the study has {n_sites}; disable "
            "[secure_aggregation] or add sites"
        )
    if n_sites * settings.quantization_range >= MODULUS_RANGE:
        raise ConfigError(
            f"[secure_aggregation] quantization_range = {settings.quantization_range} is too "
            f"large for {n_sites} sites: their masked sum would overflow 2**32; lower it to at "
            f"most {(MODULUS_RANGE - 1) // n_sites}"
        )
    if not max_weight > 0:
        raise ConfigError(f"secure aggregation max_weight must be positive, got {max_weight}")
    try:
        return TracedSecAggPlusWorkflow(
            num_shares=_count_or_fraction(settings.num_shares, "num_shares"),
            reconstruction_threshold=_count_or_fraction(
                settings.reconstruction_threshold, "reconstruction_threshold"
            ),
            max_weight=float(max_weight),
            clipping_range=float(settings.clipping_range),
            quantization_range=int(settings.quantization_range),
            modulus_range=MODULUS_RANGE,
            timeout=float(settings.timeout),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[secure_aggregation] settings rejected by SecAgg+: {exc}") from None


def aggregate_error_bound(
    clipping_range: float,
    quantization_range: int,
    max_weight: float,
    num_examples: Sequence[int],
) -> float:
    """Largest per-entry difference between SecAgg+'s aggregate and the exact weighted mean.

    Site ``i`` sends ``r_i x_i`` stochastically rounded to the grid of step ``2c/Q`` (error
    below one step) with weight ``r_i = round(n_i Q / W) / Q`` (``|r_i - n_i/W| <= 1/(2Q)``).
    The server divides the summed values by ``R = sum r_i``, so the rounding contributes less
    than ``2c|S|/(QR)`` and the weight rounding at most ``c|S|/(QR)`` (all ``|x_i| <= c``):

        ``|aggregate - sum n_i x_i / sum n_i| < 3 c |S| / (Q R)``.
    """
    q = int(quantization_range)
    r = sum(round(n / max_weight * q) / q for n in num_examples)
    if r <= 0:
        return float("inf")
    return 3.0 * clipping_range * len(num_examples) / (q * r)


def short_reason(reason: str, limit: int = 600) -> str:
    """The site's own error message out of a Flower error reason (which may hold a traceback).

    Flower reports a ClientApp exception as ``"<class ...>:<'...Message: TEXT'>"``; this keeps
    ``TEXT`` (or the whole reason when it has no such part), at most ``limit`` characters.
    """
    marker = "Message: "
    text = reason[reason.rindex(marker) + len(marker) :] if marker in reason else reason
    text = text.strip()
    if text.endswith("'>"):
        text = text[:-2].rstrip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _RecordingGrid:
    """The accepted sites' grid; remembers, per SecAgg+ stage, which sites failed and why."""

    def __init__(self, grid: Any, node_ids: Iterable[int]):
        self._grid = grid
        self._nodes = list(node_ids)
        self.dropped: list[dict[str, Any]] = []

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        messages = list(messages)
        stage = {
            m.metadata.dst_node_id: str(m.content[RECORD_KEY_CONFIGS][Key.STAGE])
            for m in messages
            if m.has_content() and RECORD_KEY_CONFIGS in m.content.config_records
        }
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if stage:
            answered = set()
            for reply in replies:
                node = reply.metadata.src_node_id
                answered.add(node)
                if reply.has_error():
                    self.dropped.append(
                        {
                            "node": node,
                            "stage": stage.get(node),
                            "reason": short_reason(reply.error.reason),
                        }
                    )
            for node in sorted(set(stage) - answered):
                self.dropped.append(
                    {"node": node, "stage": stage[node], "reason": f"no reply within {timeout}s"}
                )
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class _SecureFedAvg(FedAvg):
    """Flower's FedAvg (legacy) that remembers which rounds released an aggregate."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.released: dict[int, dict[str, Any]] = {}

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[override]
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is not None:
            self.released[server_round] = {
                "train_loss": metrics.get("train-loss"),
                "sites": len(results),
            }
        return parameters, metrics


def _weighted_train_loss(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    pairs = [(n, float(m["train-loss"])) for n, m in results if "train-loss" in m]
    total = sum(n for n, _ in pairs)
    if not total:
        return {}
    return {"train-loss": sum(n * loss for n, loss in pairs) / total}


def _logging_aggregator(train_log: Any):
    """The weighted train loss, also handing each site's metrics to ``train_log``."""

    def aggregate(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
        records = []
        for n, metrics in results:
            numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
            record = RecordDict({"metrics": MetricRecord({**numeric, "num-examples": int(n)})})
            if "site-id" in metrics:
                record["site"] = ConfigRecord({"site_id": str(metrics["site-id"])})
            records.append(record)
        if records:
            train_log(records, "num-examples")
        return _weighted_train_loss(results)

    return aggregate


def _global_arrays(context: LegacyContext) -> list[np.ndarray]:
    record = context.state.array_records[MAIN_PARAMS_RECORD]
    return parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True))


def _evaluate(
    grid: Any,
    nodes: list[int],
    arrays: list[np.ndarray],
    config: dict[str, Any],
    server_round: int,
    timeout: float,
) -> tuple[list[Message], dict[int, str]]:
    """fedrad's EVALUATE message to every site; the good replies and node -> site id."""
    messages = [
        Message(
            content=RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(config)}),
            message_type=MessageType.EVALUATE,
            dst_node_id=node,
            group_id=str(server_round),
        )
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    good, sites = [], {}
    for reply in replies:
        if reply.has_error():
            log.warning(
                "round %d: node %d could not evaluate the global model: %s",
                server_round,
                reply.metadata.src_node_id,
                reply.error.reason,
            )
            continue
        good.append(reply)
        if "site" in reply.content.config_records:
            sites[reply.metadata.src_node_id] = str(reply.content["site"]["site_id"])
    return good, sites


def secure_fit(
    grid: Any,
    study: StudyConfig,
    node_ids: list[int],
    config: dict[str, Any],
    evaluation: Any,
    run: Any,
    *,
    max_weight: float = 1000.0,
    train_log: Any = None,
    evaluate_grid: Any = None,
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Run the study's rounds with SecAgg+ over ``node_ids``; return final arrays and history.

    ``config`` is fedrad's message config (study JSON, features, standardisation); every train
    message adds ``server-round`` (and ``proximal-mu`` for FedProx). ``evaluation`` is the
    server's :class:`~fedrad.federation.server_app.EvaluationLog`, ``run`` its
    :class:`~fedrad.federation.run_dir.RunDirectory`. ``max_weight`` must be at least the
    largest site's number of training examples (sites refuse otherwise) and is best close to
    it, since precision scales with ``sum(n_i) / max_weight`` (:func:`aggregate_error_bound`).

    Each history entry: ``round``, ``train_loss`` (example-weighted, ``None`` when nothing was
    released), ``aggregated``, ``secagg`` (``sampled``, ``threshold``, ``included`` and
    ``dropped`` sites with stage and reason), ``fit_seconds``, then the round's evaluation.
    ``train_log`` (the server's :class:`~fedrad.federation.server_app.TrainLog`) receives each
    round's per-site training metrics (privacy spending travels beside the masked update;
    sites send no training loss under SecAgg+). ``evaluate_grid`` (default ``grid``) carries
    the evaluation messages, e.g. a sealing grid: only the SecAgg+ stages use ``grid`` itself.
    """
    from fedrad.federation.server_app import StudyAbortedError
    from fedrad.learn.models import build_model, get_parameters

    training = study.training
    if training.strategy not in SECURE_STRATEGIES:
        raise ConfigError(
            f"secure aggregation computes a weighted mean, which strategy "
            f"{training.strategy!r} does not use; choose one of {', '.join(SECURE_STRATEGIES)} "
            "or disable [secure_aggregation]"
        )
    if study.privacy.mode == "client":
        raise ConfigError(
            "client-level differential privacy is not yet combined with secure aggregation "
            "(its noise would be missing from the securely aggregated model); use [privacy] "
            "mode = 'sample' (DP-SGD at each site) or disable [secure_aggregation]"
        )
    nodes = list(node_ids)
    fit_workflow = build_workflow(study.secure_aggregation, len(nodes), max_weight=max_weight)
    timeout = float(study.secure_aggregation.timeout)
    model = build_model(study.model_settings(), len(config["features"]))

    def train_config(server_round: int) -> dict[str, Scalar]:
        extra: dict[str, Any] = {"server-round": server_round}
        if training.strategy == "fedprox":
            extra["proximal-mu"] = float(training.proximal_mu)
        return {**config, **extra}

    min_sites = max(2, min(training.min_sites, len(nodes)))
    strategy = _SecureFedAvg(
        fraction_fit=training.fraction_train,
        fraction_evaluate=0.0,
        min_fit_clients=min_sites,
        min_available_clients=min_sites,
        min_evaluate_clients=0,
        initial_parameters=ndarrays_to_parameters(get_parameters(model)),
        on_fit_config_fn=train_config,
        fit_metrics_aggregation_fn=_weighted_train_loss
        if train_log is None
        else _logging_aggregator(train_log),
    )
    site_grid = _RecordingGrid(grid, nodes)
    history: list[dict[str, Any]] = []
    node_site: dict[int, str] = {}
    started = [0.0]

    def fit(grid_: Any, context: Context) -> None:
        site_grid.dropped.clear()
        started[0] = time.perf_counter()
        fit_workflow(grid_, context)

    def after_round(grid_: Any, context: Context) -> None:
        fit_seconds = time.perf_counter() - started[0]
        server_round = int(
            context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND]
        )
        dropped = list(site_grid.dropped)
        arrays = _global_arrays(cast(LegacyContext, context))
        replies, sites = _evaluate(
            grid_ if evaluate_grid is None else evaluate_grid,
            nodes,
            arrays,
            config,
            server_round,
            timeout,
        )
        node_site.update(sites)
        evaluation([r.content for r in replies], "num-examples")
        run.save_checkpoint(server_round, arrays)
        released = strategy.released.get(server_round)
        state = fit_workflow.state
        included = sorted(fit_workflow.included or set()) if released else []
        entry = {
            "round": server_round,
            "train_loss": released["train_loss"] if released else None,
            "aggregated": released is not None,
            "secagg": {
                "sampled": len(state.sampled_node_ids) if state else 0,
                "threshold": state.threshold if state else None,
                "included": [node_site.get(n, f"node {n}") for n in included],
                "dropped": [
                    {**d, "site": node_site.get(d["node"], f"node {d['node']}")} for d in dropped
                ],
            },
            "fit_seconds": fit_seconds,
            **evaluation.rounds[-1],
        }
        for d in entry["secagg"]["dropped"]:
            log.warning(
                "round %d: site %s dropped out of secure aggregation at stage %s: %s",
                server_round,
                d["site"],
                d["stage"],
                d["reason"],
            )
        if released is None:
            log.warning(
                "round %d: secure aggregation released no aggregate (too few sites completed "
                "the protocol for threshold %s); the global model is unchanged",
                server_round,
                entry["secagg"]["threshold"],
            )
        history.append(entry)

    context = LegacyContext(
        Context(
            run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
        ),
        config=ServerConfig(num_rounds=training.rounds),
        strategy=strategy,
    )
    DefaultWorkflow(fit_workflow=fit, evaluate_workflow=after_round)(site_grid, context)
    if not strategy.released:
        run.write_json("history.json", history)
        raise StudyAbortedError(
            f"secure aggregation released no aggregate in any of the {training.rounds} round(s): "
            "too few sites completed the protocol each time (see history.json for who dropped "
            "out and why); lower [secure_aggregation] reconstruction_threshold or fix the sites"
        )
    return _global_arrays(context), history
