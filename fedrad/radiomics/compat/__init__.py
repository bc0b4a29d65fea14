"""PyRadiomics-compatible extraction (``compat: pyradiomics``).

fedrad computes IBSI features by default. This package reproduces PyRadiomics 3.x instead, for
sites that must match PyRadiomics feature tables or apply PyRadiomics-based models: PyRadiomics'
bin edges, first-order definitions, shape features, LoG and wavelet images and column names
(``original_glcm_Contrast``). Texture matrices are fedrad's own (the definitions coincide once
the grey levels are PyRadiomics'). Every difference from IBSI mode is listed in
``docs/compat.md``.
"""

from fedrad.radiomics.compat.extractor import extract_pyradiomics

__all__ = ["extract_pyradiomics"]
