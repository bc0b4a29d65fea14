"""What travels between a site's ClientApp and the ServerApp, in one place.

Only model arrays and aggregate statistics ever leave a site. Every message's config carries the
study as JSON (so a SuperNode needs nothing but its site.toml), the agreed feature columns and the
federated standardisation (means and standard deviations from sites' moments).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from fedrad.federation.config import StudyConfig

#: ``query`` actions a site answers.
ACTION_CHECK = "check"
ACTION_MOMENTS = "moments"
ACTION_NEWTON = "newton"
ACTION_CALIBRATION = "calibration"

#: Config key of a calibration query: the recalibration coefficients ``(a, b, a0)`` to evaluate.
CALIBRATION_COEFFICIENTS = "calibration-coefficients"

#: What a site reports of its privacy spending with each training reply (sample-level DP).
PRIVACY_METRICS = ("epsilon", "epsilon-study", "noise-multiplier", "sample-rate", "delta")

#: Bins of the per-site score histograms used for pooled ROC / AUC.
SCORE_BINS = 200


def study_to_json(study: StudyConfig) -> str:
    return json.dumps(study.to_dict(), sort_keys=True)


def study_from_json(text: str) -> StudyConfig:
    data = json.loads(text)
    from fedrad.federation.config import (
        ModelConfig,
        PrivacyConfig,
        SecureAggregationConfig,
        TrainingConfig,
    )

    data["model"] = ModelConfig(**data["model"])
    data["training"] = TrainingConfig(**data["training"])
    data["privacy"] = PrivacyConfig(**data.get("privacy", {}))
    data["secure_aggregation"] = SecureAggregationConfig(**data.get("secure_aggregation", {}))
    data["feature_columns"] = tuple(data["feature_columns"])
    data["feature_families"] = tuple(data["feature_families"])
    return StudyConfig(**data)


@dataclass(frozen=True)
class Standardisation:
    """Global feature means and standard deviations (from sufficient statistics, never rows)."""

    features: list[str]
    mean: np.ndarray
    std: np.ndarray

    def apply(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.std

    def to_config(self) -> dict[str, object]:
        return {
            "features": list(self.features),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    @staticmethod
    def from_config(config) -> Standardisation:
        return Standardisation(
            features=list(config["features"]),
            mean=np.asarray(config["mean"], dtype=np.float64),
            std=np.asarray(config["std"], dtype=np.float64),
        )

    @staticmethod
    def from_moments(
        features: list[str], n: np.ndarray, total: np.ndarray, total_sq: np.ndarray
    ) -> Standardisation:
        """Pooled mean and (population) standard deviation from summed site moments."""
        n = np.maximum(n, 1.0)
        mean = total / n
        var = np.maximum(total_sq / n - mean**2, 0.0)
        std = np.sqrt(var)
        std[std < 1e-12] = 1.0  # a constant feature carries no information; leave it centred
        return Standardisation(features, mean, std)
