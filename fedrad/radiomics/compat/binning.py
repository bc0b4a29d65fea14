"""PyRadiomics' grey-level discretisation (``binWidth`` / ``binCount``).

Fixed bin width ``w``: edges ``lo, lo + w, ...`` with ``lo = min - (min mod w)`` (anchored at a
multiple of ``w``, not at the ROI minimum as IBSI), up to below ``max + 2w``; a flat ROI gets the
one bin ``[lo - 0.5, lo + 0.5)``. Fixed bin count ``n``: ``n`` equal bins between min and max, the
last edge raised by 1. A value ``x`` gets the level ``k`` with ``edge[k-1] <= x < edge[k]``
(1-based), so levels start at 1 and may skip empty bins.
"""

from __future__ import annotations

import numpy as np


def bin_edges(
    values: np.ndarray, bin_width: float = 25.0, bin_count: int | None = None
) -> np.ndarray:
    """The bin edges PyRadiomics uses for the ROI intensities ``values``."""
    if bin_count is not None:
        edges = np.histogram(values, int(bin_count))[1]
        edges[-1] += 1
        return edges
    minimum, maximum = values.min(), values.max()
    low = minimum - (minimum % bin_width)
    edges = np.arange(low, maximum + 2 * bin_width, bin_width)
    if len(edges) == 1:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def discretise(
    image: np.ndarray, mask: np.ndarray, bin_width: float = 25.0, bin_count: int | None = None
) -> np.ndarray:
    """Grey levels (int) of the voxels in ``mask``, 0 outside."""
    grey = np.zeros(image.shape, dtype=np.int32)
    values = image[mask]
    grey[mask] = np.digitize(values, bin_edges(values, bin_width, bin_count))
    return grey
