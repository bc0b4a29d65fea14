"""The study's Flower ServerApp: site checks, federated standardisation, rounds, evaluation,
checkpoints and the run directory.

``run_study`` holds the logic; ``build_server_app`` wraps it for the simulation harness and
``app`` is the ServerApp a deployed SuperLink runs (``fedrad server start``), reading the study
from the run config key ``study`` (a path) and the run directory from ``run-dir``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from flwr.serverapp import Grid, ServerApp

from fedrad.errors import FedradError
from fedrad.federation import protocol
from fedrad.federation.config import StudyConfig
from fedrad.federation.run_dir import RunDirectory
from fedrad.federation.strategies import build_strategy
from fedrad.learn.models import build_model, get_parameters
from fedrad.site.refusal import REFUSAL_PREFIX, refusal_code

log = logging.getLogger("fedrad.server")


class StudyAbortedError(FedradError):
    """The study cannot run (too few sites can serve it)."""


class SiteGrid:
    """A view of a Flower Grid restricted to the accepted sites' nodes.

    A site that refuses a round because its privacy budget is spent (its reply is a refusal
    with code ``budget``) is dropped from the view: the study carries on
    without it, and stops only when fewer than ``min_sites`` sites remain.
    """

    def __init__(
        self,
        grid: Grid,
        node_ids: Iterable[int],
        *,
        site_names: dict[int, str] | None = None,
        min_sites: int = 1,
    ):
        self._grid = grid
        self._nodes = list(node_ids)
        self.site_names = dict(site_names or {})
        self.min_sites = min_sites
        self.out_of_budget: dict[str, str] = {}

    def get_node_ids(self) -> list[int]:
        if len(self._nodes) < self.min_sites:
            raise StudyAbortedError(
                f"only {len(self._nodes)} site(s) can still train, the study needs "
                f"{self.min_sites}; out of privacy budget: "
                + "; ".join(f"{k}: {v}" for k, v in self.out_of_budget.items())
            )
        return list(self._nodes)

    def send_and_receive(self, messages: Iterable[Message], *args: Any, **kwargs: Any):
        replies = replies_in_site_order(
            self._grid.send_and_receive(messages, *args, **kwargs), self.site_names
        )
        for reply in replies:
            if reply.has_error() and refusal_code(str(reply.error.reason)) == "budget":
                node = reply.metadata.src_node_id
                site = self.site_names.get(node, f"node {node}")
                if node in self._nodes:
                    self._nodes.remove(node)
                    self.out_of_budget[site] = _refusal_text(str(reply.error.reason))
                    log.warning(
                        "site %s is out of privacy budget and leaves the study: %s",
                        site,
                        self.out_of_budget[site],
                    )
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def _refusal_text(reason: str) -> str:
    """The site's coded refusal out of Flower's error reason."""
    start = reason.find(REFUSAL_PREFIX)
    return reason[start:].strip(" <>'\"") if start >= 0 else reason


def _in_site_order(records: list[RecordDict]) -> list[RecordDict]:
    """Records sorted by site id (replies arrive in any order; float sums depend on it)."""
    return sorted(records, key=lambda r: str(r["site"]["site_id"]) if "site" in r else "")


def replies_in_site_order(
    replies: Iterable[Message], site_names: dict[int, str] | None = None
) -> list[Message]:
    """Replies sorted by site id, then sending node: the same inputs give the same float sums.

    Flower returns replies in arrival order, which varies from run to run; every sum the
    server forms over them (moments, Newton statistics, FedAvg) is made in this order instead.
    The site id comes from ``site_names`` (node id -> site) or the reply's own ``site`` record.
    """
    names = site_names or {}

    def key(reply: Message) -> tuple[str, int]:
        node = int(reply.metadata.src_node_id)
        site = names.get(node)
        if site is None and not reply.has_error() and "site" in reply.content:
            site = str(reply.content["site"].get("site_id", ""))
        return (site or "", node)

    return sorted(replies, key=key)


def _both_classes(pooled: dict[str, Any]) -> bool:
    """Whether the pooled held-out cases hold both classes (else calibration is undefined)."""
    positives = pooled.get("tp", 0.0) + pooled.get("fn", 0.0)
    negatives = pooled.get("tn", 0.0) + pooled.get("fp", 0.0)
    return positives > 0 and negatives > 0


class TrainLog:
    """Aggregates the sites' training metrics each round: mean loss, and epsilon per site.

    Flower calls it with the round's training replies; ``rounds[i]`` keeps per-site loss and
    privacy figures (``epsilon`` spent at the site so far, ``epsilon_study`` for this study).
    """

    def __init__(self) -> None:
        self.rounds: list[dict[str, Any]] = []

    def __call__(self, records: list[RecordDict], weight_key: str) -> MetricRecord:
        records = _in_site_order(records)  # sums in a fixed order: same inputs, same bits
        from fedrad.federation import protocol

        total, weight = 0.0, 0.0
        sites: dict[str, dict[str, float]] = {}
        for i, record in enumerate(records):
            metrics = record["metrics"]
            n = float(metrics[weight_key])
            # sites send no loss under SecAgg+ (it would leave in the clear)
            loss = float(metrics["train-loss"]) if "train-loss" in metrics else float("nan")
            if "train-loss" in metrics:
                total += n * loss
                weight += n
            site = str(record["site"]["site_id"]) if "site" in record else f"site{i}"
            entry = {"n": n, "train_loss": loss}
            for key in protocol.PRIVACY_METRICS:
                if key in metrics:
                    entry[key.replace("-", "_")] = float(metrics[key])
            sites[site] = entry
        mean = total / weight if weight else float("nan")
        self.rounds.append({"train_loss": mean, "sites": sites})
        weight = sum(e["n"] for e in sites.values())
        epsilons = {s: e["epsilon_study"] for s, e in sites.items() if "epsilon_study" in e}
        if epsilons:
            log.info(
                "round %d privacy spent (epsilon this study): %s",
                len(self.rounds),
                ", ".join(f"{s} {v:.2f}" for s, v in sorted(epsilons.items())),
            )
        return MetricRecord({"train-loss": mean, weight_key: weight})

    def sites_seen(self) -> set[str]:
        """Every site that sent a training update in some round."""
        return {site for rnd in self.rounds for site in rnd["sites"]}

    def privacy_spent(self) -> dict[str, dict[str, float]]:
        """Per site, the last reported spending (epsilon this study, total, noise, delta)."""
        out: dict[str, dict[str, float]] = {}
        for rnd in self.rounds:
            for site, entry in rnd["sites"].items():
                if "epsilon_study" in entry:
                    out[site] = {k: v for k, v in entry.items() if k not in ("n", "train_loss")}
        return out


def ask_sites(
    grid: Grid, node_ids: list[int], config: dict[str, Any], arrays: list[np.ndarray] | None = None
) -> list[Message]:
    content = RecordDict({"config": ConfigRecord(config)})
    if arrays is not None:
        content["arrays"] = ArrayRecord(arrays)
    messages = [
        Message(content=content, message_type=MessageType.QUERY, dst_node_id=n) for n in node_ids
    ]
    return replies_in_site_order(grid.send_and_receive(messages, timeout=600))


def _site_id(reply: Message) -> str:
    return str(reply.content["site"]["site_id"])


def wait_for_nodes(grid: Grid, minimum: int, timeout: float, expected: int = 0) -> list[int]:
    """Node ids once ``max(minimum, expected)`` nodes are connected, or whatever is there at
    ``timeout`` (the study then starts if at least ``minimum`` can serve it).

    ``expected`` is how many sites are registered (``fedrad server start`` knows): a study waits
    for all of them rather than starting with the first ``minimum`` and leaving later ones out.
    """
    target = max(minimum, expected)
    deadline = time.monotonic() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < target and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    if len(nodes) < target:
        log.warning(
            "%d of %d expected site(s) connected after %.0f s; starting with those",
            len(nodes),
            target,
            timeout,
        )
    return nodes


def check_sites(
    grid: Grid, study: StudyConfig, node_ids: list[int], run: RunDirectory
) -> tuple[list[int], list[str], list[dict[str, Any]]]:
    """Ask every site whether it can serve the study; exclude those that cannot, with the reason.

    Returns the accepted node ids, the feature columns they share and every site's report.
    """
    replies = ask_sites(
        grid, node_ids, {"action": protocol.ACTION_CHECK, "study": protocol.study_to_json(study)}
    )
    accepted: list[int] = []
    usable: list[list[str]] = []
    reports = []
    for reply in replies:
        if reply.has_error():
            reports.append(
                {
                    "node_id": reply.metadata.src_node_id,
                    "ok": False,
                    "reason": f"site error: {reply.error.reason}",
                }
            )
            continue
        report = reply.content["report"]
        counts = reply.content["counts"]
        entry = {
            "site_id": _site_id(reply),
            "node_id": reply.metadata.src_node_id,
            "ok": bool(report["ok"]),
            "reason": str(report["reason"]),
        }
        entry.update({k: int(v) for k, v in counts.items()})
        reports.append(entry)
        if entry["ok"]:
            accepted.append(reply.metadata.src_node_id)
            usable.append([f for f in report["usable-features"] if f])
        else:
            log.warning("site %s excluded: %s", entry["site_id"], entry["reason"])
        if entry.get("failed-cases"):
            log.warning(
                "site %s: %d case(s) could not be read and are left out",
                entry["site_id"],
                entry["failed-cases"],
            )
    run.write_json("sites.json", reports)
    if len(accepted) < study.training.min_sites:
        reasons = "; ".join(
            f"{r.get('site_id', r.get('node_id'))}: {r['reason']}" for r in reports if not r["ok"]
        )
        raise StudyAbortedError(
            f"only {len(accepted)} site(s) can serve the study, it needs {study.training.min_sites}"
            + (f" (excluded: {reasons})" if reasons else "")
        )
    common = set(usable[0]).intersection(*map(set, usable[1:]))
    order = list(study.feature_columns) or usable[0]
    features = [f for f in order if f in common]
    if not features:
        raise StudyAbortedError("the accepted sites share no usable feature column")
    return accepted, features, reports


def federated_standardisation(
    grid: Grid, study: StudyConfig, nodes: list[int], features: list[str]
) -> protocol.Standardisation:
    """Global means and SDs from the sites' (n, sum, sum of squares) of their training rows."""
    replies = ask_sites(
        grid,
        nodes,
        {
            "action": protocol.ACTION_MOMENTS,
            "study": protocol.study_to_json(study),
            "features": features,
        },
    )
    n = total = total_sq = 0.0
    for reply in replies:
        if reply.has_error():
            raise StudyAbortedError(f"a site failed to send its moments: {reply.error.reason}")
        m = reply.content["moments"]
        n = n + m["n"].numpy()
        total = total + m["sum"].numpy()
        total_sq = total_sq + m["sumsq"].numpy()
    return protocol.Standardisation.from_moments(
        features, np.asarray(n), np.asarray(total), np.asarray(total_sq)
    )


