"""PyRadiomics' texture classes (GLCM, GLRLM, GLSZM, GLDM, NGTDM) from fedrad's matrices.

Given PyRadiomics' grey levels (:mod:`fedrad.radiomics.compat.binning`), fedrad's IBSI texture
definitions give PyRadiomics' values: GLCM and GLRLM averaged over the 13 directions (IBSI
``ITBB``), GLSZM, NGTDM and GLDM (= IBSI NGLDM) on one 3D matrix. Only ``MCC`` (maximal
correlation coefficient) has no IBSI counterpart and is computed here.
"""

from __future__ import annotations

import numpy as np

from fedrad.radiomics.compat.names import TEXTURE_NAMES
from fedrad.radiomics.families import family_function
from fedrad.radiomics.families.glcm import glcm_volume
from fedrad.radiomics.families.texture_directions import padded_roi
from fedrad.radiomics.prepared import PreparedROI
from fedrad.radiomics.settings import Discretisation, Settings


def prepared_roi(
    case_id: str,
    grey: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    alpha: int,
) -> PreparedROI:
    """A fedrad ROI holding PyRadiomics' grey levels (cropped to the mask's bounding box)."""
    settings = Settings(
        name="pyradiomics-compat",
        discretisation=Discretisation("none"),
        texture_dimensions=("3D",),
        ngldm_alpha=alpha,
    )
    return PreparedROI(
        case_id=case_id,
        spacing=spacing,
        image=grey.astype(np.float64),
        morph_mask=mask,
        int_mask=mask,
        grey=grey,
        n_grey=int(grey.max()),
        grey_lower_bound=1.0,
        bin_width=1.0,
        margin=(0, 0, 0),
        origin_index=(0, 0, 0),
        settings=settings,
    )


def maximal_correlation_coefficient(grey: np.ndarray, n_grey: int) -> float:
    """PyRadiomics ``MCC``: ``sqrt`` of the second largest eigenvalue of ``Q``, mean over angles.

    ``Q_ij = sum_k p(i,k) p(j,k) / (p_x(i) p_y(k) + eps)`` on each direction's normalised
    symmetric GLCM, restricted to the grey levels present in the ROI; 1 for a single level.
    """
    present = np.unique(grey[grey > 0]) - 1
    if present.size < 2:
        return 1.0
    eps = np.spacing(1)
    counts = glcm_volume(padded_roi(grey, pad=1), n_grey, 1)[:, present][:, :, present]
    counts = counts[counts.sum(axis=(1, 2)) > 0]
    p = counts / counts.sum(axis=(1, 2))[:, None, None]
    px = p.sum(axis=2)
    py = p.sum(axis=1)
    q = np.einsum("dik,djk->dij", p, p / (px[:, :, None] * py[:, None, :] + eps))
    eig = np.sort(np.linalg.eigvals(q), axis=1)
    return float(np.mean(np.sqrt(eig[:, -2])).real)


def compute(roi: PreparedROI, classes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """``{class: {PyRadiomics feature: value}}`` for the texture ``classes``."""
    out: dict[str, dict[str, float]] = {}
    for cls in classes:
        family, aggregation, names = TEXTURE_NAMES[cls]
        found = {
            v.name: v.value
            for v in family_function(family)(roi)
            if v.aggregation_code == aggregation
        }
        values = {py: float(found[ibsi]) for py, ibsi in names.items()}
        if cls == "glcm":
            values["MCC"] = maximal_correlation_coefficient(roi.grey, roi.n_grey)
        out[cls] = dict(sorted(values.items()))
    return out
