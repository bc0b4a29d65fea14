"""Real images as a simulated federation: one virtual site per group of a real cohort.

Source ``ibsi_sts``: the IBSI soft-tissue sarcoma validation set (51 patients, FDG-PET and T1 MRI
NIfTI with tumour masks; ``cases.csv`` holds one row per patient with the lung-metastasis label and
the MR scanner vendor). Each MR vendor becomes a site: a folder ``RUN_DIR/sites/<vendor>/`` with a
``site.toml`` and a ``manifest.csv`` (``case_id,image,mask,lung_metastasis``) whose image and mask
paths point at the data where it lies (nothing is copied). The site then extracts its features as a
hospital would (with its feature cache).

Modalities: ``pet`` (``PET_image``/``PET_mask``), ``mri`` (``MR_T1_image``/``MR_T1_mask``) or
``both``: each site extracts both images of every case with the study's settings and joins them
into one feature table whose columns are prefixed ``pet_`` and ``mri_`` (a case lacking either is
left out). The study's feature families are applied before prefixing, so the study that runs on
the joined tables selects no further (its ``feature_families`` become empty).

Groups with fewer than ``min_site_cases`` cases (default: the study's ``min_cases``) or a single
class cannot form a site; their cases are left out and listed in :attr:`RealCohort.left_out`
(in ``ibsi_sts``: two patients whose MR was exported through Varian ARIA, vendor unknown, both
without metastasis).

Scenario keys (``[cohort]``)::

    source = "ibsi_sts"
    data = "../../../shared/data/ibsi_sts"   # relative to the scenario file, or absolute
    modality = "pet"                         # pet, mri or both
    min_site_cases = 5                       # optional
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrad.errors import InputError
from fedrad.federation.config import ConfigError, SiteConfig, StudyConfig

SOURCES = ("ibsi_sts",)
MODALITIES = ("pet", "mri", "both")
#: Image and mask file names of each modality in a ``STS_xxx`` patient folder.
MODALITY_FILES = {
    "pet": ("PET_image.nii.gz", "PET_mask.nii.gz"),
    "mri": ("MR_T1_image.nii.gz", "MR_T1_mask.nii.gz"),
}
CASES_FILE = "cases.csv"
CASE_COLUMN = "patient_id"
LABEL_COLUMN = "lung_metastasis"
SITE_COLUMN = "mr_manufacturer"
KNOWN_KEYS = {"source", "data", "modality", "min_site_cases"}


def is_real_cohort(cohort: dict[str, Any]) -> bool:
    """Does a scenario's ``[cohort]`` table name a real data source (rather than the generator)?"""
    return "source" in cohort


@dataclass(frozen=True)
class RealCohortSpec:
    """The ``[cohort]`` table of a real-data scenario, with the data folder resolved."""

    source: str
    data: Path
    modality: str
    min_site_cases: int | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(
                f"[cohort] source {self.source!r} is unknown: use one of {', '.join(SOURCES)}"
            )
        if self.modality not in MODALITIES:
            raise ConfigError(
                f"[cohort] modality {self.modality!r}: use one of {', '.join(MODALITIES)}"
            )
        if self.min_site_cases is not None and self.min_site_cases < 1:
            raise ConfigError("[cohort] min_site_cases must be at least 1")

    @staticmethod
    def from_dict(cohort: dict[str, Any], *, base: Path | None = None) -> RealCohortSpec:
        """Read ``[cohort]``; a relative ``data`` path is taken relative to ``base`` (the
        scenario file's folder)."""
        unknown = sorted(set(cohort) - KNOWN_KEYS)
        if unknown:
            raise ConfigError(
                f"[cohort] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_KEYS))}"
            )
        raw = cohort.get("data")
        if raw in (None, ""):
            raise ConfigError(
                "[cohort] needs data = the folder of the data set (relative to the scenario "
                "file), or pass --data FOLDER"
            )
        path = Path(str(raw)).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        minimum = cohort.get("min_site_cases")
        return RealCohortSpec(
            source=str(cohort.get("source")),
            data=path.resolve(),
            modality=str(cohort.get("modality", "pet")).lower(),
            min_site_cases=None if minimum is None else int(minimum),
        )


