"""Secure aggregation (Flower SecAgg+) end to end in Flower's simulation engine.

Seven virtual sites run a small ClientApp whose "training" returns the global model plus a known
per-site step, so every round's exact example-weighted mean is known. One simulation covers:
0, 1 and 2 sites dropping out while masking, 2 dropping out while unmasking, too few sites left
(no aggregate, model unchanged), an update outside the quantisation range (refused at the site,
the others aggregated), what leaves each site, and the time per round of SecAgg+ vs plain FedAvg.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedrad.federation.config import StudyConfig
from fedrad.federation.run_dir import RunDirectory
from fedrad.federation.secagg import (
    aggregate_error_bound,
    is_secure_aggregation_message,
    secure_aggregation_mods,
    secure_fit,
)
from fedrad.federation.server_app import EvaluationLog, wait_for_nodes
from fedrad.learn.models import build_model, get_parameters
from fedrad.simulation.harness import quiet_flower

pytestmark = pytest.mark.slow

N_SITES = 7
CLIP = 8.0
Q = 2**22
N_EXAMPLES = [10 + 7 * p for p in range(N_SITES)]
MAX_WEIGHT = float(max(N_EXAMPLES))
OUT_OF_RANGE = (6, 6)  # (server round, partition id) of the update with a value of 9 > CLIP

#: Secure-aggregation round (counted at each site) -> {partition id: stage it fails in}.
DROPS: dict[int, dict[int, str]] = {
    2: {3: Stage.COLLECT_MASKED_VECTORS},
    3: {1: Stage.COLLECT_MASKED_VECTORS, 5: Stage.COLLECT_MASKED_VECTORS},
    4: {2: Stage.UNMASK, 4: Stage.UNMASK},
    5: {p: Stage.COLLECT_MASKED_VECTORS for p in range(4)},
}
#: Partition ids whose update must be in each round's aggregate (None: no aggregate released).
INCLUDED: dict[int, list[int] | None] = {
    1: list(range(7)),
    2: [0, 1, 2, 4, 5, 6],
    3: [0, 2, 3, 4, 6],
    4: list(range(7)),  # dropping out while unmasking comes after the masked vector was sent
    5: None,  # 3 of 7 left, threshold round(0.6 * 7) = 4
    6: [0, 1, 2, 3, 4, 5],
}


def step(partition: int, server_round: int, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """The known local update of a toy site: global model + this."""
    rng = np.random.default_rng(100 * server_round + partition)
    return [rng.uniform(-0.5, 0.5, size=shape) for shape in shapes]


def toy_client_app(egress_dir: Path) -> ClientApp:
    """A site whose training is ``global + step``; an egress log mod outermost, then SecAgg+."""

    def egress_log(msg: Message, context: Context, call_next) -> Message:
        stage = (  # read first: SecAgg+ consumes the stage key of the incoming message
            str(msg.content[RECORD_KEY_CONFIGS][Key.STAGE])
            if is_secure_aggregation_message(msg)
            else None
        )
        reply = call_next(msg, context)
        content = reply.content
        record = {
            "type": msg.metadata.message_type,
            "stage": stage,
            "array_bytes": sum(
                len(a.data) for rec in content.array_records.values() for a in rec.values()
            ),
            "masked": RECORD_KEY_CONFIGS in content.config_records
            and Key.MASKED_PARAMETERS in content[RECORD_KEY_CONFIGS],
        }
        path = egress_dir / f"site-{context.node_config['partition-id']}.jsonl"
        with path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        return reply

    def dropout(msg: Message, context: Context, call_next) -> Message:
        if is_secure_aggregation_message(msg):
            stage = str(msg.content[RECORD_KEY_CONFIGS][Key.STAGE])
            if "toy" not in context.state:
                context.state["toy"] = ConfigRecord({"secagg-round": 0})
            counter = context.state["toy"]
            if stage == Stage.SETUP:
                counter["secagg-round"] = int(counter["secagg-round"]) + 1
            partition = int(context.node_config["partition-id"])
            if DROPS.get(int(counter["secagg-round"]), {}).get(partition) == stage:
                raise RuntimeError(f"simulated dropout of site-{partition} at stage {stage}")
        return call_next(msg, context)

    app = ClientApp(mods=[egress_log, dropout, *secure_aggregation_mods()])

    def reply(msg: Message, context: Context, **records: Any) -> Message:
        site = ConfigRecord({"site_id": f"site-{context.node_config['partition-id']}"})
        return Message(content=RecordDict({**records, "site": site}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        config = msg.content["config"]
        server_round = int(config["server-round"])
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        delta = step(partition, server_round, [a.shape for a in arrays])
        update = [a + d for a, d in zip(arrays, delta, strict=True)]
        if config["scenario"] == "dropouts" and (server_round, partition) == OUT_OF_RANGE:
            update[0].flat[0] = 9.0
        metrics = {
            "num-examples": N_EXAMPLES[partition],
            "train-loss": float(partition),
            "epsilon": 0.5 * partition,
        }
        return reply(msg, context, arrays=ArrayRecord(update), metrics=MetricRecord(metrics))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return reply(msg, context, metrics=MetricRecord({"num-examples": 0}))

    return app


def toy_study(rounds: int, n_features: int, model: str = "logistic") -> tuple[StudyConfig, dict]:
    study = StudyConfig.from_dict(
        {
            "model": {"type": model},
            "training": {"rounds": rounds, "min_sites": 2},
            "secure_aggregation": {
                "enabled": True,
                "num_shares": 1.0,
                "reconstruction_threshold": 0.6,
                "clipping_range": CLIP,
                "quantization_range": Q,
                "timeout": 600.0,  # only real failures drop a site, not a busy machine
            },
        }
    )
    features = [f"f{j}" for j in range(n_features)]
    return study, {"features": features}


def server_app(tmp_path: Path, out: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            nodes = wait_for_nodes(grid, N_SITES, 60)
            study, config = toy_study(6, 5)
            out["initial"] = get_parameters(build_model(study.model_settings(), 5))
            run = RunDirectory(tmp_path / "run")
            t0 = time.perf_counter()
            out["arrays"], out["history"] = secure_fit(
                grid,
                study,
                nodes,
                {**config, "scenario": "dropouts"},
                EvaluationLog(study),
                run,
                max_weight=MAX_WEIGHT,
            )
            out["dropouts_s"] = time.perf_counter() - t0
            # Timing: the same toy app, a model of fedrad's size (MLP on 100 features).
            rounds = 3
            study, config = toy_study(rounds, 100, "mlp")
            config["scenario"] = "clean"
            initial = get_parameters(build_model(study.model_settings(), 100))
            t0 = time.perf_counter()
            _, timed = secure_fit(
                grid,
                study,
                nodes,
                config,
                EvaluationLog(study),
                RunDirectory(tmp_path / "timed"),
                max_weight=MAX_WEIGHT,
            )
            out["secagg_round_s"] = (time.perf_counter() - t0) / rounds
            out["secagg_fit_s"] = float(np.mean([h["fit_seconds"] for h in timed]))
            t0 = time.perf_counter()
            result = FedAvg(
                min_train_nodes=N_SITES,
                min_evaluate_nodes=N_SITES,
                min_available_nodes=N_SITES,
                evaluate_metrics_aggr_fn=EvaluationLog(study),
            ).start(
                grid=grid,
                initial_arrays=ArrayRecord(initial),
                num_rounds=rounds,
                train_config=ConfigRecord(config),
                evaluate_config=ConfigRecord(config),
            )
            out["plain_round_s"] = (time.perf_counter() - t0) / rounds
            out["plain_arrays"] = result.arrays.to_numpy_ndarrays()
            out["plain_initial"] = initial
        except Exception as exc:  # surfaced by the test, not swallowed by the engine
            out["error"] = exc

    return app


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    quiet_flower()
    from flwr.simulation import run_simulation

    tmp_path = tmp_path_factory.mktemp("secagg")
    (tmp_path / "egress").mkdir()
    out: dict[str, Any] = {"tmp": tmp_path}
    t0 = time.perf_counter()
    run_simulation(
        server_app=server_app(tmp_path, out),
        client_app=toy_client_app(tmp_path / "egress"),
        num_supernodes=N_SITES,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"include_dashboard": False, "log_to_driver": False},
        },
    )
    out["simulation_s"] = time.perf_counter() - t0
    if "error" in out:
        raise out["error"]
    print(
        f"\nSecAgg+ round {out['secagg_round_s']:.2f} s (fit {out['secagg_fit_s']:.2f} s) vs "
        f"plain FedAvg round {out['plain_round_s']:.2f} s; simulation {out['simulation_s']:.1f} s"
    )
    return out


def weighted_mean_step(partitions: list[int], server_round: int, shapes) -> list[np.ndarray]:
    weights = np.array([N_EXAMPLES[p] for p in partitions], dtype=float)
    steps = [step(p, server_round, shapes) for p in partitions]
    return [
        sum(w * s[i] for w, s in zip(weights, steps, strict=True)) / weights.sum()
        for i in range(len(shapes))
    ]


def test_aggregate_is_the_weighted_mean_of_the_surviving_sites(federation) -> None:
    run = federation["tmp"] / "run"
    previous = federation["initial"]
    shapes = [a.shape for a in previous]
    history = {h["round"]: h for h in federation["history"]}
    for server_round, included in INCLUDED.items():
        current = RunDirectory.load_arrays(run / "checkpoints" / f"round-{server_round:04d}.npz")
        entry = history[server_round]
        if included is None:
            assert not entry["aggregated"] and entry["train_loss"] is None
            for now, before in zip(current, previous, strict=True):
                np.testing.assert_array_equal(now, before)
            continue
        assert entry["aggregated"], entry["secagg"]
        assert sorted(entry["secagg"]["included"]) == [f"site-{p}" for p in included], entry[
            "secagg"
        ]
        expected = [
            p + s
            for p, s in zip(
                previous, weighted_mean_step(included, server_round, shapes), strict=True
            )
        ]
        bound = aggregate_error_bound(CLIP, Q, MAX_WEIGHT, [N_EXAMPLES[p] for p in included])
        assert bound < 1e-4
        for now, want in zip(current, expected, strict=True):
            assert now.shape == want.shape
            assert np.max(np.abs(now - want)) < bound
        loss = sum(N_EXAMPLES[p] * p for p in included) / sum(N_EXAMPLES[p] for p in included)
        assert entry["train_loss"] == pytest.approx(loss)
        previous = current
    np.testing.assert_array_equal(federation["arrays"][0], previous[0])


def test_dropouts_are_recorded_with_stage_and_reason(federation) -> None:
    history = {h["round"]: h for h in federation["history"]}
    assert history[1]["secagg"]["dropped"] == []
    assert history[1]["secagg"]["sampled"] == N_SITES and history[1]["secagg"]["threshold"] == 4
    for server_round, drops in DROPS.items():
        seen = {(d["site"], d["stage"]) for d in history[server_round]["secagg"]["dropped"]}
        assert seen == {(f"site-{p}", stage) for p, stage in drops.items()}
        for d in history[server_round]["secagg"]["dropped"]:
            assert "simulated dropout" in d["reason"]
    assert all("pooled" in h and "sites" in h for h in history.values())


def test_out_of_range_update_is_refused_at_the_site(federation) -> None:
    server_round, partition = OUT_OF_RANGE
    entry = next(h for h in federation["history"] if h["round"] == server_round)
    (dropped,) = entry["secagg"]["dropped"]
    assert dropped["site"] == f"site-{partition}"
    assert dropped["stage"] == Stage.COLLECT_MASKED_VECTORS
    reason = dropped["reason"]
    assert reason.startswith(f"site site-{partition}: secure aggregation refuses")
    assert "(array 0, entry (0, 0): 9)" in reason
    assert "[secure_aggregation] clipping_range" in reason and "never clips" in reason
    assert entry["aggregated"]


def test_only_masked_vectors_leave_the_sites(federation) -> None:
    egress = federation["tmp"] / "egress"
    records = [
        json.loads(line)
        for path in sorted(egress.glob("site-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    masked = [r for r in records if r["stage"] == Stage.COLLECT_MASKED_VECTORS]
    assert masked and all(r["masked"] and r["array_bytes"] == 0 for r in masked)
    assert all(r["array_bytes"] == 0 for r in records if r["stage"] is not None)
    plain = [r for r in records if r["type"] == "train" and r["stage"] is None]
    assert len(plain) == 3 * N_SITES and all(r["array_bytes"] > 0 for r in plain)


def test_plain_rounds_pass_through_and_timing(federation) -> None:
    initial = federation["plain_initial"]
    shapes = [a.shape for a in initial]
    expected = initial
    for server_round in (1, 2, 3):
        mean = weighted_mean_step(list(range(N_SITES)), server_round, shapes)
        expected = [e + m for e, m in zip(expected, mean, strict=True)]
    for got, want in zip(federation["plain_arrays"], expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert federation["secagg_round_s"] > 0 and federation["plain_round_s"] > 0
