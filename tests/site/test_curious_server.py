"""A curious server attacks real sites, in Flower's simulation engine.

The ServerApp below is written to attack: it holds the study's real sealing key (it *is* the
server), and tries every way issue 8 lists to learn more than an accounted release: a privacy
downgrade, moments over chosen splits, retraining a released round with another model or seed,
Newton / evaluation / calibration probing, stripping the sealing key, a SecAgg+ round with
threshold 1, a plain (unmasked) round of a SecAgg+ study, reading a file through ``params``, and
the exact mode under DP. Each attack must be refused (with a coded, generic reason and nothing
else) or yield exactly the already-released answer.

The sites carry fedrad's default policy, except that they also serve a sealed study without
SecAgg+ (so that single releases can be probed) and allow only two calibration exchanges.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from fedrad.federation import protocol
from fedrad.federation.config import StudyConfig
from fedrad.site.approval import approve
from fedrad.site.policy import SitePolicy
from fedrad.site.refusal import REFUSAL_CODES, refusal_code, refusal_reason
from fedrad.site.secret import write_site_secret
from tests.federation.helpers import write_site

pytestmark = pytest.mark.slow

N_SITES = 3
FEATURES = ["stat_f0", "stat_f1", "stat_f2"]

SEALED_DP = StudyConfig.from_dict(
    {
        "study": {"name": "sealed-dp", "min_cases": 10, "seed": 1},
        "training": {"rounds": 2, "local_epochs": 1, "min_sites": 3, "batch_size": 8},
        "privacy": {"mode": "sample", "target_epsilon": 4.0},
        "secure_aggregation": {"enabled": False},
    }
)
SECAGG_DP = SEALED_DP.replace(name="secagg-dp").with_secure_aggregation(enabled=True)
EXACT_DP = SEALED_DP.replace(name="exact-dp").with_training(strategy="exact")
POLICY = SitePolicy(
    require_secure_aggregation=False,
    strategies=("fedavg", "fedprox", "exact"),
    statistics=("check", "moments", "evaluate", "calibration", "newton"),
    max_queries={"calibration": 2, "newton": 50},
)


def _messages(
    nodes: list[int],
    message_type: str,
    config: dict[str, Any],
    arrays: list[np.ndarray] | None = None,
    group: str = "",
) -> list[Message]:
    out = []
    for node in nodes:
        content = RecordDict({"config": ConfigRecord(dict(config))})
        if arrays is not None:
            content["arrays"] = ArrayRecord([a.copy() for a in arrays])
        out.append(
            Message(content=content, message_type=message_type, dst_node_id=node, group_id=group)
        )
    return out


def _ask(grid, nodes, message_type, config, arrays=None, group="") -> list[Message]:
    replies = grid.send_and_receive(
        _messages(nodes, message_type, config, arrays, group), timeout=120
    )
    return sorted(replies, key=lambda r: r.metadata.src_node_id)


def _outcome(replies: list[Message]) -> list[str]:
    """``ok`` or the refusal code of each reply (``other: ...`` for anything else)."""
    out = []
    for reply in replies:
        if not reply.has_error():
            out.append("ok")
            continue
        reason = str(reply.error.reason)
        code = refusal_code(reason)
        out.append(code if code and reason.endswith(refusal_reason(code)) else f"other: {reason}")
    return out


def _std_config(study: StudyConfig) -> dict[str, Any]:
    std = protocol.Standardisation(FEATURES, np.zeros(3), np.ones(3))
    return {"study": protocol.study_to_json(study), **std.to_config()}


def _model(value: float) -> list[np.ndarray]:
    return [np.full((1, 3), value), np.array([value / 2])]


def _attack(grid, sealed, nodes: list[int]) -> dict[str, Any]:
    """Every attack in turn; returns what each gave back."""
    results: dict[str, Any] = {}
    dp = _std_config(SEALED_DP)
    train = {**dp, "server-round": 1}

    results["honest_check"] = _outcome(
        _ask(sealed, nodes, MessageType.QUERY, {"action": "check", "study": dp["study"]})
    )
    # privacy downgrade: the same study with DP off, and with another seed
    for name, study in (
        ("downgrade", SEALED_DP.with_privacy(mode="none", target_epsilon=None)),
        ("other_seed", SEALED_DP.replace(seed=2)),
        ("chosen_split", SEALED_DP.replace(test_fraction=0.0)),
        ("chosen_folds", SEALED_DP.replace(cv_folds=10, cv_fold=3)),
    ):
        results[name] = _outcome(
            _ask(
                sealed,
                nodes,
                MessageType.TRAIN,
                {**train, "study": protocol.study_to_json(study)},
                _model(0.1),
            )
        )
    # moments: once, then the same (cached), then with other features (a differencing attempt)
    moments = {"action": "moments", "study": dp["study"], "features": FEATURES}
    first = _ask(sealed, nodes, MessageType.QUERY, moments)
    again = _ask(sealed, nodes, MessageType.QUERY, moments)
    results["moments"] = _outcome(first)
    results["moments_again_equal"] = all(
        np.array_equal(a.content["moments"]["sum"].numpy(), b.content["moments"]["sum"].numpy())
        for a, b in zip(first, again, strict=True)
    )
    results["moments_fewer_features"] = _outcome(
        _ask(sealed, nodes, MessageType.QUERY, {**moments, "features": FEATURES[:2]})
    )
    # retraining a released round: the same input gives the cached update, another model is refused
    trained = _ask(sealed, nodes, MessageType.TRAIN, train, _model(0.1))
    retry = _ask(sealed, nodes, MessageType.TRAIN, train, _model(0.1))
    results["train"] = _outcome(trained)
    results["train_retry_equal"] = all(
        np.array_equal(a.content["arrays"]["0"].numpy(), b.content["arrays"]["0"].numpy())
        for a, b in zip(trained, retry, strict=True)
    )
    results["train_other_model"] = _outcome(
        _ask(sealed, nodes, MessageType.TRAIN, train, _model(0.7))
    )
    # evaluation: one model per round; calibration: two exchanges, then the limit
    evaluate = {**dp, "server-round": 1}
    results["evaluate"] = _outcome(_ask(sealed, nodes, MessageType.EVALUATE, evaluate, _model(0.1)))
    results["evaluate_other_model"] = _outcome(
        _ask(sealed, nodes, MessageType.EVALUATE, evaluate, _model(0.9))
    )
    calibration = []
    for c in range(3):
        config = {
            **dp,
            "action": "calibration",
            protocol.CALIBRATION_COEFFICIENTS: [float(c), 1.0, 0.0],
        }
        calibration.append(_outcome(_ask(sealed, nodes, MessageType.QUERY, config, _model(0.1))))
    results["calibration"] = calibration
    # Newton probing under DP: the exact mode at a chosen point
    exact = {**_std_config(EXACT_DP), "action": "newton"}
    results["exact_under_dp"] = _outcome(
        _ask(sealed, nodes, MessageType.QUERY, exact, [np.zeros(4)])
    )
    newton_dp = {**dp, "action": "newton"}
    results["newton_probe"] = _outcome(
        _ask(sealed, nodes, MessageType.QUERY, newton_dp, [np.zeros(4)])
    )
    # stripping the sealing key (the raw grid offers none): nothing leaves in the clear
    results["unsealed_check"] = _outcome(
        _ask(grid, nodes, MessageType.QUERY, {"action": "check", "study": dp["study"]})
    )
    results["unsealed_evaluate"] = _outcome(
        _ask(grid, nodes, MessageType.EVALUATE, {**dp, "server-round": 2}, _model(0.1))
    )
    # a plain TRAIN of a SecAgg+ study would send the update unmasked
    secagg = {**_std_config(SECAGG_DP), "server-round": 1}
    results["secagg_study_plain_train"] = _outcome(
        _ask(sealed, nodes, MessageType.TRAIN, secagg, _model(0.1))
    )
    # a SecAgg+ round whose threshold is 1 (its unmask stage would hand over one update)
    setup = {
        Key.STAGE: Stage.SETUP,
        Key.SAMPLE_NUMBER: N_SITES,
        Key.SHARE_NUMBER: N_SITES,
        Key.THRESHOLD: 1,
        Key.CLIPPING_RANGE: 8.0,
        Key.TARGET_RANGE: 4_194_304,
        Key.MOD_RANGE: 2**32,
        Key.MAX_WEIGHT: 1000.0,
    }
    messages = [
        Message(
            content=RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(setup)}),
            message_type=MessageType.TRAIN,
            dst_node_id=node,
            group_id="1",
        )
        for node in nodes
    ]
    results["secagg_threshold_1"] = _outcome(
        sorted(grid.send_and_receive(messages, timeout=120), key=lambda r: r.metadata.src_node_id)
    )
    # reading a site file through [features] params
    params = SEALED_DP.replace(feature_settings={"params": "/etc/hostname"})
    replies = _ask(
        sealed,
        nodes,
        MessageType.QUERY,
        {"action": "check", "study": protocol.study_to_json(params)},
    )
    results["params_path"] = _outcome(replies)
    results["reasons"] = sorted(
        {str(r.error.reason) for name in ("params_path",) for r in replies if r.has_error()}
    )
    return results


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list]:
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from fedrad.federation.sealing import SealingGrid
    from fedrad.simulation.harness import simulation_keys
    from fedrad.site.client_app import build_client_app, simulation_resolver

    root = tmp_path_factory.mktemp("curious")
    sites = [write_site(root, f"h{i}", 40, i, n_features=3, policy=POLICY) for i in range(N_SITES)]
    for i, site in enumerate(sites):
        write_site_secret(site, bytes([i + 1]) * 32)
        for study in (SEALED_DP, SECAGG_DP, EXACT_DP):
            approve(site, study)
    sealing, site_sealings = simulation_keys(sites)
    from fedrad.federation.sealing import simulation_sealing_resolver

    out: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        import time

        deadline = time.monotonic() + 60
        while len(list(grid.get_node_ids())) < N_SITES and time.monotonic() < deadline:
            time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
        sealed = SealingGrid(
            grid,
            server_private=sealing.private_key,
            registry=sealing.registry,
            message_types=(MessageType.QUERY, MessageType.TRAIN, MessageType.EVALUATE),
        )
        try:
            out.update(_attack(grid, sealed, nodes))
        except Exception:  # reported by the test, not lost in Flower's log
            import traceback

            out["error"] = traceback.format_exc()

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)
    try:
        run_simulation(
            server_app=server,
            client_app=build_client_app(
                simulation_resolver(sites), simulation_sealing_resolver(site_sealings)
            ),
            num_supernodes=N_SITES,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False},
            },
        )
    finally:
        flwr_logger.setLevel(level)
    assert "error" not in out, out.get("error")
    return out, sites


ALL_OK = ["ok"] * N_SITES


def _all(code: str) -> list[str]:
    return [code] * N_SITES


def test_the_honest_requests_are_answered(attacked) -> None:
    out, _ = attacked
    assert out["honest_check"] == ALL_OK
    assert out["moments"] == ALL_OK and out["train"] == ALL_OK and out["evaluate"] == ALL_OK


@pytest.mark.parametrize("attack", ["downgrade", "other_seed", "chosen_split", "chosen_folds"])
def test_a_changed_study_is_refused(attacked, attack: str) -> None:
    assert attacked[0][attack] == _all("study-not-approved")


def test_moments_cannot_be_differenced(attacked) -> None:
    out, _ = attacked
    assert out["moments_again_equal"]  # a repeat gives the released sums again, nothing new
    assert out["moments_fewer_features"] == _all("already-released")


def test_a_released_round_cannot_be_retrained(attacked) -> None:
    out, sites = attacked
    assert out["train_retry_equal"]
    assert out["train_other_model"] == _all("already-released")
    from fedrad.privacy.ledger import PrivacyLedger

    for site in sites:  # one ledger entry for the round, whatever was asked
        entries = PrivacyLedger(site.ledger_path, 20.0, site.delta).entries()
        assert [e.round for e in entries] == [1]
        assert entries[0].study_hash and entries[0].input_hash


def test_probing_queries_are_bounded_or_refused(attacked) -> None:
    out, _ = attacked
    assert out["evaluate_other_model"] == _all("already-released")
    assert out["calibration"] == [ALL_OK, ALL_OK, _all("query-limit")]
    assert out["exact_under_dp"] == _all("policy")
    assert out["newton_probe"] == _all("policy")


def test_nothing_leaves_without_its_protection(attacked) -> None:
    out, _ = attacked
    assert out["unsealed_check"] == _all("sealing-required")
    assert out["unsealed_evaluate"] == _all("sealing-required")
    assert out["secagg_study_plain_train"] == _all("policy")
    assert out["secagg_threshold_1"] == _all("secagg-cohort")


def test_a_study_cannot_make_the_site_open_a_file(attacked) -> None:
    out, _ = attacked
    assert out["params_path"] == _all("malformed")
    assert out["reasons"] == [refusal_reason("malformed")]


def test_refusals_carry_codes_and_the_detail_stays_in_the_site_log(attacked) -> None:
    out, sites = attacked
    codes: set[str] = set()
    for name, value in out.items():
        if name == "calibration":
            codes.update(c for exchange in value for c in exchange)
        elif isinstance(value, list) and name != "reasons":
            codes.update(value)
    assert codes <= {"ok", *REFUSAL_CODES}, codes
    log = (sites[0].log_dir / "site.log").read_text()
    assert "differs from the approved one in: privacy.mode" in log
    assert re.search(r"params", log)


def test_the_egress_log_names_each_release_protection(attacked) -> None:
    from fedrad.federation.egress import read_egress

    _, sites = attacked
    entries = read_egress(sites[0].egress_log_path)
    assert entries
    for entry in entries:
        if entry.error is None:
            assert "sealed" in entry.protection, entry.kind
    trains = [e for e in entries if e.message_type == "train" and e.error is None]
    assert trains and all("dp" in e.protection for e in trains)
    assert any(e.protection == ("refusal",) for e in entries)
