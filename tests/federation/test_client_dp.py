"""Client-level DP: Flower's fixed-clipping wrappers with per-round noise recalibration,
the site's clipping mod and count cap, the accountant, and a Flower simulation end to end."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity
from scipy.stats import norm as normal

from fedrad.federation import protocol
from fedrad.federation.client_dp import (
    KEY_CLIPPING_NORM,
    KEY_DP_CLIPPING,
    KEY_MAX_EXAMPLES,
    GaussianAccountant,
    ServerClippedDP,
    SiteClippedDP,
    client_dp_mods,
    clip_update,
    epsilon_after,
    make_accountant,
    noise_multiplier_for,
    noise_stdev,
    wrap_client_dp,
)
from fedrad.federation.config import ConfigError, StudyConfig
from fedrad.federation.strategies import build_strategy


def _inner(study: StudyConfig, n_sites: int, aggregator):
    """The study's Flower strategy before the DP wrapper (build_strategy wraps client mode)."""
    return build_strategy(study.with_privacy(mode="none"), n_sites, aggregator)


def _study(**privacy) -> StudyConfig:
    return StudyConfig().with_privacy(mode="client", **privacy)


def _no_eval(records, key) -> MetricRecord:
    return MetricRecord({})


class NodeRoster(Grid):
    """The node list of a round; only ``configure_train`` asks a Grid anything here.

    Messages really travel in :func:`test_end_to_end_simulation`.
    """

    def __init__(self, n: int):
        self._nodes = list(range(100, 100 + n))

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)

    def set_run(self, run):  # pragma: no cover - not used
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover - not used
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # pragma: no cover - not used
        raise NotImplementedError

    def push_messages(self, messages):  # pragma: no cover - not used
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover - not used
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover - not used
        raise NotImplementedError


@pytest.fixture
def server_task(monkeypatch):
    """The identity a ServerApp process has (Flower needs it to create instruction messages)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _reply(instruction: Message, arrays: list[np.ndarray], n: int, loss: float = 0.5) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord(arrays),
            "metrics": MetricRecord({"num-examples": n, "train-loss": loss}),
            "site": ConfigRecord({"site_id": f"site-{instruction.metadata.dst_node_id}"}),
        }
    )
    return Message(content=content, reply_to=instruction)


def _dropout(instruction: Message) -> Message:
    error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="site offline")
    return Message(error, reply_to=instruction)


def _configure(wrapper, current: list[np.ndarray], n_nodes: int, rnd: int = 1) -> list[Message]:
    config = ConfigRecord({"study": "{}"})
    return list(wrapper.configure_train(rnd, ArrayRecord(current), config, NodeRoster(n_nodes)))


# --- noise calibration -----------------------------------------------------------------------


def test_noise_stdev_formula():
    assert noise_stdev(1.0, 0.5, [7, 7, 7]) == pytest.approx(0.5 / 3)
    assert noise_stdev(2.0, 1.0, [50, 1000, 300]) == pytest.approx(2.0 * 1000 / 1350)
    with pytest.raises(ValueError):
        noise_stdev(1.0, 1.0, [])


def test_noise_recalibrated_to_three_of_five_updates(server_task):
    """5 sites asked, 1 error reply and 1 missing: the noise is z·C/3, not Flower's z·C/5."""
    study = _study(client_noise_multiplier=1.0, client_clipping_norm=0.5)
    inner = _inner(study, 5, _no_eval)
    wrapper = wrap_client_dp(inner, study, 5, noise_seed=7)
    assert isinstance(wrapper, SiteClippedDP) and wrapper.num_sampled_clients == 5
    N = 200_000
    current = [np.zeros(N)]
    messages = _configure(wrapper, current, 5)
    assert len(messages) == 5
    config = messages[0].content["config"]
    assert config[KEY_CLIPPING_NORM] == 0.5 and config[KEY_DP_CLIPPING] == "site"
    assert config[KEY_MAX_EXAMPLES] == study.privacy.max_examples
    replies = [_reply(m, [np.zeros(N)], 20) for m in messages[:3]] + [_dropout(messages[3])]
    arrays, metrics = wrapper.aggregate_train(1, replies)
    noise = arrays.to_numpy_ndarrays()[0]
    expected = 1.0 * 0.5 / 3
    release = wrapper.releases[-1]
    assert (release.sampled, release.aggregated, release.dropped) == (5, 3, 2)
    assert release.noise_stdev == pytest.approx(expected)
    assert metrics["dp-noise-stdev"] == pytest.approx(expected)
    assert metrics["dp-aggregated"] == 3
    assert np.std(noise) == pytest.approx(expected, rel=0.02)
    assert abs(np.mean(noise)) < 5 * expected / math.sqrt(N)
    flower_stdev = 1.0 * 0.5 / 5
    assert np.std(noise) > 1.5 * flower_stdev


