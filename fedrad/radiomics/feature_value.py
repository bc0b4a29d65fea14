"""One computed feature value, labelled with its IBSI feature and aggregation codes."""

from __future__ import annotations

from dataclasses import dataclass

# IBSI aggregation codes (IBSI reference manual, section 3.1) and fedrad's short labels for them.
AGGREGATION_LABELS: dict[str, str] = {
    "DHQ4": "",  # 3D by definition (non-texture families)
    "BTW3": "2D_avg",  # 2D, features averaged over slices and directions
    "SUJT": "2D_smrg",  # 2D, directions merged per slice, features averaged over slices
    "JJUI": "2.5D_avg",  # 2.5D, matrices merged over slices per direction, averaged over directions
    "ZW7Z": "2.5D_mrg",  # 2.5D, one matrix merged over slices and directions
    "ITBB": "3D_avg",  # 3D, features averaged over the 13 directions
    "IAZD": "3D_mrg",  # 3D, one matrix merged over the 13 directions
    "8QNN": "2D",  # zone/difference/dependence matrices per slice, features averaged over slices
    "62GR": "2.5D",  # one matrix merged over slices
    "KOBO": "3D",  # one 3D matrix
}

# Short family names used in column names, in IBSI chapter order.
FAMILIES: tuple[str, ...] = (
    "diagnostics",
    "morph",
    "loc",
    "stat",
    "ih",
    "ivh",
    "glcm",
    "glrlm",
    "glszm",
    "gldzm",
    "ngtdm",
    "ngldm",
)


@dataclass(frozen=True, slots=True)
class FeatureValue:
    """A single feature value.

    Attributes:
        family: short family name (see :data:`FAMILIES`), e.g. ``"glcm"``.
        name: snake_case of the IBSI feature name, e.g. ``"joint_maximum"``.
        ibsi_code: IBSI permanent feature identifier, e.g. ``"GYBY"`` (empty for diagnostics).
        aggregation_code: IBSI aggregation code, e.g. ``"ITBB"``; ``"DHQ4"`` for non-texture
            families; empty for diagnostics.
        value: the number (``nan`` where the feature is undefined for this ROI).
        image_type: ``"original"`` or a filtered image name such as ``"log-sigma-1.0mm"``.
        column_name: the wide-table column when it is not fedrad's (compat mode gives
            PyRadiomics' ``original_glcm_Contrast``); empty for fedrad's naming.
    """

    family: str
    name: str
    ibsi_code: str
    aggregation_code: str
    value: float
    image_type: str = "original"
    column_name: str = ""

    @property
    def qualified_family(self) -> str:
        """Family prefixed by the image type for filtered images: ``"wavelet-LLH/glcm"``."""
        if self.image_type == "original":
            return self.family
        return f"{self.image_type}/{self.family}"

    @property
    def column(self) -> str:
        """Column name in the wide table, e.g. ``"glcm_joint_maximum_3D_avg"``."""
        if self.column_name:
            return self.column_name
        label = AGGREGATION_LABELS.get(self.aggregation_code, self.aggregation_code)
        parts = [] if self.image_type == "original" else [self.image_type]
        parts += [self.family, self.name]
        if label:
            parts.append(label)
        return "_".join(parts)
