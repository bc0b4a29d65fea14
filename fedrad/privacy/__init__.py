"""Site-side differential privacy: accounting, planning, the site's ledger, DP-SGD and its audit.

- :mod:`~fedrad.privacy.accountant`: :class:`Mechanism` and :func:`epsilon` (Opacus PRV / RDP).
- :mod:`~fedrad.privacy.planning`: :func:`steps_for` (Poisson schedule) and :func:`plan_noise`.
- :mod:`~fedrad.privacy.ledger`: :class:`PrivacyLedger`, the site's persistent spending record.
- :mod:`~fedrad.privacy.dp_sgd`: :func:`train_local_private` (Opacus DP-SGD local training).
- :mod:`~fedrad.privacy.audit`: :func:`audit_epsilon`, a one-run empirical lower bound on epsilon.

Importing this package is light: Opacus and torch load only when a computation needs them
(``train_local_private`` and ``audit_epsilon`` are imported on first access).
"""

from __future__ import annotations

from typing import Any

from fedrad.privacy.accountant import Mechanism, PrivacyError, epsilon
from fedrad.privacy.ledger import (
    LedgerCorruptError,
    LedgerEntry,
    PrivacyBudgetExceeded,
    PrivacyLedger,
)
from fedrad.privacy.planning import StepSchedule, plan_noise, steps_for

_LAZY = {
    "train_local_private": "fedrad.privacy.dp_sgd",
    "DPNotSupportedError": "fedrad.privacy.dp_sgd",
    "audit_epsilon": "fedrad.privacy.audit",
    "AuditResult": "fedrad.privacy.audit",
}

__all__ = [
    "AuditResult",
    "DPNotSupportedError",
    "LedgerCorruptError",
    "LedgerEntry",
    "Mechanism",
    "PrivacyBudgetExceeded",
    "PrivacyError",
    "PrivacyLedger",
    "StepSchedule",
    "audit_epsilon",
    "epsilon",
    "plan_noise",
    "steps_for",
    "train_local_private",
]


def __getattr__(name: str) -> Any:
    """Import the torch-heavy members on first access."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedrad.privacy' has no attribute {name!r}")