def test_count_cap_weights_and_server_recheck(server_task):
    """Counts capped at max_examples weight the mean; an unclipped update is clipped at the
    server; the noise follows z·C·max(w)/Σw."""
    z, C, M = 1e-3, 1.0, 1000
    study = _study(client_noise_multiplier=z, client_clipping_norm=C, max_examples=M)
    wrapper = wrap_client_dp(_inner(study, 3, _no_eval), study, 3, noise_seed=1)
    current = [np.array([1.0, 2.0, 3.0]), np.array([[0.5]])]
    messages = _configure(wrapper, current, 3)
    updates = [
        [np.array([0.2, 0.0, 0.0]), np.array([[0.0]])],
        [np.array([0.0, 3.0, 0.0]), np.array([[4.0]])],  # norm 5: the site did not clip
        [np.array([0.0, 0.0, -0.5]), np.array([[0.0]])],
    ]
    counts = [50, 5000, 300]
    replies = [
        _reply(m, [c + u for c, u in zip(current, d, strict=True)], n)
        for m, d, n in zip(messages, updates, counts, strict=True)
    ]
    arrays, metrics = wrapper.aggregate_train(1, replies)
    w = np.array([50, 1000, 300], float)
    clipped = [
        [a / max(1.0, math.sqrt(sum((b**2).sum() for b in d)) / C) for a in d] for d in updates
    ]
    expected = [
        c + sum(wi * d[j] for wi, d in zip(w, clipped, strict=True)) / w.sum()
        for j, c in enumerate(current)
    ]
    sigma = z * C * 1000 / 1350
    release = wrapper.releases[-1]
    assert release.noise_stdev == pytest.approx(sigma)
    assert release.clipped_at_server == 1
    assert metrics["num-examples"] == pytest.approx(1350)
    for got, want in zip(arrays.to_numpy_ndarrays(), expected, strict=True):
        assert np.all(np.abs(got - want) < 6 * sigma)
    assert wrapper.strategy.weighted_by_key == "num-examples"


def test_server_side_clipping_mode(server_task):
    study = _study(client_noise_multiplier=0.01, client_clipping_norm=1.0, max_examples=10)
    wrapper = wrap_client_dp(_inner(study, 2, _no_eval), study, 2, clipping="server", noise_seed=3)
    assert isinstance(wrapper, ServerClippedDP)
    current = [np.zeros(2)]
    messages = _configure(wrapper, current, 2)
    config = messages[0].content["config"]
    assert config[KEY_DP_CLIPPING] == "server" and KEY_CLIPPING_NORM not in config
    replies = [
        _reply(messages[0], [np.array([3.0, 4.0])], 10),
        _reply(messages[1], [np.zeros(2)], 99),
    ]
    arrays, _ = wrapper.aggregate_train(1, replies)
    assert wrapper.releases[-1].clipped_at_server == 0  # expected in this mode, no warning
    assert np.allclose(arrays.to_numpy_ndarrays()[0], [0.3, 0.4], atol=6 * 0.01 * 0.5)
    with pytest.raises(ConfigError, match="secure aggregation"):
        secure = study.with_secure_aggregation(enabled=True)
        wrap_client_dp(_inner(secure, 2, _no_eval), secure, 2, clipping="server")


