"""Local training with DP-SGD (Opacus): per-patient differential privacy of a site's update.

Each step (Abadi et al. 2016), with ``q = min(1, B / n)`` and ``C = max_grad_norm``:

1. Poisson sampling: every training row joins the batch ``S`` independently with probability
   ``q`` (batches vary in size and may be empty); one epoch is ``ceil(1 / q)`` steps
   (:func:`fedrad.privacy.planning.steps_for`).
2. Per-sample clipping: ``g_i <- g_i * min(1, C / ||g_i||)`` over *all* parameters of the model
   (flat clipping), so no patient moves the sum by more than ``C``.
3. Noise: ``g = (sum_{i in S} g_i + N(0, sigma^2 C^2 I)) / (q n)`` -- divided by the *expected*
   batch size ``q n = min(B, n)``, never by ``|S|``, which would leak ``|S|``.
4. The optimizer step (SGD or Adam) on ``g``, then L2 weight decay and the FedProx gradient
   ``mu (w - w_g)``, which do not depend on data and are added after the noise
   (:func:`fedrad.learn.training.run_epochs`).

This is Opacus' ``GradSampleModule`` (per-sample gradients), ``DPOptimizer`` (clipping and noise)
and ``UniformWithReplacementSampler`` (Poisson sampling): the three objects
``PrivacyEngine.make_private`` returns. They are assembled here directly because ``make_private``
derives the rate from the loader as ``1 / len(loader) = 1 / ceil(n / B)`` and the mean's
denominator as ``int(n / ceil(n / B))``, both below ``B / n`` whenever ``B`` does not divide ``n``;
fedrad accounts with ``q = B / n`` and divides by ``B``, so the run and its accounting agree
exactly. Accounting is the ledger's job (:mod:`fedrad.privacy.ledger`); Opacus' own accountant
is not used.

Determinism: ``seed`` seeds three independent generators (Poisson sampling, Gaussian noise,
dropout). In a deployment the seed must be the *site's secret* (or ``None``: fresh OS entropy):
whoever knows the seed can regenerate the noise and subtract it, and knows who was sampled,
which voids the guarantee. Simulations pass a fixed seed to be reproducible.

Cox models are refused (:class:`DPNotSupportedError`): the partial likelihood couples patients
through risk sets, so clipping per-sample gradients does not bound one patient's influence (see
:mod:`fedrad.learn.losses`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedrad.learn.models import model_dtype, model_task
from fedrad.learn.training import Target, loss_for, make_loader, make_optimizer, run_epochs
from fedrad.privacy.accountant import PrivacyError
from fedrad.privacy.planning import steps_for


class DPNotSupportedError(PrivacyError, NotImplementedError):
    """DP-SGD is not available for this model (Cox: per-patient gradients are not independent)."""


class _Rows(Dataset):
    """Rows of equally long tensors, fetched a whole batch at a time (``__getitems__``)."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


def _as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Collate function: ``_Rows.__getitems__`` already returns stacked tensors (maybe 0 rows)."""
    return batch


def _seeds(seed: int | None) -> tuple[int, int, int]:
    """Independent seeds for sampling, noise and dropout (from OS entropy when ``seed`` is None)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise PrivacyError(f"seed must be a non-negative integer or None, got {seed!r}")
    state = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
    return int(state[0] >> 1), int(state[1] >> 1), int(state[2] >> 1)


def poisson_loader(
    tensors: Sequence[torch.Tensor], sample_rate: float, steps: int, seed: int
) -> DataLoader:
    """Batches of rows drawn by Poisson sampling: each row in independently with ``sample_rate``.

    One pass yields ``steps`` batches; ``seed`` seeds the sampler. Batches may be empty (0 rows,
    same columns).
    """
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    sampler = UniformWithReplacementSampler(
        num_samples=int(tensors[0].shape[0]),
        sample_rate=sample_rate,
        generator=torch.Generator().manual_seed(seed),
        steps=steps,
    )
    return DataLoader(_Rows(tensors), batch_sampler=sampler, collate_fn=_as_batch)


