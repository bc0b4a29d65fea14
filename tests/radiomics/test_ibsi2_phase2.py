"""IBSI chapter 2, phase 2: intensity statistics of filtered images of the IBSI CT phantom.

Every implemented configuration (no filter, mean, LoG, Laws, separable wavelets; 2D "A" and 3D "B") is
checked against every row of the IBSI-2 reference table by the IBSI rule (3 significant figures,
absolute tolerance). The reference table names features by MIRP tag (``stat_mean``, ...); the
IBSI codes the statistics family reports are matched through the IBSI-1 reference table, which
holds both.
"""

from __future__ import annotations

import csv
from functools import cache

import pytest

from fedrad.io.case import Case
from fedrad.io.reading import load_case
from fedrad.radiomics.families import family_function
from fedrad.radiomics.filtered_images import filtered_rois
from fedrad.radiomics.filters.ibsi2 import IMPLEMENTED, NOT_IMPLEMENTED, phase2_settings
from fedrad.radiomics.prepared import PreparedROI
from fedrad.radiomics.preprocess import prepare
from tests.conftest import CT_PHANTOM, IBSI, SHARED_DATA, require_shared
from tests.radiomics.ibsi_reference import ReferenceRow, agrees

PHASE2_CSV = (
    SHARED_DATA / "ibsi2_filter_phantoms" / "reference_values" / "ibsi_2_reference_values.csv"
)
IBSI1_CSV = IBSI / "reference_values" / "ibsi1_reference_values.csv"


@cache
def _code_of_tag() -> dict[str, str]:
    """MIRP tag (``stat_mean``) -> IBSI code (``Q4LE``) of the intensity statistics."""
    with require_shared(IBSI1_CSV).open(newline="") as fh:
        return {
            r["mirp_tag"]: r["ibsi_code"]
            for r in csv.DictReader(fh)
            if r["family"] == "intensity-based statistics"
        }


@cache
def _reference() -> dict[str, tuple[ReferenceRow, ...]]:
    """Phase-2 reference rows per configuration id; rows without a consensus value are left out."""
    codes = _code_of_tag()
    rows: dict[str, list[ReferenceRow]] = {}
    with require_shared(PHASE2_CSV).open(newline="") as fh:
        for r in csv.DictReader(fh, delimiter=";"):
            if r["consensus_value"] == "":
                continue
            rows.setdefault(r["filter_id"], []).append(
                ReferenceRow(
                    data_set=r["filter_id"],
                    family="stat",
                    feature_name=r["feature"],
                    ibsi_code=codes[r["feature_tag"]],
                    aggregation_code="DHQ4",
                    mirp_tag=r["feature_tag"],
                    value=float(r["consensus_value"]),
                    tolerance=float(r["tolerance"]),
                )
            )
    return {k: tuple(v) for k, v in rows.items()}


@cache
def _ct_case() -> Case:
    image = require_shared(CT_PHANTOM / "nifti" / "phantom.nii.gz")
    mask = require_shared(CT_PHANTOM / "nifti" / "mask.nii.gz")
    return load_case(image, mask, case_id="ibsi_ct_phantom")


@cache
def _unfiltered(variant: str) -> PreparedROI:
    """The prepared (interpolated, re-segmented) ROI shared by every filter of a variant."""
    return prepare(_ct_case(), phase2_settings(f"1.{variant}"))


def _response_roi(config_id: str) -> PreparedROI:
    filter_id, variant = config_id.split(".")
    original = _unfiltered(variant)
    if filter_id == "1":
        return original
    rois = list(filtered_rois(_ct_case(), phase2_settings(config_id), original))
    assert len(rois) == 1
    return rois[0]


CONFIGS = [
    pytest.param(f"{f}.{v}", marks=[pytest.mark.slow] if v == "B" else [])
    for f in IMPLEMENTED
    for v in ("A", "B")
]


@pytest.mark.parametrize("config_id", CONFIGS)
def test_phase2_intensity_statistics_match_reference(config_id: str) -> None:
    rows = _reference().get(config_id, ())
    assert len(rows) >= 17, f"reference table has {len(rows)} rows for {config_id}"
    roi = _response_roi(config_id)
    computed = {v.ibsi_code: v.value for v in family_function("stat")(roi)}
    problems = []
    for row in rows:
        got = computed.get(row.ibsi_code)
        if got is None:
            problems.append(f"{row.feature_name} [{row.ibsi_code}]: not computed")
        elif not agrees(got, row):
            problems.append(
                f"{row.feature_name} [{row.ibsi_code}]: got {got:.6g}, "
                f"reference {row.value:g} +- {row.tolerance:g}"
            )
    assert problems == [], f"{config_id} ({roi.image_type}):\n" + "\n".join(problems)


def test_response_maps_keep_the_unfiltered_masks() -> None:
    original = _unfiltered("A")
    roi = _response_roi("3.A")
    assert roi.int_mask is original.int_mask and roi.morph_mask is original.morph_mask
    assert roi.image.shape == original.image.shape and roi.origin_index == original.origin_index
    assert roi.image_type == "log-sigma-1.5mm-2D"


@pytest.mark.parametrize("filter_id", sorted(NOT_IMPLEMENTED))
def test_unimplemented_configurations_say_so(filter_id: str) -> None:
    for variant in ("A", "B"):
        with pytest.raises(NotImplementedError, match=NOT_IMPLEMENTED[filter_id]):
            phase2_settings(f"{filter_id}.{variant}")
