"""The final model's calibration slope and intercept across sites (federated Newton-Raphson).

After the last round the ServerApp asks every site, over a few ``calibration`` queries, for the
nine sums of :mod:`fedrad.learn.federated_calibration` at the current recalibration coefficients,
adds them up in site order and steps until the fit converges. The result equals the fit on the
pooled held-out predictions. A site that fails to answer leaves the calibration ``nan`` (with the
reason): the study's other results are kept.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from fedrad.errors import FedradError, InputError
from fedrad.federation import protocol

log = logging.getLogger("fedrad.server")


class CalibrationQueryError(FedradError):
    """A site did not answer a calibration exchange (or sent a malformed answer)."""


def federated_calibration(
    grid: Grid,
    nodes: list[int],
    config: dict[str, Any],
    arrays: list[np.ndarray],
    *,
    site_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """``calibration_slope``, ``calibration_intercept`` and ``calibration_exchanges`` of the model
    ``arrays`` on the held-out cases of the sites ``nodes``; both ``nan`` (and
    ``calibration_error``) when a site fails."""
    from fedrad.federation.server_app import ask_sites
    from fedrad.learn.federated_calibration import (
        N_STATISTICS,
        check_statistics,
        fit_calibration,
    )

    names = site_names or {}

    def query(coefficients: np.ndarray) -> np.ndarray:
        replies = ask_sites(
            grid,
            nodes,
            {
                **config,
                "action": protocol.ACTION_CALIBRATION,
                protocol.CALIBRATION_COEFFICIENTS: [float(c) for c in coefficients],
            },
            arrays=arrays,
        )
        if len(replies) != len(nodes):
            raise CalibrationQueryError(
                f"{len(nodes) - len(replies)} of {len(nodes)} site(s) did not answer in time"
            )
        total = np.zeros(N_STATISTICS)
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            site = names.get(node, f"node {node}")
            if reply.has_error():
                raise CalibrationQueryError(f"site {site}: {reply.error.reason}")
            try:
                total = total + check_statistics(reply.content["calibration"]["stats"].numpy())
            except (KeyError, InputError) as exc:
                raise CalibrationQueryError(f"site {site} sent a malformed answer: {exc}") from exc
        return total

    try:
        return fit_calibration(query, max_iter=50)
    except CalibrationQueryError as exc:
        log.warning("calibration not computed: %s", exc)
        return {
            "calibration_slope": float("nan"),
            "calibration_intercept": float("nan"),
            "calibration_error": str(exc),
        }


__all__ = ["CalibrationQueryError", "federated_calibration"]