class EvaluationLog:
    """Aggregates the sites' evaluation metrics each round (pooled AUC from summed histograms)."""

    def __init__(self, study: StudyConfig):
        self.study = study
        self.rounds: list[dict[str, Any]] = []

    def __call__(self, records: list[RecordDict], weight_key: str) -> MetricRecord:
        records = _in_site_order(records)  # sums in a fixed order: same inputs, same bits
        from fedrad.learn.federated_eval import (
            BinaryEvalStats,
            combine_binary_eval,
            combine_concordance,
        )

        per_site: dict[str, dict[str, float]] = {}
        pooled: dict[str, float]
        if self.study.task == "binary":
            stats = []
            for record in records:
                m = record["metrics"]
                site = (
                    str(record["site"]["site_id"]) if "site" in record else f"site{len(per_site)}"
                )
                if int(m["num-examples"]) == 0:
                    continue
                hist = np.array([m["hist-neg"], m["hist-pos"]], dtype=np.float64)
                stats.append(
                    BinaryEvalStats(
                        hist,
                        np.asarray(m["confusion"], dtype=np.float64),
                        float(m["num-examples"]),
                        float(m["sq-error"]),
                    )
                )
                per_site[site] = {
                    "n": float(m["num-examples"]),
                    "auc": float(m["auc"]) if "auc" in m else float("nan"),
                    "hist_neg": list(hist[0]),
                    "hist_pos": list(hist[1]),
                }
            pooled = combine_binary_eval(stats) if stats else {"auc": float("nan")}
        else:
            counts = []
            for record in records:
                m = record["metrics"]
                site = (
                    str(record["site"]["site_id"]) if "site" in record else f"site{len(per_site)}"
                )
                if "cindex-score" not in m:
                    continue
                counts.append([float(m["cindex-score"]), float(m["cindex-comparable"])])
                c = counts[-1]
                per_site[site] = {
                    "n": float(m["num-examples"]),
                    "c_index": c[0] / c[1] if c[1] else float("nan"),
                }
            pooled = combine_concordance(counts) if counts else {"c_index": float("nan")}
        self.rounds.append({"pooled": pooled, "sites": per_site})
        key = "auc" if self.study.task == "binary" else "c_index"
        return MetricRecord({key: float(pooled.get(key, float("nan")))})


