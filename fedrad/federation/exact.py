"""Exact mode: federated Newton-Raphson for logistic regression and (site-stratified) Cox.

Each site returns the gradient and Hessian of its log-likelihood at the current coefficients
(:func:`site_newton_stats`); the server sums them and takes a Newton step
(:func:`fedrad.learn.newton.newton_step`, with step halving). The result equals the pooled fit —
for Cox, the site-stratified partial likelihood — unlike FedAvg's approximation. The penalty
``[model] l2`` is added once by the server (intercept unpenalised).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from fedrad.federation import protocol
from fedrad.federation.config import StudyConfig
from fedrad.learn.cox import cox_site_stats
from fedrad.learn.newton import (
    SiteStats,
    logistic_site_stats,
    newton_init,
    newton_step,
    sum_site_stats,
)


def site_newton_stats(
    study: StudyConfig, X: np.ndarray, y: np.ndarray, time: np.ndarray | None, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """(gradient, Hessian, log-likelihood) of the site's training rows at ``beta`` (no penalty)."""
    if study.task == "binary":
        stats = logistic_site_stats(X, y, beta)
    else:
        stats = cox_site_stats(X, time, y, beta)
    return np.asarray(stats.grad), np.asarray(stats.hess), float(stats.loglik)


def n_coefficients(study: StudyConfig, n_features: int) -> int:
    """Logistic: intercept + one per feature; Cox: one per feature."""
    return n_features + (1 if study.task == "binary" else 0)


def coefficients_to_model_arrays(study: StudyConfig, beta: np.ndarray) -> list[np.ndarray]:
    """Newton coefficients as the torch model's arrays (``linear.weight`` [, ``linear.bias``])."""
    if study.task == "binary":
        return [beta[1:].reshape(1, -1).copy(), beta[:1].copy()]
    return [beta.reshape(1, -1).copy()]


def newton_fit(
    grid, study: StudyConfig, nodes: list[int], config: dict[str, Any], evaluation, run
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Run federated Newton-Raphson over ``nodes`` until convergence; evaluate the final model."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from fedrad.federation.server_app import StudyAbortedError, ask_sites

    features = list(config["features"])
    k = n_coefficients(study, len(features))
    mask = np.ones(k)
    if study.task == "binary":
        mask[0] = 0.0
    state = newton_init(np.zeros(k))
    history: list[dict[str, Any]] = []
    query = {**config, "action": protocol.ACTION_NEWTON}
    max_rounds = max(study.training.rounds, 100)
    while state.status == "running" and state.rounds < max_rounds:
        replies = ask_sites(grid, nodes, query, arrays=[state.beta])
        stats = []
        for reply in replies:
            if reply.has_error():
                raise StudyAbortedError(f"a site failed during a Newton step: {reply.error.reason}")
            n = reply.content["newton"]
            stats.append(
                SiteStats(
                    n["grad"].numpy(),
                    n["hess"].numpy(),
                    float(reply.content["stats"]["loglik"]),
                    float(reply.content["stats"]["num-examples"]),
                )
            )
        total = sum_site_stats(stats)
        state = newton_step(state, total, l2=study.model.l2, penalty_mask=mask)
        history.append({"round": state.rounds, "loglik": total.loglik, "status": state.status})
        run.save_checkpoint(state.rounds, [state.beta])
    if state.status != "converged":
        raise StudyAbortedError(
            f"Newton-Raphson did not converge ({state.status} after {state.rounds} rounds)"
        )
    beta = state.accepted if state.accepted is not None else state.beta
    arrays = coefficients_to_model_arrays(study, beta)
    messages = [
        Message(
            content=RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(config)}),
            message_type=MessageType.EVALUATE,
            dst_node_id=node,
        )
        for node in nodes
    ]
    replies = [r for r in grid.send_and_receive(messages, timeout=600) if not r.has_error()]
    evaluation([r.content for r in replies], "num-examples")
    history[-1].update(evaluation.rounds[-1])
    return arrays, history