def test_no_usable_update_releases_nothing(server_task):
    study = _study()
    wrapper = wrap_client_dp(_inner(study, 2, _no_eval), study, 2, noise_seed=0)
    messages = _configure(wrapper, [np.zeros(3)], 2)
    bad = _reply(messages[1], [np.array([np.nan, 0.0, 0.0])], 5)
    assert wrapper.aggregate_train(1, [_dropout(messages[0]), bad]) == (None, None)
    assert wrapper.releases[-1].aggregated == 0
    assert wrapper.accountant.num_releases == 0


def test_wrapper_refuses_unsuitable_studies():
    with pytest.raises(ConfigError, match="mode = 'client'"):
        plain = StudyConfig()
        wrap_client_dp(build_strategy(plain, 3, _no_eval), plain, 3)
    with pytest.raises(ConfigError, match="fedavg or fedprox"):  # refused by the study itself
        _study().with_training(strategy="krum")
    krum = StudyConfig().with_training(strategy="krum")
    with pytest.raises(ConfigError, match="averaging strategy"):
        wrap_client_dp(build_strategy(krum, 3, _no_eval), _study(), 3)
    with pytest.raises(ConfigError, match="client_clipping_norm"):
        bad = _study(client_clipping_norm=0.0)
        wrap_client_dp(FedAvg(), bad, 3)


# --- the site's mod --------------------------------------------------------------------------


