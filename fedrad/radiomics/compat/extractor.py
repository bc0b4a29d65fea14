"""One case in PyRadiomics-compatible mode: images, classes and PyRadiomics' column names.

PyRadiomics' order of work: shape on the original mask; then for every image type (Original,
each LoG sigma, each wavelet response, computed on the whole image) the image is cropped to the
mask's bounding box and every other enabled class computed. Columns read
``<image type>_<class>_<feature>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from fedrad.errors import InputError
from fedrad.radiomics.compat import binning, firstorder, shape, texture
from fedrad.radiomics.compat.images import log_images, wavelet_images

ALL_CLASSES: tuple[str, ...] = ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")


@dataclass(frozen=True)
class CompatSettings:
    """The PyRadiomics settings compat mode honours.

    ``classes`` maps an enabled class to ``None`` (all its default features) or the feature
    names to keep; ``image_types`` maps ``Original`` / ``LoG`` / ``Wavelet`` to their options.
    """

    bin_width: float = 25.0
    bin_count: int | None = None
    label: int = 1
    voxel_array_shift: float = 0.0
    gldm_a: int = 0
    classes: dict[str, tuple[str, ...] | None] = field(
        default_factory=lambda: dict.fromkeys(ALL_CLASSES)
    )
    image_types: dict[str, dict] = field(default_factory=lambda: {"Original": {}})


def _read(path: str | Path | sitk.Image, what: str, case_id: str) -> sitk.Image:
    if isinstance(path, sitk.Image):
        return path
    if not Path(path).is_file():
        raise InputError(f"{what} file not found: {path}", case_id=case_id)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read {what} {path}: {exc}", case_id=case_id) from None


def _derived(image: sitk.Image, settings: CompatSettings) -> Iterator[tuple[str, sitk.Image]]:
    for kind, options in settings.image_types.items():
        options = options or {}
        if kind == "Original":
            yield "original", image
        elif kind == "LoG":
            yield from log_images(image, list(options.get("sigma", [])))
        elif kind == "Wavelet":
            yield from wavelet_images(
                image,
                str(options.get("wavelet", "coif1")),
                int(options.get("level", 1)),
                int(options.get("start_level", 0)),
            )


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    return tuple(slice(lo, hi + 1) for lo, hi in zip(where.min(0), where.max(0), strict=True))


def _keep(values: dict[str, float], wanted: tuple[str, ...] | None) -> dict[str, float]:
    return values if wanted is None else {k: values[k] for k in wanted}


def extract_pyradiomics(
    image: str | Path | sitk.Image,
    mask: str | Path | sitk.Image,
    settings: CompatSettings | None = None,
    *,
    case_id: str = "case",
) -> dict[str, float]:
    """PyRadiomics' feature values of one case, keyed by PyRadiomics' column names."""
    settings = settings or CompatSettings()
    itk_image = _read(image, "image", case_id)
    itk_mask = _read(mask, "mask", case_id)
    roi = sitk.GetArrayFromImage(itk_mask) == settings.label
    if not roi.any():
        raise InputError(f"the mask holds no voxel with label {settings.label}", case_id=case_id)
    spacing = tuple(float(s) for s in itk_image.GetSpacing()[::-1])
    box = _bounding_box(roi)
    roi_box = roi[box]
    out: dict[str, float] = {}
    classes = settings.classes
    if "shape" in classes and "Original" in settings.image_types:
        values = shape.compute(roi_box, spacing)
        out.update({f"original_shape_{k}": v for k, v in _keep(values, classes["shape"]).items()})
    texture_classes = tuple(c for c in ALL_CLASSES[2:] if c in classes)
    for name, derived in _derived(itk_image, settings):
        array = sitk.GetArrayFromImage(derived)[box]
        grey = binning.discretise(array, roi_box, settings.bin_width, settings.bin_count)
        if "firstorder" in classes:
            values = firstorder.compute(
                array[roi_box], grey[roi_box], float(np.prod(spacing)), settings.voxel_array_shift
            )
            out.update(
                {
                    f"{name}_firstorder_{k}": v
                    for k, v in _keep(values, classes["firstorder"]).items()
                }
            )
        if texture_classes:
            prepared = texture.prepared_roi(case_id, grey, roi_box, spacing, settings.gldm_a)
            for cls, values in texture.compute(prepared, texture_classes).items():
                out.update({f"{name}_{cls}_{k}": v for k, v in _keep(values, classes[cls]).items()})
    return out
