"""Translation of PyRadiomics parameter files into fedrad :class:`Settings`.

Hospitals often bring a PyRadiomics ``params.yaml``. fedrad reads it and computes the IBSI
definition of what it asks for. PyRadiomics' known deviations from IBSI are documented here and
**not** reproduced (values will differ from PyRadiomics where it deviates):

* ``binWidth``: PyRadiomics anchors bins at multiples of the bin width (lower edge
  ``floor(min / w) * w``); IBSI (and fedrad) anchor them at the re-segmentation lower bound, else
  at the ROI minimum. Grey-level indices, hence texture values, can shift.
* ``resampledPixelSpacing``: PyRadiomics aligns the new grid on the image corner and crops to the
  ROI's bounding box before resampling; fedrad uses the IBSI grid (centred, size rounded up).
  A ``0`` for z keeps the slice spacing (2D interpolation); 0 for x or y is not supported.
* ``interpolator``: ``sitkNearestNeighbor`` -> nearest, ``sitkLinear`` -> linear,
  ``sitkBSpline`` -> cubic spline. The mask is interpolated linearly and thresholded at 0.5
  (IBSI), whereas PyRadiomics resamples the mask with nearest neighbour.
* No intensity rounding after interpolation (PyRadiomics does not round; IBSI rounds CT).
* ``firstorder``: PyRadiomics' Kurtosis is IBSI kurtosis + 3 and its Energy / Total Energy /
  RMS add ``voxelArrayShift``; fedrad reports IBSI's excess kurtosis and unshifted energy and RMS.
  Its Entropy, Uniformity, MeanAbsoluteDeviation etc. on binned values belong to IBSI's
  intensity histogram family, so ``firstorder`` maps to fedrad's ``stat`` and ``ih`` families.
* ``shape`` maps to IBSI morphology (mesh-based volume and surface as IBSI defines them).
  ``shape2D`` has no IBSI counterpart and is refused.
* ``gldm`` maps to IBSI's NGLDM (``gldm_a`` -> coarseness alpha); PyRadiomics' GLDM equals NGLDM
  3D (``KOBO``) up to naming.
* GLCM/GLRLM: PyRadiomics averages features over the 13 directions (IBSI ``ITBB``); fedrad
  computes both ``ITBB`` and the merged ``IAZD``. ``weightingNorm`` has no IBSI definition and
  is ignored (the merged ``IAZD`` values are the closest IBSI features).
* ``force2D`` (with ``force2Ddimension: 0``) maps to IBSI's 2.5D aggregations (``JJUI``/``ZW7Z``
  and ``62GR``), as the PyRadiomics IBSI benchmark documents; other dimensions are refused.
* Feature lists inside ``featureClass`` (``glcm: [Contrast, Idm]``) are refused in IBSI mode
  (fedrad computes whole IBSI families); ``compat: pyradiomics`` honours them.
* ``imageType``: ``Original``, ``LoG`` (``sigma`` list, in mm) and ``Wavelet`` (``wavelet``,
  ``level``/``start_level``) are translated to IBSI chapter 2 filters. Square, SquareRoot,
  Logarithm, Exponential, Gradient and LBP have no IBSI definition and are refused.
* Voxel-based extraction (``voxelSetting``) is not supported.
* A top-level ``compat: pyradiomics`` (or ``fedrad extract --compat pyradiomics``) reproduces
  PyRadiomics instead of translating to IBSI (:mod:`fedrad.radiomics.compat`).
* Settings without effect on values (``preCrop``, ``correctMask``, ``geometryTolerance``,
  ``additionalInfo``, ``enableCExtensions``, ``minimumROIDimensions``, ``minimumROISize``,
  ``padDistance``) are accepted and ignored.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

from fedrad.errors import SettingsError
from fedrad.radiomics.settings import ALL_FAMILIES, Discretisation, FilterSpec, Settings

FEATURE_CLASSES: dict[str, tuple[str, ...]] = {
    "shape": ("morph",),
    "firstorder": ("stat", "ih"),
    "glcm": ("glcm",),
    "glrlm": ("glrlm",),
    "glszm": ("glszm",),
    "gldm": ("ngldm",),
    "ngtdm": ("ngtdm",),
}
INTERPOLATORS = {"sitkNearestNeighbor": "nearest", "sitkLinear": "linear", "sitkBSpline": "cubic"}
IGNORED_SETTINGS = {
    "preCrop",
    "correctMask",
    "geometryTolerance",
    "additionalInfo",
    "enableCExtensions",
    "minimumROIDimensions",
    "minimumROISize",
    "padDistance",
    "voxelArrayShift",
    "weightingNorm",
    "force2Ddimension",
    "resegmentShape",
    "label_channel",
}
UNSUPPORTED_IMAGE_TYPES = {
    "Square",
    "SquareRoot",
    "Logarithm",
    "Exponential",
    "Gradient",
    "LBP2D",
    "LBP3D",
}


class TranslationWarning(UserWarning):
    """A PyRadiomics setting was accepted but has no effect or an IBSI-different meaning."""


def _spacing(value: Any) -> tuple[tuple[float, float, float] | None, bool]:
    if value is None:
        return None, False
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise SettingsError(f"resampledPixelSpacing must be [x, y, z] in mm, got {value!r}")
    x, y, z = (float(v) for v in value)
    if x <= 0 or y <= 0:
        raise SettingsError("resampledPixelSpacing: 0 (keep) is supported for z only")
    if z <= 0:
        return (x, y, 1.0), True
    return (x, y, z), False


def _resegmentation(setting: dict[str, Any]) -> dict[str, Any]:
    rng = setting.get("resegmentRange")
    if rng is None:
        return {}
    mode = setting.get("resegmentMode", "absolute")
    if not isinstance(rng, list | tuple) or len(rng) not in (1, 2):
        raise SettingsError(f"resegmentRange must be [lower] or [lower, upper], got {rng!r}")
    if mode == "absolute":
        lo = float(rng[0])
        hi = float(rng[1]) if len(rng) == 2 else None
        return {"reseg_range": (lo, hi)}
    if mode == "sigma":
        lo = abs(float(rng[0]))
        hi = abs(float(rng[1])) if len(rng) == 2 else lo
        if lo != hi:
            raise SettingsError("resegmentMode sigma with asymmetric bounds is not supported")
        return {"outlier_sigma": lo}
    raise SettingsError(f"resegmentMode {mode!r} is not supported (use absolute or sigma)")


def _filters(image_types: dict[str, Any]) -> tuple[tuple[FilterSpec, ...], bool]:
    filters: list[FilterSpec] = []
    original = False
    for name, params in image_types.items():
        params = params or {}
        if name == "Original":
            original = True
        elif name == "LoG":
            sigmas = params.get("sigma")
            if not sigmas:
                raise SettingsError("imageType LoG needs a sigma list (mm)")
            filters += [FilterSpec("log", sigma_mm=float(s)) for s in sigmas]
        elif name == "Wavelet":
            start = int(params.get("start_level", 0))
            levels = int(params.get("level", 1))
            filters += [
                FilterSpec("wavelet", wavelet=str(params.get("wavelet", "coif1")), level=level)
                for level in range(start + 1, start + levels + 1)
            ]
        elif name in UNSUPPORTED_IMAGE_TYPES:
            raise SettingsError(f"imageType {name} has no IBSI definition and is not supported")
        else:
            raise SettingsError(f"unknown imageType {name!r}")
    return tuple(filters), original


def notice_text(key: str) -> str:
    """The one-line notice for an ignored PyRadiomics setting."""
    return f"PyRadiomics setting {key!r} is ignored (no effect on fedrad's values)"


def _check_feature_lists(classes: Any) -> None:
    listed = {cls: feats for cls, feats in (classes or {}).items() if feats}
    if listed:
        shown = "; ".join(f"{cls}: [{', '.join(map(str, f))}]" for cls, f in listed.items())
        raise SettingsError(
            f"featureClass lists single features ({shown}): fedrad's IBSI mode computes whole "
            "families; leave the lists empty, or use compat mode (--compat pyradiomics, or "
            "'compat: pyradiomics' in the file) to compute exactly those PyRadiomics features"
        )


def translate(
    params: dict[str, Any], *, name: str = "pyradiomics", notices: list[str] | None = None
) -> Settings:
    """Settings equivalent (in IBSI terms) to a parsed PyRadiomics parameter mapping.

    With a top-level ``compat: pyradiomics`` the settings reproduce PyRadiomics instead
    (:mod:`fedrad.radiomics.compat`). Ignored settings give one notice each: appended to
    ``notices`` when given, else issued as :class:`TranslationWarning`.
    """
    params = dict(params)
    compat = params.pop("compat", "ibsi")
    if compat == "pyradiomics":
        from fedrad.radiomics.compat.params import compat_settings

        compat_settings(params, notices=notices)  # refuses what compat mode cannot reproduce
        return Settings(
            name=name, compat="pyradiomics", pyradiomics_params=json.dumps(params, default=str)
        )
    if compat != "ibsi":
        raise SettingsError(f"unknown compat {compat!r}: use ibsi or pyradiomics")
    _check_feature_lists(params.get("featureClass"))
    if params.get("voxelSetting"):
        raise SettingsError("voxel-based extraction (voxelSetting) is not supported")
    setting = dict(params.get("setting") or {})
    changes: dict[str, Any] = {"name": name}

    if "binCount" in setting and "binWidth" in setting:
        raise SettingsError("give binWidth or binCount, not both")
    if "binCount" in setting:
        changes["discretisation"] = Discretisation("fbn", int(setting.pop("binCount")))
    else:
        changes["discretisation"] = Discretisation("fbs", float(setting.pop("binWidth", 25)))

    spacing, in_plane = _spacing(setting.pop("resampledPixelSpacing", None))
    if spacing is not None:
        changes["resampled_spacing"] = spacing
        changes["in_plane_only"] = in_plane
    interpolator = setting.pop("interpolator", "sitkBSpline")
    if interpolator not in INTERPOLATORS:
        raise SettingsError(
            f"interpolator {interpolator!r} is not supported: use one of {', '.join(INTERPOLATORS)}"
        )
    changes["interpolation"] = INTERPOLATORS[interpolator]

    if setting.pop("normalize", False):
        changes["normalisation"] = "zscore"
        changes["normalisation_scale"] = float(setting.pop("normalizeScale", 1))
        outliers = setting.pop("removeOutliers", None)
        changes["normalisation_outlier_sigma"] = None if outliers is None else float(outliers)
    else:
        setting.pop("normalizeScale", None)
        setting.pop("removeOutliers", None)

    changes.update(_resegmentation(setting))
    setting.pop("resegmentRange", None)
    setting.pop("resegmentMode", None)

    if "label" in setting:
        changes["label"] = int(setting.pop("label"))
    if setting.pop("force2D", False):
        if int(setting.get("force2Ddimension", 0)) != 0:
            raise SettingsError("force2D is supported for axial slices only (force2Ddimension: 0)")
        changes["texture_dimensions"] = ("2.5D",)
    distances = setting.pop("distances", None)
    if distances is not None:
        if len(distances) != 1:
            raise SettingsError(
                "several distances are not supported: give one, e.g. distances: [1]"
            )
        d = int(distances[0])
        changes.update(glcm_distance=d, ngtdm_distance=d, ngldm_distance=d)
    if "symmetricalGLCM" in setting:
        changes["glcm_symmetric"] = bool(setting.pop("symmetricalGLCM"))
    if "gldm_a" in setting:
        changes["ngldm_alpha"] = int(setting.pop("gldm_a"))

    for key in sorted(set(setting) & IGNORED_SETTINGS):
        report_notice(notice_text(key), notices)
        setting.pop(key)
    if setting:
        raise SettingsError(f"unknown PyRadiomics setting(s): {', '.join(sorted(setting))}")

    classes = params.get("featureClass")
    if classes is None:
        families: tuple[str, ...] = ALL_FAMILIES
    else:
        unknown = sorted(set(classes) - set(FEATURE_CLASSES))
        if unknown:
            raise SettingsError(
                f"featureClass {', '.join(unknown)} has no IBSI counterpart in fedrad"
            )
        wanted = {fam for cls in classes for fam in FEATURE_CLASSES[cls]}
        families = tuple(f for f in ALL_FAMILIES if f in wanted)
    filters, original = _filters(params.get("imageType") or {"Original": {}})
    changes["families"] = families if original else ()
    changes["filters"] = filters
    changes["filter_families"] = tuple(f for f in families if f not in ("morph", "loc", "ivh"))
    changes["pyradiomics_params"] = json.dumps(params, default=str)
    return Settings(**changes)


def report_notice(text: str, notices: list[str] | None) -> None:
    """Append ``text`` to ``notices`` (once), or warn when no list is given (API callers)."""
    if notices is None:
        warnings.warn(text, TranslationWarning, stacklevel=3)
    elif text not in notices:
        notices.append(text)


_SHOWN: set[str] = set()


def print_notices(notices: list[str]) -> None:
    """Print each notice as one plain line on standard error, once per process."""
    for text in notices:
        if text not in _SHOWN:
            _SHOWN.add(text)
            print(text, file=sys.stderr)
