"""Local training at a site: a plain DataLoader + optimizer + model loop that Opacus can wrap.

:func:`train_local` is what a Flower ClientApp calls each round. It is assembled from three public
pieces so that DP-SGD can slot in between them::

    model = build_model(cfg, p); set_parameters(model, global_arrays)
    loader = make_loader(X, target, batch_size, seed, dtype=model_dtype(model))
    optimizer = make_optimizer(model, "sgd", lr, l2)
    model, optimizer, loader = PrivacyEngine().make_private(module=model, optimizer=optimizer,
                                                          data_loader=loader, ...)
    run_epochs(model, loader, optimizer, loss_for(model), epochs, proximal_mu, global_arrays)

Objective per batch ``B`` (``w`` all parameters, ``w_g`` the global model of the round)::

    data_loss(B) + (l2 / 2) ||weights||^2 + (mu / 2) ||w - w_g||^2

The L2 penalty is applied as the optimizer's ``weight_decay`` on weight matrices only (biases and
intercepts are not penalised); the FedProx gradient ``mu (w - w_g)`` is added to ``p.grad`` after
the data gradient has been formed — after clipping and noise when the optimizer is an Opacus
``DPOptimizer`` — because it does not depend on data and must not be clipped. With plain
optimizers this is identical to adding the FedProx term to the loss.

Cox: the loss is the partial likelihood of the batch (risk sets within the batch), so use
``batch_size=None`` (full batch) unless the sample is large; its per-sample gradients are not
independent, see :mod:`fedrad.learn.losses` before combining it with DP-SGD.

Determinism: the batch order comes from a ``torch.Generator`` seeded with ``seed`` and dropout from
the global torch generator seeded with ``seed`` inside a forked random state, so the same inputs
and seed give the same parameters, and the caller's random state is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedrad.errors import InputError, SettingsError
from fedrad.learn._validation import as_binary, as_matrix, as_survival
from fedrad.learn.losses import bce_loss, cox_breslow_loss
from fedrad.learn.models import model_dtype, model_task, parameter_names

Target = ArrayLike | tuple[ArrayLike, ArrayLike]
LossFn = Callable[..., torch.Tensor]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


def owned_tensor(values: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    """A copy of ``values`` in memory torch allocates (aligned), never a view of a numpy buffer.

    CPU kernels pick their vectorised paths by the address of the data, so the same numbers in
    a differently aligned numpy buffer can give a result that differs in the last bits; copying
    makes the same inputs give the same bits (same seed, same numbers).
    """
    return torch.tensor(np.asarray(values), dtype=dtype)


def _as_tensors(X: ArrayLike, target: Target, dtype: torch.dtype) -> list[torch.Tensor]:
    x = as_matrix(X)
    if isinstance(target, tuple):
        if len(target) != 2:
            raise InputError("a survival target must be the pair (time, event)")
        time, event = as_survival(target[0], target[1], x.shape[0])
        arrays = [x, time, event]
    else:
        arrays = [x, as_binary(target, x.shape[0])]
    return [owned_tensor(a, dtype) for a in arrays]


def make_loader(
    X: ArrayLike,
    target: Target,
    batch_size: int | None,
    seed: int,
    dtype: torch.dtype = torch.float32,
) -> DataLoader:
    """A shuffling ``DataLoader`` over ``(x, y)`` or ``(x, time, event)`` rows.

    ``target`` is the binary label vector, or the pair ``(time, event)`` for survival.
    ``batch_size=None`` means one full batch per epoch (advised for Cox, whose risk sets are those of
    the batch). Shuffling uses a generator seeded with ``seed``.
    """
    tensors = _as_tensors(X, target, dtype)
    n = tensors[0].shape[0]
    if n == 0:
        raise InputError("the training table has no rows")
    if batch_size is None:
        batch_size = n
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SettingsError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(*tensors),
        batch_size=min(batch_size, n),
        shuffle=True,
        generator=generator,
    )


def make_optimizer(
    model: nn.Module, optimizer: str = "sgd", lr: float = 0.01, l2: float = 0.0
) -> torch.optim.Optimizer:
    """SGD or Adam with L2 ``weight_decay`` on weight matrices, none on biases.

    Weight decay ``l2`` adds ``l2 * w`` to the gradient, i.e. the penalty ``(l2 / 2) ||w||^2``
    (coupled L2 also for Adam, not AdamW's decoupled decay).
    """
    if optimizer not in OPTIMIZERS:
        raise SettingsError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not lr > 0:
        raise SettingsError(f"learning rate must be positive, got {lr!r}")
    if not l2 >= 0:
        raise SettingsError(f"l2 must be non-negative, got {l2!r}")
    weights = [p for name, p in model.named_parameters() if not name.endswith("bias")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    groups = [{"params": weights, "weight_decay": l2}]
    if biases:
        groups.append({"params": biases, "weight_decay": 0.0})
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    return torch.optim.Adam(groups, lr=lr)


def loss_for(model: nn.Module) -> LossFn:
    """The data loss matching the model: :func:`bce_loss` or :func:`cox_breslow_loss`."""
    return cox_breslow_loss if model_task(model) == "survival" else bce_loss


def _global_tensors(model: nn.Module, global_params: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Global arrays (in :func:`get_parameters` order) matched to ``model.parameters()`` order."""
    names = parameter_names(model)
    if len(global_params) != len(names):
        raise InputError(
            f"global_params has {len(global_params)} arrays, the model has {len(names)}"
        )
    by_name = dict(zip(names, global_params, strict=True))
    out = []
    for name, p in model.named_parameters():
        g = owned_tensor(by_name[name.removeprefix("_module.")], p.dtype)
        if g.shape != p.shape:
            raise InputError(
                f"global_params: {name} has shape {tuple(g.shape)}, expected {tuple(p.shape)}"
            )
        out.append(g)
    return out


def _add_proximal_grad(model: nn.Module, global_tensors: Sequence[torch.Tensor], mu: float) -> None:
    """``p.grad += mu (p - p_global)``: the gradient of ``(mu / 2) ||w - w_g||^2``."""
    with torch.no_grad():
        for p, g in zip(model.parameters(), global_tensors, strict=True):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(p.detach() - g, alpha=mu)


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    global_tensors: Sequence[torch.Tensor] | None,
    mu: float,
) -> None:
    """One optimizer step, adding the FedProx gradient after DP clipping/noise when under Opacus."""
    if global_tensors is None or mu == 0.0:
        optimizer.step()
        return
    pre_step = getattr(optimizer, "pre_step", None)
    original = getattr(optimizer, "original_optimizer", None)
    if pre_step is not None and original is not None:  # Opacus DPOptimizer
        if pre_step():
            _add_proximal_grad(model, global_tensors, mu)
            original.step()
        return
    _add_proximal_grad(model, global_tensors, mu)
    optimizer.step()