@dataclass(frozen=True)
class UpdateSealing:
    """The ServerApp's X25519 sealing key and the registered sites' Ed25519 identities.

    With it (and secure aggregation off) every site seals its training and evaluation replies
    end to end to the ServerApp and signs them; the SuperLink only relays ciphertext.
    """

    private_key: Any
    registry: Any

    @staticmethod
    def from_files(key_path: str | Path, identities_dir: str | Path) -> UpdateSealing:
        from fedrad.secure.identity import SiteRegistry, load_sealing_key

        return UpdateSealing(load_sealing_key(key_path), SiteRegistry.from_dir(identities_dir))


def run_study(
    grid: Grid,
    study: StudyConfig,
    run_dir: Path,
    *,
    node_timeout: float = 60.0,
    sealing: UpdateSealing | None = None,
    noise_seed: int | None = None,
    expected_sites: int = 0,
) -> dict[str, Any]:
    """Run ``study`` over the sites connected to ``grid``; write and return its results.

    It waits up to ``node_timeout`` seconds for ``expected_sites`` (at least ``min_sites``).

    Secure aggregation on: Flower's SecAgg+ workflow (the server sees only the sum). Off: each
    site's update is sealed end to end with ``sealing`` when given (a warning otherwise).
    """
    run = RunDirectory(run_dir)
    run.write_json("study.json", study.to_dict())
    from fedrad.site.approval import study_hash

    run.write_json("study-hash.json", {"study_hash": study_hash(study)})
    rejections: list[tuple[int, str]] = []
    # Every exchange outside SecAgg+ (site checks, moments, evaluation, Newton, calibration, and
    # training when SecAgg+ is off) is sealed end to end when the server has a sealing key: a
    # site that pinned the key answers nothing in the clear.
    sealed_grid: Any = grid
    if sealing is not None:
        from fedrad.federation.sealing import SealingGrid

        sealed_grid = SealingGrid(
            grid,
            server_private=sealing.private_key,
            registry=sealing.registry,
            message_types=(MessageType.QUERY, MessageType.TRAIN, MessageType.EVALUATE),
        )
        rejections = sealed_grid.rejections
    elif not study.secure_aggregation.enabled:
        log.warning(
            "secure aggregation is off and no sealing key is configured: site updates reach "
            "the ServerApp protected only by the transport (TLS)"
        )
    nodes = wait_for_nodes(grid, study.training.min_sites, node_timeout, expected_sites)
    accepted, features, reports = check_sites(sealed_grid, study, nodes, run)
    std = federated_standardisation(sealed_grid, study, accepted, features)
    run.write_json("standardisation.json", std.to_config())
    config = {"study": protocol.study_to_json(study), **std.to_config()}
    evaluation = EvaluationLog(study)
    training = TrainLog()
    names = {r["node_id"]: r["site_id"] for r in reports if "site_id" in r and "node_id" in r}
    central_epsilon: float | None = None
    train_grid: Any = sealed_grid
    site_grid = SiteGrid(train_grid, accepted, site_names=names, min_sites=study.training.min_sites)
    if study.secure_aggregation.enabled:
        from fedrad.federation.secagg import secure_fit

        max_weight = max([10] + [int(r["n-train"]) for r in reports if r.get("ok")])
        arrays, history = secure_fit(
            grid,
            study,
            accepted,
            config,
            evaluation,
            run,
            max_weight=max_weight,
            train_log=training,
            evaluate_grid=sealed_grid,
        )
    elif study.training.strategy == "exact":
        from fedrad.federation.exact import newton_fit

        arrays, history = newton_fit(sealed_grid, study, accepted, config, evaluation, run)
    else:
        model = build_model(study.model_settings(), len(features))
        strategy = build_strategy(study, len(accepted), evaluation, training, noise_seed=noise_seed)
        history: list[dict[str, Any]] = []

        def checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round > 0:
                run.save_checkpoint(server_round, arrays.to_numpy_ndarrays())
            return None

        result = strategy.start(
            grid=site_grid,
            initial_arrays=ArrayRecord(get_parameters(model)),
            num_rounds=study.training.rounds,
            train_config=ConfigRecord(config),
            evaluate_config=ConfigRecord(config),
            evaluate_fn=checkpoint,
        )
        arrays = result.arrays.to_numpy_ndarrays()
        if hasattr(strategy, "privacy_report"):
            run.write_json("client-privacy.json", strategy.privacy_report())
            spent = strategy.privacy_spent()
            central_epsilon = None if spent is None else float(spent.epsilon)
        for i, rnd in enumerate(evaluation.rounds, start=1):
            trained = training.rounds[i - 1] if i <= len(training.rounds) else {}
            history.append(
                {
                    "round": i,
                    "train_loss": trained.get("train_loss"),
                    "train_sites": trained.get("sites", {}),
                    "dp_epsilon": result.train_metrics_clientapp.get(i, {}).get("dp-epsilon"),
                    **rnd,
                }
            )
    run.save_model(arrays)
    final = evaluation.rounds[-1] if evaluation.rounds else {"pooled": {}, "sites": {}}
    if study.task == "binary" and _both_classes(final["pooled"]):
        from fedrad.federation.calibration import federated_calibration

        # the sites whose held-out cases make up the pooled figures (a site may withhold its
        # evaluation, e.g. below its minimum cell count)
        evaluated = [n for n in accepted if names.get(n) in final["sites"]]
        final["pooled"].update(
            federated_calibration(sealed_grid, evaluated, config, arrays, site_names=names)
        )
    summary = {
        "study": study.name,
        "strategy": study.training.strategy,
        "sites": reports,
        "features": features,
        "rounds": len(history),
        "final": final,
        "privacy": privacy_summary(study, training, site_grid, central_epsilon),
        "sealing": {
            "enabled": sealing is not None,
            "rejected": [{"round": r, "reason": why} for r, why in rejections],
        },
    }
    run.write_json("history.json", history)
    run.write_json("federation.json", summary)
    run.plot_history(history, study.task)
    return {"arrays": arrays, "history": history, "summary": summary, "standardisation": std}


