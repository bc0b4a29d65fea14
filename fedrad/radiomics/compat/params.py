"""PyRadiomics parameter files in compat mode: what is reproduced, ignored or refused.

Reproduced: ``binWidth`` / ``binCount``, ``label``, ``voxelArrayShift``, ``gldm_a``,
``distances: [1]``, ``symmetricalGLCM: true``, the image types ``Original``, ``LoG`` (``sigma``)
and ``Wavelet`` (``wavelet``, ``level``, ``start_level``), and ``featureClass`` with or without
feature lists. Settings without effect on PyRadiomics' values here are ignored with a notice.
Everything else (resampling, normalisation, re-segmentation, ``force2D``, other distances,
``weightingNorm``, other image types, voxel-based extraction) raises
:class:`NotImplementedError` naming the setting: compat mode never silently computes something
PyRadiomics would not.
"""

from __future__ import annotations

from typing import Any

from fedrad.errors import SettingsError
from fedrad.radiomics.compat import firstorder, shape
from fedrad.radiomics.compat.extractor import ALL_CLASSES, CompatSettings
from fedrad.radiomics.compat.names import TEXTURE_NAMES

IGNORED = {
    "preCrop",
    "correctMask",
    "geometryTolerance",
    "additionalInfo",
    "enableCExtensions",
    "minimumROIDimensions",
    "minimumROISize",
    "padDistance",
    "label_channel",
    "interpolator",
}
#: Settings that keep their PyRadiomics default when given with it.
DEFAULTS: dict[str, Any] = {
    "distances": [1],
    "symmetricalGLCM": True,
    "force2D": False,
    "normalize": False,
    "resampledPixelSpacing": None,
    "weightingNorm": None,
}
IMAGE_TYPES = ("Original", "LoG", "Wavelet")


def class_features(cls: str) -> tuple[str, ...]:
    """PyRadiomics' default features of class ``cls``."""
    if cls == "shape":
        return shape.FEATURES
    if cls == "firstorder":
        return firstorder.FEATURES
    names = tuple(TEXTURE_NAMES[cls][2])
    return (*names, "MCC") if cls == "glcm" else names


def _classes(classes: Any) -> dict[str, tuple[str, ...] | None]:
    if classes is None:
        return dict.fromkeys(ALL_CLASSES)
    out: dict[str, tuple[str, ...] | None] = {}
    for cls, features in classes.items():
        if cls not in ALL_CLASSES:
            raise NotImplementedError(
                f"compat pyradiomics: featureClass {cls!r} is not reproduced "
                f"(supported: {', '.join(ALL_CLASSES)})"
            )
        if not features:
            out[cls] = None
            continue
        unknown = [f for f in features if f not in class_features(cls)]
        if unknown:
            raise SettingsError(
                f"featureClass {cls}: unknown feature(s) {', '.join(map(str, unknown))}; "
                f"{cls} has {', '.join(class_features(cls))}"
            )
        out[cls] = tuple(features)
    return out


def compat_settings(params: dict[str, Any], notices: list[str] | None = None) -> CompatSettings:
    """The :class:`CompatSettings` of a parsed PyRadiomics parameter mapping."""
    from fedrad.radiomics.pyradiomics_params import notice_text, report_notice

    if params.get("voxelSetting"):
        raise NotImplementedError("compat pyradiomics: voxel-based extraction is not reproduced")
    setting = dict(params.get("setting") or {})
    for key in sorted(set(setting) & IGNORED):
        report_notice(notice_text(key), notices)
        setting.pop(key)
    for key, default in DEFAULTS.items():
        if key in setting and setting.pop(key) != default:
            raise NotImplementedError(
                f"compat pyradiomics: setting {key!r} other than {default!r} is not reproduced"
            )
    known = {"binWidth", "binCount", "label", "voxelArrayShift", "gldm_a"}
    other = sorted(set(setting) - known)
    if other:
        raise NotImplementedError(
            f"compat pyradiomics: setting(s) {', '.join(other)} are not reproduced"
        )
    image_types = dict(params.get("imageType") or {"Original": {}})
    for kind in image_types:
        if kind not in IMAGE_TYPES:
            raise NotImplementedError(
                f"compat pyradiomics: imageType {kind!r} is not reproduced "
                f"(supported: {', '.join(IMAGE_TYPES)})"
            )
    if "binCount" in setting and "binWidth" in setting:
        raise SettingsError("give binWidth or binCount, not both")
    return CompatSettings(
        bin_width=float(setting.get("binWidth", 25)),
        bin_count=None if setting.get("binCount") is None else int(setting["binCount"]),
        label=int(setting.get("label", 1)),
        voxel_array_shift=float(setting.get("voxelArrayShift", 0)),
        gldm_a=int(setting.get("gldm_a", 0)),
        classes=_classes(params.get("featureClass")),
        image_types={k: dict(v or {}) for k, v in image_types.items()},
    )