def run_dp_sgd(
    model: nn.Module,
    tensors: Sequence[torch.Tensor],
    *,
    sample_rate: float,
    steps_per_epoch: int,
    expected_batch_size: float,
    epochs: int,
    lr: float,
    seed: int | None,
    noise_multiplier: float,
    max_grad_norm: float,
    proximal_mu: float = 0.0,
    global_params: Sequence[np.ndarray] | None = None,
    optimizer: str = "sgd",
    l2: float = 0.0,
) -> dict[str, float]:
    """The DP-SGD loop on prepared ``(x, y)`` tensors at an explicit rate; ``model`` trained in place.

    Steps 1-4 of the module docstring with ``q = sample_rate`` and the mean's denominator
    ``expected_batch_size``; :func:`train_local_private` (``q = B / n``, ``ceil(n / B)`` steps
    per epoch, denominator ``min(B, n)``) and the privacy audit (a rate fixed in advance, so that
    it does not depend on which canaries are in) both train through here. Returns
    :func:`fedrad.learn.training.run_epochs`' ``{"loss", "steps"}``.
    """
    sigma = _non_negative(noise_multiplier, "noise_multiplier")
    clip = _non_negative(max_grad_norm, "max_grad_norm")
    if clip == 0.0:
        raise PrivacyError("max_grad_norm must be positive (the per-patient clipping norm C)")
    if not (math.isfinite(expected_batch_size) and expected_batch_size > 0):
        raise PrivacyError(f"expected_batch_size must be positive, got {expected_batch_size!r}")
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    sampling_seed, noise_seed, torch_seed = _seeds(seed)
    loader = poisson_loader(tensors, sample_rate, steps_per_epoch, sampling_seed)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # Opacus' backward hooks fire on module outputs because inputs need no gradient: benign.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        torch.manual_seed(torch_seed)
        base = make_optimizer(model, optimizer, lr, l2)
        wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        try:
            dp_optimizer = DPOptimizer(
                base,
                noise_multiplier=sigma,
                max_grad_norm=clip,
                expected_batch_size=expected_batch_size,  # type: ignore[arg-type]
                loss_reduction="mean",
                generator=torch.Generator().manual_seed(noise_seed),
            )
            return run_epochs(
                wrapped, loader, dp_optimizer, loss_for(model), epochs, proximal_mu, global_params
            )
        finally:
            wrapped.cleanup()
            model.zero_grad(set_to_none=True)


def train_local_private(
    model: nn.Module,
    X: ArrayLike,
    target: Target,
    *,
    epochs: int,
    lr: float,
    batch_size: int | None,
    seed: int | None,
    noise_multiplier: float,
    max_grad_norm: float,
    proximal_mu: float = 0.0,
    global_params: Sequence[np.ndarray] | None = None,
    optimizer: str = "sgd",
    l2: float = 0.0,
) -> dict[str, Any]:
    """DP-SGD local training of ``model`` in place; returns what the round spent and its loss.

    Returns ``{"loss", "n", "steps", "sample_rate", "noise_multiplier"}``: the mean data loss of
    the last epoch's sampled rows, the number of training rows, the DP-SGD steps taken
    (``epochs * ceil(n / B)``), the Poisson rate ``min(1, B / n)`` and the noise multiplier -- so
    the round's cost is ``Mechanism(noise_multiplier, sample_rate, steps)``, exactly
    ``steps_for(n, batch_size, epochs).round_mechanism(noise_multiplier)``.

    ``model`` (the caller's module, never wrapped) holds the trained parameters afterwards and
    carries no Opacus hooks or attributes. ``noise_multiplier=0`` trains with clipping but without
    noise (not private; for tests and audits). Works with float32 and float64 models. The
    caller's global torch random state is unchanged. Binary models only; ``seed=None`` draws
    fresh OS entropy (see the module docstring on secret seeds).
    """
    if isinstance(target, tuple) or model_task(model) == "survival":
        raise DPNotSupportedError(
            "DP-SGD is not supported for Cox models: the partial likelihood couples patients "
            "through risk sets, so per-patient gradient clipping does not bound one patient's "
            "influence; use privacy mode 'client' or 'none' for survival studies"
        )
    tensors = make_loader(X, target, batch_size, 0, dtype=model_dtype(model)).dataset.tensors
    n = int(tensors[0].shape[0])
    schedule = steps_for(n, batch_size, epochs)
    result = run_dp_sgd(
        model,
        tensors,
        sample_rate=schedule.sample_rate,
        steps_per_epoch=schedule.steps_per_epoch,
        expected_batch_size=schedule.batch_size,
        epochs=epochs,
        lr=lr,
        seed=seed,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        proximal_mu=proximal_mu,
        global_params=global_params,
        optimizer=optimizer,
        l2=l2,
    )
    if int(result["steps"]) != schedule.steps:  # pragma: no cover - guards the accounting
        raise PrivacyError(f"took {result['steps']} steps, the schedule says {schedule.steps}")
    return {
        "loss": float(result["loss"]),
        "n": n,
        "steps": schedule.steps,
        "sample_rate": schedule.sample_rate,
        "noise_multiplier": float(noise_multiplier),
    }


def _non_negative(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PrivacyError(f"{what} must be a number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out >= 0):
        raise PrivacyError(f"{what} must be finite and non-negative, got {value!r}")
    return out
