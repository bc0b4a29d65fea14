"""Same inputs, same bits: results do not depend on where numpy happened to put the data.

CPU kernels choose vectorised paths by the data's address; a view of a differently aligned
numpy buffer once changed the last bits of a prediction, and so a simulation's calibration
figures between two runs of the same scenario and seed.
"""

from __future__ import annotations

import numpy as np
import torch

from fedrad.federation.config import StudyConfig
from fedrad.learn.models import build_model, get_parameters, set_parameters
from fedrad.learn.training import predict, train_local


def _at_offset(X: np.ndarray, offset: int) -> np.ndarray:
    """``X`` copied into a buffer shifted by ``offset`` float64 elements (other alignment)."""
    buffer = np.empty(X.size + 16)
    out = buffer[offset : offset + X.size].reshape(X.shape)
    out[:] = X
    return out


def test_predictions_are_bit_identical_at_any_alignment() -> None:
    torch.set_num_threads(1)
    model = build_model(StudyConfig.from_dict({}).model_settings(), 37)
    X = np.random.default_rng(0).normal(size=(11, 37))
    outputs = {predict(model, _at_offset(X, k)).tobytes() for k in range(8)}
    assert len(outputs) == 1


def test_training_is_bit_identical_at_any_alignment() -> None:
    torch.set_num_threads(1)
    settings = StudyConfig.from_dict({}).model_settings()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 23))
    y = (X[:, 0] + rng.normal(size=40) > 0).astype(float)
    start = get_parameters(build_model(settings, 23))
    results = set()
    for k in range(4):
        model = build_model(settings, 23)
        set_parameters(model, start)
        train_local(model, _at_offset(X, k), y, epochs=3, lr=0.1, batch_size=8, seed=5)
        results.add(b"".join(a.tobytes() for a in get_parameters(model)))
    assert len(results) == 1
