"""Secure aggregation pieces without a federation: range check, mod, adapter, settings, bound."""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.app.error import Error
from flwr.app.message.message import make_message
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_multiply,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat

from fedrad.errors import FedradError
from fedrad.federation.config import ConfigError, SecureAggregationConfig, StudyConfig
from fedrad.federation.secagg import (
    SecureAggregationError,
    UpdateOutOfRangeError,
    aggregate_error_bound,
    build_workflow,
    check_update_range,
    secure_aggregation_mod,
    secure_fit,
)
from fedrad.federation.secagg_client import _train_through_fedrad
from fedrad.federation.secagg_server import short_reason


def test_update_within_range_passes_and_bounds_are_inclusive() -> None:
    arrays = [np.array([[-8.0, 0.5, 8.0]]), np.array([0.0]), np.zeros((0,))]
    check_update_range(arrays, 100, clipping_range=8.0, max_weight=100.0, site="a")


def test_update_outside_range_is_refused_with_site_value_and_setting() -> None:
    arrays = [np.array([[0.1, -0.2]]), np.array([[1.0, 2.0], [3.0, -12.5]])]
    with pytest.raises(UpdateOutOfRangeError) as info:
        check_update_range(arrays, 10, clipping_range=8.0, max_weight=100.0, site="hosp-b")
    message = str(info.value)
    assert isinstance(info.value, FedradError)
    assert message.startswith("site hosp-b: secure aggregation refuses this update")
    assert "(array 1, entry (1, 1): -12.5)" in message
    assert "[secure_aggregation] clipping_range" in message and "above 12.5" in message


def test_non_finite_update_and_overweight_site_are_refused() -> None:
    with pytest.raises(UpdateOutOfRangeError, match="NaN or infinite"):
        check_update_range([np.array([np.nan])], 1, clipping_range=8.0, max_weight=10, site="c")
    with pytest.raises(UpdateOutOfRangeError, match="weighs 11 training examples"):
        check_update_range([np.zeros(2)], 11, clipping_range=8.0, max_weight=10, site="c")


def _incoming(content: RecordDict, message_type: str = MessageType.TRAIN) -> Message:
    """A message as a site receives it from the server (metadata set by the SuperLink)."""
    metadata = Metadata(
        run_id=1,
        message_id="m-1",
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="3",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return make_message(metadata, content)


def _context(state: RecordDict | None = None) -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=state or RecordDict(), run_config={})


def test_mod_passes_other_messages_through_untouched() -> None:
    seen: list[Message] = []

    def app(msg: Message, context: Context) -> Message:
        seen.append(msg)
        return Message(content=RecordDict({"ok": ConfigRecord({"x": 1})}), reply_to=msg)

    plain_train = _incoming(RecordDict({"arrays": ArrayRecord([np.ones(2)])}))
    evaluate = _incoming(RecordDict(), MessageType.EVALUATE)
    for msg in (plain_train, evaluate):
        reply = secure_aggregation_mod(msg, _context(), app)
        assert seen[-1] is msg and "ok" in reply.content


def _fitins_message(arrays: list[np.ndarray]) -> Message:
    config = {"study": "{}", "features": ["a", "b"], "mean": [0.0, 1.0], "server-round": 3}
    content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters(arrays), config), True)
    return _incoming(content)


def _secagg_state(clipping_range: float = 8.0, max_weight: float = 100.0) -> RecordDict:
    state = {"clipping_range": clipping_range, "max_weight": max_weight}
    return RecordDict({RECORD_KEY_STATE: ConfigRecord(state)})


