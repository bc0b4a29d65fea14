"""Feature extraction of one case: read, preprocess once, run every requested family.

This is the Python API the site client calls::

    from fedrad.radiomics import extract, Settings
    values = extract("ct.nii.gz", "gtv.nii.gz", Settings.preset("ibsi-config-c"))
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from fedrad.errors import RoiTooSmallError
from fedrad.io.case import Case
from fedrad.io.reading import case_from_images, load_case
from fedrad.radiomics.families import family_function
from fedrad.radiomics.feature_value import FeatureValue
from fedrad.radiomics.prepared import PreparedROI
from fedrad.radiomics.preprocess import prepare
from fedrad.radiomics.settings import Settings

ImageLike = str | Path | sitk.Image | Case
MaskLike = str | Path | sitk.Image | None

TEXTURE_FAMILIES = ("glcm", "glrlm", "glszm", "gldzm", "ngtdm", "ngldm")


def to_case(
    image: ImageLike,
    mask: MaskLike = None,
    *,
    label: int = 1,
    case_id: str | None = None,
    roi_name: str | None = None,
    series_uid: str | None = None,
) -> Case:
    """A :class:`Case` from file paths, SimpleITK images or an existing case.

    ``roi_name`` picks the ROI of a DICOM RTSTRUCT mask; ``series_uid`` one DICOM series of a folder.
    """
    if isinstance(image, Case):
        return image
    if isinstance(image, sitk.Image):
        if not isinstance(mask, sitk.Image):
            raise TypeError("a SimpleITK image needs a SimpleITK mask")
        return case_from_images(image, mask, label=label, case_id=case_id or "case")
    if mask is None:
        raise TypeError("an image path needs a mask path")
    return load_case(
        image, mask, label=label, case_id=case_id, roi_name=roi_name, series_uid=series_uid
    )  # type: ignore[arg-type]


def check_roi_size(roi: PreparedROI, family: str) -> None:
    """Raise :class:`RoiTooSmallError` when ``family`` cannot be computed on this ROI."""
    n = int(roi.int_mask.sum())
    if family in TEXTURE_FAMILIES and n < 2:
        raise RoiTooSmallError(
            f"the ROI has {n} voxel after preprocessing: {family.upper()} needs at least 2 "
            "neighbouring voxels; use a finer resampled_spacing or leave texture families out",
            case_id=roi.case_id,
        )


def compute_families(roi: PreparedROI, families: tuple[str, ...]) -> list[FeatureValue]:
    """Every feature of ``families`` on one prepared ROI (original or filtered image)."""
    values: list[FeatureValue] = []
    for family in families:
        check_roi_size(roi, family)
        found = family_function(family)(roi)
        if roi.image_type != "original":
            found = [
                FeatureValue(
                    v.family, v.name, v.ibsi_code, v.aggregation_code, v.value, roi.image_type
                )
                for v in found
            ]
        values.extend(found)
    return values


def diagnostic_values(roi: PreparedROI) -> list[FeatureValue]:
    """IBSI diagnostic values (image and ROI descriptors after each processing step)."""
    return [FeatureValue("diagnostics", k, "", "", float(v)) for k, v in roi.diagnostics.items()]


def extract(
    image: ImageLike,
    mask: MaskLike = None,
    settings: Settings | None = None,
    *,
    label: int | None = None,
    case_id: str | None = None,
    roi_name: str | None = None,
    series_uid: str | None = None,
) -> list[FeatureValue]:
    """Extract every feature ``settings`` ask for from one image and its ROI mask.

    Args:
        image: an image path (NIfTI, NRRD, MHA, DICOM folder), a SimpleITK image or a Case.
        mask: the mask path or SimpleITK image (omit when ``image`` is a Case).
        settings: processing and feature settings; defaults to :class:`Settings` ().
        label: mask label of the ROI; defaults to ``settings.label``.
        case_id: name used in error messages and tables.
        roi_name: ROI of a DICOM RTSTRUCT mask (optional when it holds one ROI).
        series_uid: the DICOM series to read when the image folder holds several.

    Returns:
        One :class:`FeatureValue` per feature, aggregation and image type.

    Raises:
        fedrad.errors.InputError: unreadable input, empty ROI, ROI too small, NaNs, ...
    """
    settings = settings or Settings()
    if settings.compat == "pyradiomics":
        from fedrad.radiomics.compat.values import compat_values

        return compat_values(image, mask, settings, label=label, case_id=case_id)
    case = to_case(
        image,
        mask,
        label=settings.label if label is None else label,
        case_id=case_id,
        roi_name=roi_name,
        series_uid=series_uid,
    )
    roi = prepare(case, settings)
    values = diagnostic_values(roi) if settings.diagnostics else []
    values += compute_families(roi, settings.families)
    if settings.filters:
        from fedrad.radiomics.filtered_images import filtered_rois

        for filtered in filtered_rois(case, settings, roi):
            values += compute_families(filtered, settings.filter_families)
    return values