def run_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    epochs: int,
    proximal_mu: float = 0.0,
    global_params: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """Train for ``epochs`` passes; returns ``loss`` (mean data loss of the last epoch) and ``steps``.

    Batches are ``(x, *targets)``; ``loss_fn(model(x), *targets)``. An empty batch (possible with
    Opacus' Poisson sampling) contributes a zero loss and still takes its (noisy) step.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise SettingsError(f"epochs must be a positive integer, got {epochs!r}")
    if not proximal_mu >= 0:
        raise SettingsError(f"proximal_mu must be non-negative, got {proximal_mu!r}")
    global_tensors = None
    if proximal_mu > 0:
        if global_params is None:
            raise SettingsError("proximal_mu > 0 needs global_params (the round's global model)")
        global_tensors = _global_tensors(model, global_params)
    model.train()
    steps = 0
    epoch_loss, epoch_n = 0.0, 0
    for _ in range(epochs):
        epoch_loss, epoch_n = 0.0, 0
        for x, *targets in loader:
            optimizer.zero_grad(set_to_none=True)
            out = model(x)
            n_batch = int(x.shape[0])
            loss = loss_fn(out, *targets) if n_batch > 0 else out.sum() * 0.0
            loss.backward()
            _step(model, optimizer, global_tensors, proximal_mu)
            steps += 1
            epoch_loss += float(loss.detach()) * n_batch
            epoch_n += n_batch
    return {"loss": epoch_loss / max(epoch_n, 1), "steps": float(steps)}


def train_local(
    model: nn.Module,
    X: ArrayLike,
    target: Target,
    epochs: int = 1,
    lr: float = 0.01,
    batch_size: int | None = 32,
    seed: int = 0,
    proximal_mu: float = 0.0,
    global_params: Sequence[np.ndarray] | None = None,
    optimizer: str = "sgd",
    l2: float = 0.0,
) -> dict[str, Any]:
    """Train ``model`` in place on the site's table; returns ``{"loss", "n", "steps"}``.

    ``target`` is the binary label vector for binary models, or ``(time, event)`` for Cox.
    ``loss`` is the mean data loss (without penalties) over the last epoch's batches, weighted by
    batch size; ``n`` is the number of training rows (the FedAvg weight).
    """
    survival = isinstance(target, tuple)
    if survival != (model_task(model) == "survival"):
        raise InputError(
            f"a {model_task(model)} model needs "
            + ("a (time, event) target" if not survival else "a binary label vector")
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loader = make_loader(X, target, batch_size, seed, dtype=model_dtype(model))
        opt = make_optimizer(model, optimizer, lr, l2)
        result = run_epochs(model, loader, opt, loss_for(model), epochs, proximal_mu, global_params)
    return {"loss": result["loss"], "n": len(loader.dataset), "steps": int(result["steps"])}


def predict(model: nn.Module, X: ArrayLike) -> np.ndarray:
    """The model output per row (logit, or Cox log relative hazard), in eval mode (no dropout)."""
    x = owned_tensor(as_matrix(X), model_dtype(model))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
    return out.detach().cpu().numpy().astype(np.float64)


def predict_proba(model: nn.Module, X: ArrayLike) -> np.ndarray:
    """``P(y = 1 | x) = sigmoid(logit)`` for binary models."""
    if model_task(model) != "binary":
        raise InputError("predict_proba needs a binary model; use predict for Cox risk scores")
    eta = predict(model, X)
    return 0.5 * (1.0 + np.tanh(0.5 * eta))