def test_adapter_speaks_fedrad_to_the_app_and_fitres_to_secaggplus() -> None:
    global_arrays = [np.arange(6, dtype=np.float64).reshape(2, 3) / 10, np.array([0.5])]

    def fedrad_train(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        for got, sent in zip(arrays, global_arrays, strict=True):
            np.testing.assert_array_equal(got, sent)
        config = msg.content["config"]
        assert list(config["features"]) == ["a", "b"] and int(config["server-round"]) == 3
        assert msg.metadata.message_type == MessageType.TRAIN
        metrics = {"num-examples": 42, "train-loss": 0.25, "epsilon": 1.5, "hist": [1.0, 2.0]}
        content = RecordDict(
            {
                "arrays": ArrayRecord([a - 0.1 for a in arrays]),
                "metrics": MetricRecord(metrics),
                "site": ConfigRecord({"site_id": "hosp-a"}),
            }
        )
        return Message(content=content, reply_to=msg)

    msg = _fitins_message(global_arrays)
    reply = _train_through_fedrad(msg, _context(_secagg_state()), fedrad_train)
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    assert fitres.num_examples == 42
    # scalar metrics pass through (the site id lets the server report spending per site)
    assert fitres.metrics == {"train-loss": 0.25, "epsilon": 1.5, "site-id": "hosp-a"}
    for got, sent in zip(parameters_to_ndarrays(fitres.parameters), global_arrays, strict=True):
        np.testing.assert_allclose(got, sent - 0.1)
    assert reply.content["site"]["site_id"] == "hosp-a"


def test_adapter_refuses_out_of_range_updates_and_failed_training() -> None:
    def too_big(msg: Message, context: Context) -> Message:
        content = RecordDict(
            {
                "arrays": ArrayRecord([np.array([20.0])]),
                "metrics": MetricRecord({"num-examples": 5, "train-loss": 0.1}),
                "site": ConfigRecord({"site_id": "hosp-z"}),
            }
        )
        return Message(content=content, reply_to=msg)

    def failed(msg: Message, context: Context) -> Message:
        return Message(Error(code=0, reason="disk full"), reply_to=msg)

    msg = _fitins_message([np.zeros(1)])
    with pytest.raises(UpdateOutOfRangeError, match=r"site hosp-z: .* above 20"):
        _train_through_fedrad(msg, _context(_secagg_state(clipping_range=16.0)), too_big)
    with pytest.raises(SecureAggregationError, match="local training failed: disk full"):
        _train_through_fedrad(_fitins_message([np.zeros(1)]), _context(_secagg_state()), failed)
    with pytest.raises(SecureAggregationError, match="before its setup stage"):
        _train_through_fedrad(_fitins_message([np.zeros(1)]), _context(), too_big)


def test_workflow_settings_follow_flowers_count_or_fraction_convention() -> None:
    workflow = build_workflow(SecureAggregationConfig(num_shares=1.0), 5, max_weight=80)
    assert workflow.num_shares == 1.0 and workflow.reconstruction_threshold == 0.6
    assert workflow.max_weight == 80.0 and workflow.timeout == 120.0
    counted = build_workflow(
        SecureAggregationConfig(num_shares=5, reconstruction_threshold=3, clipping_range=4), 9
    )
    assert counted.num_shares == 5 and isinstance(counted.num_shares, int)
    assert counted.reconstruction_threshold == 3 and counted.clipping_range == 4.0


@pytest.mark.parametrize(
    ("settings", "n_sites", "match"),
    [
        (SecureAggregationConfig(num_shares=2.5), 5, "whole number"),
        (SecureAggregationConfig(num_shares=2), 5, "greater than 2"),
        (SecureAggregationConfig(num_shares=5, reconstruction_threshold=5), 9, "less than"),
        (SecureAggregationConfig(quantization_range=2**30), 4, "overflow"),
        (SecureAggregationConfig(), 1, "at least 2 sites"),
    ],
)
def test_bad_workflow_settings_are_config_errors(settings, n_sites: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_workflow(settings, n_sites)


@pytest.mark.parametrize(
    ("study", "match"),
    [
        (StudyConfig().with_training(strategy="krum"), "weighted mean"),
        (
            StudyConfig().with_privacy(mode="client"),
            "client-level differential privacy is not yet combined",
        ),
    ],
)
def test_secure_fit_refuses_studies_it_cannot_serve(study: StudyConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        secure_fit(None, study, [1, 2, 3], {"features": ["a"]}, None, None)


def _secaggplus_arithmetic(
    updates: list[list[np.ndarray]], weights: list[int], c: float, q: int, w: float
) -> list[np.ndarray]:
    """SecAgg+'s arithmetic with Flower's own functions (the masks cancel, so they are left out)."""
    total = None
    for update, n in zip(updates, weights, strict=True):
        q_ratio = round(n / w * q)
        scaled = parameters_multiply(update, q_ratio / q)
        vector = factor_combine(q_ratio, [v.astype(np.int64) for v in quantize(scaled, c, q)])
        total = vector if total is None else parameters_addition(total, vector)
    q_total, summed = factor_extract(parameters_mod(total, 2**32))
    values = dequantize(summed, c, q)
    return [(v - (len(updates) - 1) * c) * (q / q_total) for v in values]


@pytest.mark.parametrize(("c", "q"), [(8.0, 2**22), (1.0, 2**10), (50.0, 2**16)])
def test_error_bound_holds_for_flowers_quantisation(c: float, q: int) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        k = int(rng.integers(2, 12))
        weights = [int(n) for n in rng.integers(1, 300, size=k)]
        w = float(max(weights) * rng.uniform(1.0, 3.0))
        updates = [[rng.uniform(-c, c, size=(3, 4)), rng.choice([-c, c], size=2)] for _ in weights]
        got = _secaggplus_arithmetic(updates, weights, c, q, w)
        total = sum(weights)
        for i, array in enumerate(got):
            exact = sum(n * u[i] for n, u in zip(weights, updates, strict=True)) / total
            assert np.max(np.abs(array - exact)) < aggregate_error_bound(c, q, w, weights)


def test_bound_is_about_three_steps_per_site_over_the_total_weight() -> None:
    bound = aggregate_error_bound(8.0, 2**22, 100.0, [50, 100])
    assert bound == pytest.approx(3 * 8.0 * 2 / (2**22 * 1.5))
    assert aggregate_error_bound(8.0, 2**22, 100.0, [0]) == float("inf")


def test_short_reason_keeps_the_sites_message() -> None:
    reason = "<class 'X'>:<'Traceback ... Message: site a: refused (array 0)'>"
    assert short_reason(reason) == "site a: refused (array 0)"
    assert short_reason("timeout") == "timeout"
    assert len(short_reason("x" * 2000)) == 600
