"""Feature tables: long format (one row per value) and wide format (one row per case)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from fedrad.radiomics.feature_value import FeatureValue

LONG_COLUMNS = ("case_id", "family", "feature", "ibsi_code", "aggregation_code", "value")


def _fmt(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(float(value))


def long_rows(
    case_id: str, values: Iterable[FeatureValue], extras: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """One row per value: ``case_id, <extras>, family, feature, ibsi_code, aggregation_code, value``.

    Filtered images appear in ``family`` as ``"<image type>/<family>"`` (e.g. ``log-sigma-1.0mm/glcm``).
    """
    extras = dict(extras or {})
    rows = []
    for v in values:
        row = {"case_id": case_id, **extras}
        row.update(
            family=v.qualified_family,
            feature=v.name,
            ibsi_code=v.ibsi_code,
            aggregation_code=v.aggregation_code,
            value=_fmt(v.value),
        )
        rows.append(row)
    return rows


def wide_row(
    case_id: str, values: Iterable[FeatureValue], extras: Mapping[str, str] | None = None
) -> dict[str, str]:
    """One row for the case: ``case_id``, the extras, then one column per feature."""
    row = {"case_id": case_id, **dict(extras or {})}
    for v in values:
        row[v.column] = _fmt(v.value)
    return row


def write_csv(
    path: str | Path, rows: Sequence[Mapping[str, str]], first: Sequence[str] = ()
) -> None:
    """Write ``rows`` with the union of their keys as header (``first`` columns lead)."""
    header: list[str] = list(first)
    seen = set(header)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                header.append(key)
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)


def read_wide(path: str | Path) -> list[dict[str, str]]:
    """Rows of a wide feature table."""
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def column_families(column: str) -> tuple[str, ...]:
    """The fedrad families a wide-table feature column belongs to (empty when none).

    fedrad's columns start with the family (``glcm_contrast_3D_avg``), after the image type for
    filtered images (``log-sigma-1.0mm_glcm_...``, ``wavelet-LLH_stat_mean``); PyRadiomics' read
    ``<image type>_<class>_<feature>`` and their class maps to IBSI families
    (``original_firstorder_Mean`` -> ``stat``, ``ih``; ``original_gldm_...`` -> ``ngldm``).
    """
    from fedrad.radiomics.compat.names import column_families as pyradiomics_families
    from fedrad.radiomics.feature_value import FAMILIES

    parts = column.split("_")
    for part in parts[:2]:
        if part in FAMILIES and part != "diagnostics":
            return (part,)
    return pyradiomics_families(column)
