"""PyRadiomics feature names and the IBSI (fedrad) features they correspond to.

Columns of a PyRadiomics table read ``<image type>_<class>_<feature>``, e.g.
``original_glcm_Contrast`` or ``wavelet-LLH_firstorder_Mean``. :data:`CLASS_FAMILIES` maps each
PyRadiomics class to the fedrad families that hold its features (used to serve a study that asks
for families from a PyRadiomics table); :data:`TEXTURE_NAMES` maps each texture feature to the
fedrad family, IBSI feature and aggregation whose definition it shares.
"""

from __future__ import annotations

import re

from fedrad.radiomics.pyradiomics_params import FEATURE_CLASSES

#: PyRadiomics feature class -> fedrad families (a table column of that class serves them).
CLASS_FAMILIES: dict[str, tuple[str, ...]] = FEATURE_CLASSES

_GLCM = {
    "Autocorrelation": "autocorrelation",
    "ClusterProminence": "cluster_prominence",
    "ClusterShade": "cluster_shade",
    "ClusterTendency": "cluster_tendency",
    "Contrast": "contrast",
    "Correlation": "correlation",
    "DifferenceAverage": "difference_average",
    "DifferenceEntropy": "difference_entropy",
    "DifferenceVariance": "difference_variance",
    "Id": "inverse_difference",
    "Idm": "inverse_difference_moment",
    "Idmn": "normalised_inverse_difference_moment",
    "Idn": "normalised_inverse_difference",
    "Imc1": "first_measure_of_information_correlation",
    "Imc2": "second_measure_of_information_correlation",
    "InverseVariance": "inverse_variance",
    "JointAverage": "joint_average",
    "JointEnergy": "angular_second_moment",
    "JointEntropy": "joint_entropy",
    "MaximumProbability": "joint_maximum",
    "SumAverage": "sum_average",
    "SumEntropy": "sum_entropy",
    "SumSquares": "joint_variance",
}
_GLRLM = {
    "GrayLevelNonUniformity": "grey_level_non_uniformity",
    "GrayLevelNonUniformityNormalized": "normalised_grey_level_non_uniformity",
    "GrayLevelVariance": "grey_level_variance",
    "HighGrayLevelRunEmphasis": "high_grey_level_run_emphasis",
    "LongRunEmphasis": "long_runs_emphasis",
    "LongRunHighGrayLevelEmphasis": "long_run_high_grey_level_emphasis",
    "LongRunLowGrayLevelEmphasis": "long_run_low_grey_level_emphasis",
    "LowGrayLevelRunEmphasis": "low_grey_level_run_emphasis",
    "RunEntropy": "run_entropy",
    "RunLengthNonUniformity": "run_length_non_uniformity",
    "RunLengthNonUniformityNormalized": "normalised_run_length_non_uniformity",
    "RunPercentage": "run_percentage",
    "RunVariance": "run_length_variance",
    "ShortRunEmphasis": "short_runs_emphasis",
    "ShortRunHighGrayLevelEmphasis": "short_run_high_grey_level_emphasis",
    "ShortRunLowGrayLevelEmphasis": "short_run_low_grey_level_emphasis",
}
_GLSZM = {
    "GrayLevelNonUniformity": "grey_level_non_uniformity",
    "GrayLevelNonUniformityNormalized": "normalised_grey_level_non_uniformity",
    "GrayLevelVariance": "grey_level_variance",
    "HighGrayLevelZoneEmphasis": "high_grey_level_zone_emphasis",
    "LargeAreaEmphasis": "large_zone_emphasis",
    "LargeAreaHighGrayLevelEmphasis": "large_zone_high_grey_level_emphasis",
    "LargeAreaLowGrayLevelEmphasis": "large_zone_low_grey_level_emphasis",
    "LowGrayLevelZoneEmphasis": "low_grey_level_zone_emphasis",
    "SizeZoneNonUniformity": "zone_size_non_uniformity",
    "SizeZoneNonUniformityNormalized": "normalised_zone_size_non_uniformity",
    "SmallAreaEmphasis": "small_zone_emphasis",
    "SmallAreaHighGrayLevelEmphasis": "small_zone_high_grey_level_emphasis",
    "SmallAreaLowGrayLevelEmphasis": "small_zone_low_grey_level_emphasis",
    "ZoneEntropy": "zone_size_entropy",
    "ZonePercentage": "zone_percentage",
    "ZoneVariance": "zone_size_variance",
}
_GLDM = {
    "DependenceEntropy": "dependence_count_entropy",
    "DependenceNonUniformity": "dependence_count_non_uniformity",
    "DependenceNonUniformityNormalized": "normalised_dependence_count_non_uniformity",
    "DependenceVariance": "dependence_count_variance",
    "GrayLevelNonUniformity": "grey_level_non_uniformity",
    "GrayLevelVariance": "grey_level_variance",
    "HighGrayLevelEmphasis": "high_grey_level_count_emphasis",
    "LargeDependenceEmphasis": "high_dependence_emphasis",
    "LargeDependenceHighGrayLevelEmphasis": "high_dependence_high_grey_level_emphasis",
    "LargeDependenceLowGrayLevelEmphasis": "high_dependence_low_grey_level_emphasis",
    "LowGrayLevelEmphasis": "low_grey_level_count_emphasis",
    "SmallDependenceEmphasis": "low_dependence_emphasis",
    "SmallDependenceHighGrayLevelEmphasis": "low_dependence_high_grey_level_emphasis",
    "SmallDependenceLowGrayLevelEmphasis": "low_dependence_low_grey_level_emphasis",
}
_NGTDM = {
    "Busyness": "busyness",
    "Coarseness": "coarseness",
    "Complexity": "complexity",
    "Contrast": "contrast",
    "Strength": "strength",
}

#: PyRadiomics class -> (fedrad family, IBSI aggregation code, {PyRadiomics name: fedrad name}).
#: GLCM and GLRLM features are averaged over the 13 directions (``ITBB``) as PyRadiomics does.
TEXTURE_NAMES: dict[str, tuple[str, str, dict[str, str]]] = {
    "glcm": ("glcm", "ITBB", _GLCM),
    "glrlm": ("glrlm", "ITBB", _GLRLM),
    "glszm": ("glszm", "KOBO", _GLSZM),
    "gldm": ("ngldm", "KOBO", _GLDM),
    "ngtdm": ("ngtdm", "KOBO", _NGTDM),
}

_COLUMN = re.compile(
    r"^(?P<image>original|log-sigma-[0-9-]+-mm-[23]D|wavelet[0-9]*-[LH]+|square|squareroot|"
    r"logarithm|exponential|gradient|lbp-[23]D[^_]*)_(?P<cls>[a-zA-Z0-9]+)_(?P<feature>\w+)$"
)


def parse_column(column: str) -> tuple[str, str, str] | None:
    """``(image type, class, feature)`` of a PyRadiomics column name, else ``None``."""
    found = _COLUMN.match(column)
    if not found:
        return None
    return found["image"], found["cls"], found["feature"]


def column_families(column: str) -> tuple[str, ...]:
    """The fedrad families a PyRadiomics column belongs to (empty when it is not one)."""
    parsed = parse_column(column)
    if parsed is None:
        return ()
    return CLASS_FAMILIES.get(parsed[1], ())