@dataclass
class RealCohort:
    """The virtual sites built from a real cohort, the study to run on them, what was left out."""

    sites: list[SiteConfig]
    study: StudyConfig
    cases: dict[str, int]
    left_out: dict[str, str] = field(default_factory=dict)


def vendor_site_id(manufacturer: str) -> str:
    """A short site name from a DICOM manufacturer: its first word, all-capitals words above three
    letters capitalised (``GE MEDICAL SYSTEMS`` -> ``GE``, ``SIEMENS`` -> ``Siemens``)."""
    words = manufacturer.strip().split()
    if not words:
        return "unknown"
    word = "".join(c for c in words[0] if c.isalnum() or c in "-_") or "unknown"
    return word.capitalize() if word.isupper() and len(word) > 3 else word


def read_cases(data: Path) -> list[dict[str, str]]:
    """Rows of ``cases.csv`` in ``data``, checked for the columns the scenario needs."""
    path = data / CASES_FILE
    if not data.is_dir():
        raise ConfigError(
            f"{data}: the ibsi_sts data folder does not exist; set [cohort] data in the scenario "
            "(relative to the scenario file) or pass --data FOLDER"
        )
    if not path.is_file():
        raise InputError(f"no {CASES_FILE} in the data folder", path=str(data))
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = reader.fieldnames or []
    missing = [c for c in (CASE_COLUMN, LABEL_COLUMN, SITE_COLUMN) if c not in columns]
    if missing:
        raise InputError(
            f"{CASES_FILE} lacks column(s) {', '.join(missing)} (found: {', '.join(columns)})",
            path=str(path),
        )
    for i, row in enumerate(rows, start=2):
        if row[LABEL_COLUMN].strip() not in ("0", "1"):
            raise InputError(
                f"line {i}: {LABEL_COLUMN} must be 0 or 1, got {row[LABEL_COLUMN]!r}",
                case_id=row[CASE_COLUMN],
                path=str(path),
            )
    return rows


