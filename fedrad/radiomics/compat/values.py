"""Compat-mode extraction behind :func:`fedrad.radiomics.extract` (``compat: pyradiomics``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from fedrad.io.case import Case
from fedrad.radiomics.compat.extractor import CompatSettings, extract_pyradiomics
from fedrad.radiomics.compat.names import CLASS_FAMILIES, TEXTURE_NAMES, parse_column
from fedrad.radiomics.compat.params import compat_settings
from fedrad.radiomics.feature_value import FeatureValue
from fedrad.radiomics.settings import Settings


def settings_of(settings: Settings, label: int | None = None) -> CompatSettings:
    """The compat settings: the PyRadiomics parameter file's, else PyRadiomics' defaults."""
    params: dict[str, Any] = json.loads(settings.pyradiomics_params or "{}")
    if not params:
        params = {"setting": {"label": settings.label}}
    if label is not None:
        params = {**params, "setting": {**(params.get("setting") or {}), "label": int(label)}}
    return compat_settings(params, notices=[])


def _sitk_pair(case: Case) -> tuple[sitk.Image, sitk.Image]:
    image = sitk.GetImageFromArray(case.image)
    mask = sitk.GetImageFromArray(case.mask.astype(np.uint8))
    for item in (image, mask):
        item.SetSpacing(tuple(float(s) for s in case.spacing[::-1]))
        item.SetOrigin(case.origin)
        item.SetDirection(case.direction)
    return image, mask


def _ibsi_code(cls: str, feature: str) -> str:
    """The IBSI code of a texture feature whose definition PyRadiomics shares, else ``""``."""
    if cls not in TEXTURE_NAMES:
        return ""
    from fedrad.radiomics.families import family_module

    family, _, names = TEXTURE_NAMES[cls]
    codes = {name: code for name, code, *_ in family_module(family).FEATURES}
    return codes.get(names.get(feature, ""), "")


def compat_values(
    image: Any,
    mask: Any,
    settings: Settings,
    *,
    label: int | None = None,
    case_id: str | None = None,
) -> list[FeatureValue]:
    """PyRadiomics' values of one case as :class:`FeatureValue` with PyRadiomics' columns."""
    config = settings_of(settings, label)
    if isinstance(image, Case):
        image, mask = _sitk_pair(image)
        config = CompatSettings(**{**config.__dict__, "label": 1})
    elif isinstance(image, str | Path) and Path(image).is_dir():
        from fedrad.io.reading import load_case

        image, mask = _sitk_pair(load_case(image, mask, label=config.label, case_id=case_id))
        config = CompatSettings(**{**config.__dict__, "label": 1})
    found = extract_pyradiomics(image, mask, config, case_id=case_id or "case")
    values = []
    for column, value in found.items():
        image_type, cls, feature = parse_column(column) or ("original", "", column)
        values.append(
            FeatureValue(
                CLASS_FAMILIES[cls][0],
                feature,
                _ibsi_code(cls, feature),
                "",
                value,
                image_type,
                column,
            )
        )
    return values