def _site_app(update: np.ndarray, count: int) -> ClientApp:
    app = ClientApp(mods=client_dp_mods())

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        received = msg.content["arrays"].to_numpy_ndarrays()
        content = RecordDict(
            {
                "arrays": ArrayRecord([received[0] + update]),
                "metrics": MetricRecord({"num-examples": count, "train-loss": 0.1}),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return Message(content=RecordDict({"echo": ConfigRecord({"ok": 1})}), reply_to=msg)

    return app


def _incoming(config: dict, message_type: str = MessageType.TRAIN) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="instruction-1",
        src_node_id=1,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    content = RecordDict(
        {"arrays": ArrayRecord([np.array([1.0, -1.0])]), "config": ConfigRecord(config)}
    )
    return Message(content=content, metadata=metadata)


def _context() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


DP_CONFIG = {KEY_DP_CLIPPING: "site", KEY_CLIPPING_NORM: 1.0, KEY_MAX_EXAMPLES: 1000}


def test_site_mod_clips_update_and_caps_count():
    out = _site_app(np.array([3.0, 4.0]), 5000)(_incoming(DP_CONFIG), _context())
    assert not out.has_error()
    sent = out.content["arrays"].to_numpy_ndarrays()[0]
    assert np.allclose(sent, [1.0 + 0.6, -1.0 + 0.8])
    assert np.linalg.norm(sent - [1.0, -1.0]) == pytest.approx(1.0)
    assert out.content["metrics"]["num-examples"] == 1000


def test_site_mod_leaves_small_and_zero_updates():
    out = _site_app(np.array([0.3, 0.4]), 50)(_incoming(DP_CONFIG), _context())
    assert np.array_equal(out.content["arrays"].to_numpy_ndarrays()[0], [1.3, -0.6])
    assert out.content["metrics"]["num-examples"] == 50
    zero = _site_app(np.zeros(2), 10)(_incoming(DP_CONFIG), _context())
    assert np.array_equal(zero.content["arrays"].to_numpy_ndarrays()[0], [1.0, -1.0])
    new, norm = clip_update([np.zeros(2)], [np.zeros(2)], 1.0)
    assert norm == 0.0 and np.array_equal(new[0], np.zeros(2))


def test_site_mod_inactive_without_flag_and_refuses_unwrapped_dp_study():
    plain = protocol.study_to_json(StudyConfig())
    out = _site_app(np.array([3.0, 4.0]), 5000)(_incoming({"study": plain}), _context())
    assert np.array_equal(out.content["arrays"].to_numpy_ndarrays()[0], [4.0, 3.0])
    assert out.content["metrics"]["num-examples"] == 5000
    query = _site_app(np.zeros(2), 1)(_incoming({}, MessageType.QUERY), _context())
    assert query.content["echo"]["ok"] == 1
    dp_study = protocol.study_to_json(_study())
    refused = _site_app(np.array([3.0, 4.0]), 5)(_incoming({"study": dp_study}), _context())
    assert refused.has_error() and refused.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "not wrapped" in refused.error.reason
    server_mode = {KEY_DP_CLIPPING: "server", "study": dp_study}
    passed = _site_app(np.array([3.0, 4.0]), 5)(_incoming(server_mode), _context())
    assert np.array_equal(passed.content["arrays"].to_numpy_ndarrays()[0], [4.0, 3.0])
    broken = _site_app(np.zeros(2), 5)(
        _incoming({**DP_CONFIG, KEY_CLIPPING_NORM: -1.0}), _context()
    )
    assert broken.has_error()


# --- accounting ------------------------------------------------------------------------------


def _composed(method: str, z: float, rounds: int, delta: float = 1e-5) -> GaussianAccountant:
    study = _study(accountant="rdp" if method == "rdp" else "prv", delta=delta)
    accountant = make_accountant(study, 4)
    assert accountant.method == method
    from flwr.serverapp import GaussianPrivacyEvent

    accountant.compose(
        GaussianPrivacyEvent(noise_multiplier=z, sample_size=3, population_size=4), rounds
    )
    return accountant


def test_rdp_epsilon_matches_opacus_with_sample_rate_one():
    from opacus.accountants import RDPAccountant

    z, rounds, delta = 1.1, 20, 1e-5
    reference = RDPAccountant()
    for _ in range(rounds):
        reference.step(noise_multiplier=z, sample_rate=1.0)
    ours = _composed("rdp", z, rounds, delta)
    assert ours.get_epsilon(delta) == pytest.approx(reference.get_epsilon(delta), rel=1e-9)
    spent = ours.get_privacy_spent()
    assert spent.num_releases == rounds and spent.accounting_method == "rdp"
    assert ours.get_delta(spent.epsilon) == pytest.approx(delta, rel=1e-6)


def test_exact_gaussian_epsilon_is_tight_and_below_rdp():
    z, rounds, delta = 1.1, 20, 1e-5
    exact = _composed("gaussian", z, rounds, delta).get_epsilon(delta)
    mu = math.sqrt(rounds) / z
    curve = normal.cdf(-exact / mu + mu / 2) - math.exp(exact) * normal.cdf(-exact / mu - mu / 2)
    assert curve == pytest.approx(delta, rel=1e-6)
    assert exact < epsilon_after(z, rounds, delta, "rdp")
    assert exact == pytest.approx(epsilon_after(z, rounds, delta, "gaussian"))


def test_per_round_epsilon_reported_and_state_restored(server_task):
    study = _study(client_noise_multiplier=2.0, accountant="rdp")
    wrapper = wrap_client_dp(_inner(study, 2, _no_eval), study, 2, noise_seed=5)
    current = [np.zeros(4)]
    for rnd in (1, 2, 3):
        messages = _configure(wrapper, current, 2, rnd)
        replies = [_reply(m, [np.full(4, 0.1)], 10) for m in messages]
        arrays, metrics = wrapper.aggregate_train(rnd, replies)
        want = epsilon_after(2.0, rnd, study.privacy.delta, "rdp")
        assert metrics["dp-epsilon"] == pytest.approx(want)
        assert wrapper.releases[-1].epsilon == pytest.approx(want)
        current = arrays.to_numpy_ndarrays()
    assert wrapper.privacy_spent().num_releases == 3
    report = wrapper.privacy_report()
    restored = make_accountant(study, 2)
    restored.load_state_dict(report["accountant"])
    assert restored.get_epsilon(1e-5) == pytest.approx(wrapper.accountant.get_epsilon(1e-5))


def test_target_epsilon_refuses_too_little_noise():
    study = _study(client_noise_multiplier=1.0, target_epsilon=2.0).with_training(rounds=20)
    with pytest.raises(ConfigError, match="client_noise_multiplier >= "):
        wrap_client_dp(FedAvg(), study, 3)
    z = noise_multiplier_for(2.0, 20, study.privacy.delta, "gaussian")
    assert epsilon_after(z, 20, study.privacy.delta, "gaussian") <= 2.0
    assert epsilon_after(0.99 * z, 20, study.privacy.delta, "gaussian") > 2.0
    enough = study.with_privacy(client_noise_multiplier=z)
    assert wrap_client_dp(FedAvg(), enough, 3).accountant.config.max_epsilon == 2.0


# --- end to end: Flower's simulation engine --------------------------------------------------

DIM = 20_000
COUNTS = (50, 5000, 300)


def _site_update(pid: int) -> np.ndarray:
    rng = np.random.default_rng(100 + pid)
    direction = rng.normal(size=DIM)
    return direction / np.linalg.norm(direction) * (3.0, 0.5, 2.0)[pid]


def _e2e_client_app() -> ClientApp:
    app = ClientApp(mods=client_dp_mods())

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if pid == 2 and int(msg.content["config"]["server-round"]) == 2:
            raise RuntimeError("site 2 is offline this round")
        received = msg.content["arrays"].to_numpy_ndarrays()[0]
        content = RecordDict(
            {
                "arrays": ArrayRecord([received + _site_update(pid)]),
                "metrics": MetricRecord({"num-examples": COUNTS[pid], "train-loss": 0.0}),
            }
        )
        return Message(content=content, reply_to=msg)

    return app


@pytest.mark.slow
def test_end_to_end_simulation(tmp_path):
    """Three sites through Flower's simulation engine; site 2 drops out of round 2."""
    import os

    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    z, C, M = 0.5, 1.0, 1000
    study = _study(client_noise_multiplier=z, client_clipping_norm=C, max_examples=M)
    captured: dict = {"arrays": {}}
    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:
        inner = FedAvg(fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3)
        wrapper = wrap_client_dp(inner, study, 3, noise_seed=11)
        captured["wrapper"] = wrapper

        def keep(rnd: int, arrays: ArrayRecord) -> None:
            captured["arrays"][rnd] = arrays.to_numpy_ndarrays()[0]

        wrapper.start(
            grid=grid,
            initial_arrays=ArrayRecord([np.zeros(DIM)]),
            num_rounds=3,
            train_config=ConfigRecord({"study": protocol.study_to_json(study)}),
            evaluate_fn=keep,
        )

    run_simulation(
        server_app=server,
        client_app=_e2e_client_app(),
        num_supernodes=3,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False},
        },
    )
    wrapper = captured["wrapper"]
    assert [r.aggregated for r in wrapper.releases] == [3, 2, 3]
    assert all(r.clipped_at_server == 0 for r in wrapper.releases)  # the sites clipped
    clipped = [d * min(1.0, C / np.linalg.norm(d)) for d in map(_site_update, range(3))]
    weights = np.minimum(COUNTS, M).astype(float)
    for rnd, members in ((1, [0, 1, 2]), (2, [0, 1]), (3, [0, 1, 2])):
        w = weights[members]
        mean = sum(wi * clipped[i] for wi, i in zip(w, members, strict=True)) / w.sum()
        sigma = z * C * w.max() / w.sum()
        assert wrapper.releases[rnd - 1].noise_stdev == pytest.approx(sigma)
        residual = captured["arrays"][rnd] - captured["arrays"][rnd - 1] - mean
        assert np.std(residual) == pytest.approx(sigma, rel=0.05)
        assert abs(np.mean(residual)) < 5 * sigma / math.sqrt(DIM)
    spent = wrapper.privacy_spent()
    assert spent.num_releases == 3
    assert spent.epsilon == pytest.approx(epsilon_after(z, 3, study.privacy.delta, "gaussian"))