def privacy_summary(
    study: StudyConfig,
    training: TrainLog,
    grid: SiteGrid,
    central_epsilon: float | None = None,
) -> dict[str, Any]:
    """What the sites spent (epsilon this study and in total), how, and who ran out of budget.

    Sample-level DP: each site's own accounting. Client-level DP: the server's accountant
    (``central_epsilon``) holds for every site that took part.
    """
    spent = training.privacy_spent()
    epsilon = {site: entry.get("epsilon_study") for site, entry in sorted(spent.items())}
    if study.privacy.mode == "client":
        epsilon = {site: central_epsilon for site in sorted(training.sites_seen())}
    return {
        "mode": study.privacy.mode,
        "epsilon": epsilon,
        "epsilon_total": {site: entry.get("epsilon") for site, entry in sorted(spent.items())},
        "noise_multiplier": {
            site: entry.get("noise_multiplier") for site, entry in sorted(spent.items())
        },
        "delta": study.privacy.delta,
        "accountant": study.privacy.accountant,
        "secure_aggregation": study.secure_aggregation.enabled,
        "out_of_budget": dict(grid.out_of_budget),
    }


def build_server_app(
    studies: Sequence[tuple[StudyConfig, Path]],
    results: list[dict[str, Any]],
    sealing: UpdateSealing | None = None,
    failures: list[BaseException] | None = None,
    expected_sites: int = 0,
) -> ServerApp:
    """A ServerApp running each ``(study, run_dir)`` in turn (simulation harness).

    Each study's :func:`run_study` results are appended to ``results``. With ``failures`` the
    exception that stops a study is appended there (the caller re-raises it outside Flower's
    engine) and the studies after it are not run. Each study waits for ``expected_sites``
    virtual sites to connect (the engine starts them one by one).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            for study, run_dir in studies:
                results.append(
                    run_study(
                        grid,
                        study,
                        run_dir,
                        sealing=sealing,
                        noise_seed=study.seed,
                        expected_sites=expected_sites,
                    )
                )
        except Exception as exc:
            if failures is None:
                raise
            failures.append(exc)

    return app


def _deployed_main(grid: Grid, context: Context) -> None:
    study_path = context.run_config.get("study")
    if not study_path:
        raise StudyAbortedError(
            "the run config has no 'study' (path to study.toml); fedrad server start sets it"
        )
    study = StudyConfig.from_file(str(study_path))
    run_dir = Path(str(context.run_config.get("run-dir", "runs/latest")))
    sealing = None
    key, identities = (
        context.run_config.get("sealing-key"),
        context.run_config.get("site-identities"),
    )
    if key and identities:
        sealing = UpdateSealing.from_files(str(key), str(identities))
    run_study(
        grid,
        study,
        run_dir,
        node_timeout=float(context.run_config.get("node-timeout", 120)),
        sealing=sealing,
        expected_sites=int(context.run_config.get("expected-sites", 0)),
    )


#: The ServerApp of a deployed study (``fedrad server start``; ``flwr run .``).
app = ServerApp()
app.main()(_deployed_main)