def group_cases(
    rows: list[dict[str, str]], min_cases: int
) -> tuple[dict[str, list[dict[str, str]]], dict[str, str]]:
    """Cases by site (MR vendor), and the groups that cannot form a site with the reason."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(vendor_site_id(row[SITE_COLUMN]), []).append(row)
    sites, left_out = {}, {}
    for name in sorted(groups):
        members = groups[name]
        labels = {r[LABEL_COLUMN].strip() for r in members}
        ids = ", ".join(r[CASE_COLUMN] for r in members)
        if len(members) < min_cases:
            left_out[name] = f"{len(members)} case(s) ({ids}), a site needs {min_cases}"
        elif len(labels) < 2:
            left_out[name] = f"a single class ({ids} all have {LABEL_COLUMN} = {labels.pop()})"
        else:
            sites[name] = members
    return sites, left_out


def _write_manifest(path: Path, data: Path, rows: list[dict[str, str]], modality: str) -> int:
    """Write a manifest of the cases whose images exist; return how many rows it has."""
    image_name, mask_name = MODALITY_FILES[modality]
    written = 0
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "image", "mask", LABEL_COLUMN])
        for row in rows:
            folder = data / row[CASE_COLUMN]
            image, mask = folder / image_name, folder / mask_name
            if not (image.is_file() and mask.is_file()):
                raise InputError(
                    f"{modality} image or mask missing ({image_name}, {mask_name})",
                    case_id=row[CASE_COLUMN],
                    path=str(folder),
                )
            writer.writerow([row[CASE_COLUMN], str(image), str(mask), row[LABEL_COLUMN].strip()])
            written += 1
    return written


def build_sites(
    spec: RealCohortSpec,
    study: StudyConfig,
    out: Path,
    *,
    progress: bool = False,
    policy=None,
) -> RealCohort:
    """Site folders under ``out/sites/`` for ``spec`` and the study to run on them."""
    from fedrad.simulation.harness import write_site_toml

    if study.task != "binary" or study.label_column != LABEL_COLUMN:
        raise ConfigError(
            f"the {spec.source} cohort has a binary label {LABEL_COLUMN!r}: set [study] "
            f'task = "binary" and label_column = "{LABEL_COLUMN}"'
        )
    rows = read_cases(spec.data)
    groups, left_out = group_cases(rows, spec.min_site_cases or study.min_cases)
    if len(groups) < 2:
        raise ConfigError(
            f"{spec.data}: only {len(groups)} MR vendor(s) have enough cases for a site "
            f"(left out: {'; '.join(f'{k}: {v}' for k, v in left_out.items())}); "
            "lower [cohort] min_site_cases"
        )
    sites: list[SiteConfig] = []
    counts: dict[str, int] = {}
    for name, members in groups.items():
        folder = out / "sites" / name
        folder.mkdir(parents=True, exist_ok=True)
        if spec.modality == "both":
            counts[name] = _write_joined_features(folder, spec.data, members, study, progress)
            toml = write_site_toml(folder, name, feature_table="features.csv", policy=policy)
        else:
            counts[name] = _write_manifest(
                folder / "manifest.csv", spec.data, members, spec.modality
            )
            toml = write_site_toml(folder, name, manifest="manifest.csv", policy=policy)
        sites.append(SiteConfig.from_file(toml))
    if spec.modality == "both":
        study = study.replace(feature_families=())
    return RealCohort(sites=sites, study=study, cases=counts, left_out=left_out)


def _write_joined_features(
    folder: Path, data: Path, rows: list[dict[str, str]], study: StudyConfig, progress: bool
) -> int:
    """Extract PET and MRI features of a site's cases and join them (``pet_``/``mri_`` prefixes).

    Each modality has its own manifest and feature cache in the site folder; only cases with both
    tables and finite values in both are kept. Returns the number of cases joined.
    """
    from fedrad.federation.site_data import select_features, site_feature_table

    tables = {}
    for modality in ("pet", "mri"):
        sub = folder / modality
        sub.mkdir(exist_ok=True)
        _write_manifest(sub / "manifest.csv", data, rows, modality)
        site = SiteConfig(
            site_id=f"{folder.name}-{modality}",
            root=sub,
            manifest=sub / "manifest.csv",
            cache_dir=sub / "cache",
            log_dir=sub / "logs",
        )
        table = site_feature_table(site, study, progress=progress)
        keep = select_features(table, study)
        index = {n: i for i, n in enumerate(table.feature_names)}
        tables[modality] = {
            case: {f"{modality}_{n}": float(table.values[row, index[n]]) for n in keep}
            for row, case in enumerate(table.case_ids)
        }
    labels = {r[CASE_COLUMN]: r[LABEL_COLUMN].strip() for r in rows}
    cases = [c for c in labels if c in tables["pet"] and c in tables["mri"]]
    columns = sorted({k for t in tables.values() for row in t.values() for k in row})
    with (folder / "features.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", *columns, LABEL_COLUMN])
        for case in cases:
            joined = {**tables["pet"][case], **tables["mri"][case]}
            values = [joined.get(c, math.nan) for c in columns]
            writer.writerow([case, *(repr(v) for v in values), labels[case]])
    return len(cases)


def real_cohort_summary(cohort: RealCohort, spec: RealCohortSpec) -> dict[str, Any]:
    """What metrics.json records of the cohort: source, modality, cases per site, left out."""
    return {
        "source": spec.source,
        "modality": spec.modality,
        "cases": dict(cohort.cases),
        "left_out": dict(cohort.left_out),
    }


def with_data_override(cohort: dict[str, Any], data: str | Path | None) -> dict[str, Any]:
    """The ``[cohort]`` table with ``data`` replaced by an absolute ``--data`` folder."""
    if data is None:
        return dict(cohort)
    return {**cohort, "data": str(Path(data).expanduser().resolve())}


def cohort_spec(scenario: Any) -> RealCohortSpec:
    """The real-cohort spec of a :class:`~fedrad.simulation.harness.Scenario`."""
    base = None if scenario.source is None else Path(scenario.source).resolve().parent
    return RealCohortSpec.from_dict(scenario.cohort, base=base)


def build_cohort(scenario: Any, out: Path, *, progress: bool = False) -> RealCohort:
    """:func:`build_sites` for a scenario whose ``[cohort]`` names a real data set."""
    return build_sites(
        cohort_spec(scenario), scenario.study, out, progress=progress, policy=scenario.policy
    )
