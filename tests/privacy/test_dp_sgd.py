"""DP-SGD local training with Opacus: schedule, determinism, noise, per-sample clipping, Cox."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrad.errors import FedradError, SettingsError
from fedrad.learn.models import build_model, get_parameters, parameter_names, set_parameters
from fedrad.learn.training import train_local
from fedrad.privacy.accountant import PrivacyError
from fedrad.privacy.dp_sgd import DPNotSupportedError, train_local_private
from fedrad.privacy.planning import steps_for

P = 5


def _data(n: int = 103, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, P))
    y = (X[:, 0] - X[:, 1] + rng.normal(size=n) > 0).astype(float)
    return X, y


def _train(model, X, y, **overrides):
    kwargs = dict(epochs=2, lr=0.5, batch_size=10, seed=7, noise_multiplier=1.0, max_grad_norm=1.0)
    kwargs.update(overrides)
    return train_local_private(model, X, y, **kwargs)


def _flat(model) -> np.ndarray:
    return np.concatenate([a.ravel() for a in get_parameters(model)])


@pytest.mark.parametrize(("n", "batch", "epochs"), [(103, 10, 2), (100, 30, 3), (40, 64, 2)])
def test_returned_schedule_matches_planning(n: int, batch: int, epochs: int) -> None:
    X, y = _data(n)
    out = _train(build_model({"model": "logistic"}, P), X, y, batch_size=batch, epochs=epochs)
    schedule = steps_for(n, batch, epochs)
    assert set(out) == {"loss", "n", "steps", "sample_rate", "noise_multiplier"}
    assert out["n"] == n
    assert out["steps"] == schedule.steps_per_round
    assert out["sample_rate"] == schedule.sample_rate
    assert out["noise_multiplier"] == 1.0
    assert np.isfinite(out["loss"])


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_parameters(kind: str, dtype: str) -> None:
    X, y = _data()
    config = {"model": kind, "dtype": dtype}
    a, b, c = (build_model(config, P) for _ in range(3))
    _train(a, X, y)
    _train(b, X, y)
    _train(c, X, y, seed=8)
    assert all(
        np.array_equal(u, v) for u, v in zip(get_parameters(a), get_parameters(b), strict=True)
    )
    assert not np.array_equal(_flat(a), _flat(c))
    assert all(p.dtype == getattr(torch, dtype) for p in a.parameters())


def test_noise_changes_the_update_and_scales_with_sigma() -> None:
    """One full-batch step (q = 1), same seed: the update differs from the noiseless one by
    ``lr * N(0, sigma^2 C^2) / n``, the same draws scaled by sigma."""
    X, y = _data(40)
    start = _flat(build_model({"model": "logistic", "dtype": "float64"}, P))
    moves = {}
    for sigma in (0.0, 1.0, 4.0):
        model = build_model({"model": "logistic", "dtype": "float64"}, P)
        _train(model, X, y, noise_multiplier=sigma, epochs=1, batch_size=40)
        moves[sigma] = _flat(model) - start
    noise_1 = moves[1.0] - moves[0.0]
    noise_4 = moves[4.0] - moves[0.0]
    assert np.linalg.norm(noise_1) > 1e-3
    np.testing.assert_allclose(noise_4, 4 * noise_1, rtol=1e-9, atol=1e-12)


def _outlier_label(model, x: np.ndarray) -> float:
    """The label that makes the outlier's gradient large: the opposite of the model's guess."""
    w, b = get_parameters(model)
    return 0.0 if float(x @ w[0] + b[0]) > 0 else 1.0


def test_clipping_is_per_sample_exactly() -> None:
    """One full-batch step (q = 1) without noise equals the hand-computed DP-SGD step:
    ``w <- w - lr * mean_i clip_C(g_i)`` with ``g_i = (sigmoid(eta_i) - y_i) [x_i, 1]``."""
    X, y = _data(30)
    model = build_model({"model": "logistic", "dtype": "float64"}, P)
    X[3] *= 1e6  # an outlier row
    y[3] = _outlier_label(model, X[3])
    w0, b0 = (a.copy() for a in get_parameters(model))
    lr, clip = 0.3, 1.5
    _train(model, X, y, epochs=1, batch_size=30, lr=lr, max_grad_norm=clip, noise_multiplier=0.0)
    eta = X @ w0[0] + b0[0]
    residual = 0.5 * (1.0 + np.tanh(0.5 * eta)) - y
    grads = residual[:, None] * np.hstack([X, np.ones((30, 1))])
    norms = np.linalg.norm(grads, axis=1)
    clipped = grads * np.minimum(1.0, clip / norms)[:, None]
    expected = np.concatenate([w0[0], b0]) - lr * clipped.mean(axis=0)
    assert norms[3] > 1e5 * clip  # the outlier's raw gradient is huge
    assert np.sum(norms < clip) > 5  # and some rows are not clipped at all
    np.testing.assert_allclose(_flat(model), expected, rtol=1e-5, atol=1e-9)


def test_outlier_cannot_move_the_model_more_than_lr_times_clip_per_step() -> None:
    lr, clip, epochs = 0.2, 1.0, 3
    private = build_model({"model": "logistic", "dtype": "float64"}, P)
    plain = build_model({"model": "logistic", "dtype": "float64"}, P)
    X = np.zeros((1, P))
    X[0, 0] = 1e6
    y = np.array([_outlier_label(private, X[0])])
    start = _flat(private)
    out = _train(
        private, X, y, epochs=epochs, batch_size=1, lr=lr, max_grad_norm=clip, noise_multiplier=0.0
    )
    assert out["steps"] == epochs  # q = 1: one step per epoch
    assert np.linalg.norm(_flat(private) - start) <= epochs * lr * clip * (1 + 1e-9)
    train_local(plain, X, y, epochs=epochs, lr=lr, batch_size=1, seed=7)
    assert np.linalg.norm(_flat(plain) - start) > 1e3 * epochs * lr * clip


def test_model_is_left_unwrapped_and_clean() -> None:
    X, y = _data()
    model = build_model({"model": "mlp"}, P)
    names = parameter_names(model)
    _train(model, X, y, proximal_mu=0.1, global_params=get_parameters(model))
    assert parameter_names(model) == names
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks
        assert not module._forward_pre_hooks
    for p in model.parameters():
        assert not hasattr(p, "grad_sample") and p.grad is None
    set_parameters(model, get_parameters(model))  # transport still works


def test_proximal_term_pulls_towards_the_global_model() -> None:
    X, y = _data()
    config = {"model": "logistic", "dtype": "float64"}
    free, held = build_model(config, P), build_model(config, P)
    start = _flat(free)
    _train(free, X, y, noise_multiplier=0.0)
    _train(held, X, y, noise_multiplier=0.0, proximal_mu=1.0, global_params=get_parameters(held))
    assert np.linalg.norm(_flat(held) - start) < np.linalg.norm(_flat(free) - start)


def test_empty_poisson_batches_are_fine() -> None:
    X, y = _data(20)
    out = _train(build_model({"model": "logistic"}, P), X, y, batch_size=1, epochs=3)
    assert out["sample_rate"] == pytest.approx(0.05)
    assert out["steps"] == 60
    assert np.isfinite(out["loss"])


def test_caller_random_state_is_untouched() -> None:
    X, y = _data()
    before = torch.random.get_rng_state()
    _train(build_model({"model": "mlp"}, P), X, y)
    assert torch.equal(before, torch.random.get_rng_state())


def test_seed_none_draws_fresh_randomness() -> None:
    X, y = _data()
    a, b = (build_model({"model": "logistic"}, P) for _ in range(2))
    _train(a, X, y, seed=None)
    _train(b, X, y, seed=None)
    assert not np.array_equal(_flat(a), _flat(b))


def test_cox_is_refused_with_a_reason() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, P))
    time, event = rng.exponential(size=30), (rng.random(30) < 0.7).astype(float)
    with pytest.raises(DPNotSupportedError, match="risk sets") as info:
        _train(build_model({"model": "cox"}, P), X, (time, event))
    assert isinstance(info.value, FedradError) and isinstance(info.value, NotImplementedError)


@pytest.mark.parametrize(
    "overrides",
    [{"noise_multiplier": -1.0}, {"max_grad_norm": 0.0}, {"max_grad_norm": float("nan")},
     {"seed": -3}],
)  # fmt: skip
def test_bad_privacy_settings_are_refused(overrides: dict) -> None:
    X, y = _data()
    with pytest.raises(PrivacyError):
        _train(build_model({"model": "logistic"}, P), X, y, **overrides)


def test_bad_batch_size_is_a_settings_error() -> None:
    X, y = _data()
    with pytest.raises(SettingsError, match="batch_size"):
        _train(build_model({"model": "logistic"}, P), X, y, batch_size=0)
