"""PyRadiomics' first-order features (``firstorder``), on the ROI intensities ``X``.

Differences from IBSI's statistics family: ``Kurtosis`` is ``mu4 / mu2^2`` (IBSI subtracts 3);
``Energy`` ``= sum (X + c)^2``, ``TotalEnergy`` ``= V_voxel * Energy`` and ``RootMeanSquared``
``= sqrt(Energy / N)`` add ``c = voxelArrayShift`` (default 0); ``Entropy`` and ``Uniformity``
are those of IBSI's intensity histogram (``log2(p + eps)``, on PyRadiomics' bins). Flat ROIs give
0 for skewness and kurtosis.
"""

from __future__ import annotations

import numpy as np

#: PyRadiomics' default first-order features, alphabetical as its tables list them.
FEATURES: tuple[str, ...] = (
    "10Percentile",
    "90Percentile",
    "Energy",
    "Entropy",
    "InterquartileRange",
    "Kurtosis",
    "Maximum",
    "MeanAbsoluteDeviation",
    "Mean",
    "Median",
    "Minimum",
    "Range",
    "RobustMeanAbsoluteDeviation",
    "RootMeanSquared",
    "Skewness",
    "TotalEnergy",
    "Uniformity",
    "Variance",
)


def _moment_ratio(x: np.ndarray, order: int) -> float:
    """``mu_order / mu_2^(order/2)``, 0 for a flat ROI."""
    centred = x - x.mean()
    m2 = np.mean(centred**2)
    if m2 == 0:
        return 0.0
    return float(np.mean(centred**order) / m2 ** (order / 2.0))


def compute(
    intensities: np.ndarray, grey: np.ndarray, voxel_volume: float, shift: float = 0.0
) -> dict[str, float]:
    """Every default first-order feature of the ROI ``intensities`` and their grey levels."""
    x = intensities.astype(np.float64)
    _, counts = np.unique(grey, return_counts=True)
    p = counts / counts.sum()
    p10, p90 = np.percentile(x, 10), np.percentile(x, 90)
    inner = x[(x >= p10) & (x <= p90)]
    energy = float(np.sum((x + shift) ** 2))
    return {
        "10Percentile": float(p10),
        "90Percentile": float(p90),
        "Energy": energy,
        "Entropy": float(-np.sum(p * np.log2(p + np.spacing(1)))),
        "InterquartileRange": float(np.percentile(x, 75) - np.percentile(x, 25)),
        "Kurtosis": _moment_ratio(x, 4),
        "Maximum": float(x.max()),
        "MeanAbsoluteDeviation": float(np.mean(np.abs(x - x.mean()))),
        "Mean": float(x.mean()),
        "Median": float(np.median(x)),
        "Minimum": float(x.min()),
        "Range": float(x.max() - x.min()),
        "RobustMeanAbsoluteDeviation": float(np.mean(np.abs(inner - inner.mean()))),
        "RootMeanSquared": float(np.sqrt(energy / x.size)),
        "Skewness": _moment_ratio(x, 3),
        "TotalEnergy": energy * voxel_volume,
        "Uniformity": float(np.sum(p**2)),
        "Variance": float(np.std(x) ** 2),
    }
