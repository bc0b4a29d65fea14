"""Secure aggregation of site updates with Flower's SecAgg+ (``[secure_aggregation]``).

The site's side (a ClientApp mod) lives in :mod:`fedrad.federation.secagg_client`, the server's
(the round loop) in :mod:`fedrad.federation.secagg_server`; this module gathers their public API.

Wiring: the site's ClientApp gets ``mods=[<egress log mod>, *secure_aggregation_mods()]`` (the
egress log outermost, so it records the masked bytes that actually leave the site); the server
calls :func:`secure_fit` instead of a strategy's ``start`` when ``study.secure_aggregation.enabled``.
"""

from __future__ import annotations

from fedrad.federation.secagg_client import (
    SecureAggregationError,
    UpdateOutOfRangeError,
    check_update_range,
    is_secure_aggregation_message,
    secure_aggregation_mod,
    secure_aggregation_mods,
)
from fedrad.federation.secagg_server import (
    SECURE_STRATEGIES,
    TracedSecAggPlusWorkflow,
    aggregate_error_bound,
    build_workflow,
    secure_fit,
)

__all__ = [
    "SECURE_STRATEGIES",
    "SecureAggregationError",
    "TracedSecAggPlusWorkflow",
    "UpdateOutOfRangeError",
    "aggregate_error_bound",
    "build_workflow",
    "check_update_range",
    "is_secure_aggregation_message",
    "secure_aggregation_mod",
    "secure_aggregation_mods",
    "secure_fit",
]
