"""Feature tables from other tools: a PyRadiomics table serves a study next to sites that
extract with ``compat: pyradiomics``, and ``site check`` says which columns it dropped and why."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.federation.site_data import check_site, dropped_columns, site_feature_table
from fedrad.radiomics.compat.extractor import CompatSettings, extract_pyradiomics
from fedrad.radiomics.table import column_families
from fedrad.simulation.harness import run_federation, write_site_toml
from fedrad.site.policy import SitePolicy

PARAMS = "setting:\n  binWidth: 25\n  padDistance: 5\nfeatureClass:\n  firstorder:\n  shape:\n"


def _case(folder: Path, name: str, rng: np.random.Generator) -> tuple[Path, Path, int]:
    """A blob whose size and brightness carry the outcome."""
    label = int(rng.random() < 0.5)
    radius = 3.0 + 1.5 * label + rng.normal(0, 0.4)
    zz, yy, xx = np.mgrid[:16, :20, :20]
    mask = (zz - 8) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= radius**2
    image = rng.normal(100 + 25 * label, 15, size=mask.shape).astype(np.float32)
    itk = sitk.GetImageFromArray(image)
    itk.SetSpacing((1.0, 1.0, 1.5))
    itk_mask = sitk.GetImageFromArray(mask.astype(np.uint8))
    itk_mask.CopyInformation(itk)
    ip, mp = folder / f"{name}.nrrd", folder / f"{name}_label.nrrd"
    sitk.WriteImage(itk, str(ip))
    sitk.WriteImage(itk_mask, str(mp))
    return ip, mp, label


def _extracting_site(root: Path, site_id: str, n: int, seed: int) -> SiteConfig:
    folder = root / site_id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = ["case_id,image,mask,label"]
    for i in range(n):
        ip, mp, label = _case(folder, f"{site_id}{i}", rng)
        lines.append(f"{site_id}{i},{ip.name},{mp.name},{label}")
    (folder / "cases.csv").write_text("\n".join(lines) + "\n")
    return SiteConfig.from_file(
        write_site_toml(folder, site_id, manifest="cases.csv", policy=SitePolicy.sandbox())
    )


def _pyradiomics_site(root: Path, site_id: str, n: int, seed: int) -> SiteConfig:
    """A site bringing a PyRadiomics batch table: Image/Mask columns, diagnostics, features."""
    folder = root / site_id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    settings = CompatSettings(classes={"firstorder": None, "shape": None})
    rows = []
    for i in range(n):
        ip, mp, label = _case(folder, f"{site_id}{i}", rng)
        row = {"case_id": f"{site_id}{i}", "Image": str(ip), "Mask": str(mp), "label": label}
        row["diagnostics_Versions_PyRadiomics"] = "v3.0.1"
        row["diagnostics_Mask-original_VoxelNum"] = 0
        row.update(extract_pyradiomics(ip, mp, settings))
        rows.append(row)
    with (folder / "features.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return SiteConfig.from_file(
        write_site_toml(folder, site_id, feature_table="features.csv", policy=SitePolicy.sandbox())
    )


def _study(tmp_path: Path, **features: object) -> StudyConfig:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    return StudyConfig.from_dict(
        {
            "study": {"name": "mixed", "min_cases": 10},
            "features": {"params": str(params), "compat": "pyradiomics", **features},
            "training": {"rounds": 2, "min_sites": 3},
        }
    ).with_inlined_params(tmp_path)  # as StudyConfig.from_file does: the file goes by content


def test_pyradiomics_names_map_to_ibsi_families() -> None:
    assert column_families("original_firstorder_Mean") == ("stat", "ih")
    assert column_families("wavelet-LLH_glcm_Contrast") == ("glcm",)
    assert column_families("log-sigma-1-0-mm-3D_gldm_DependenceEntropy") == ("ngldm",)
    assert column_families("original_shape_VoxelVolume") == ("morph",)
    assert column_families("glcm_contrast_3D_avg") == ("glcm",)
    assert column_families("log-sigma-1.0mm_stat_mean") == ("stat",)
    assert column_families("original_shape2D_Perimeter") == ()
    assert column_families("my_score") == ()


def test_site_check_names_dropped_columns_and_why(tmp_path: Path) -> None:
    site = _pyradiomics_site(tmp_path, "p", 12, 1)
    path = site.feature_table
    text = path.read_text().splitlines()
    text[0] += ",my_score"
    path.write_text("\n".join([text[0], *[f"{line},0.5" for line in text[1:]]]) + "\n")
    study = _study(tmp_path, families=["glcm"])
    table = site_feature_table(site, study)
    report = check_site(table, site, study)
    assert not report.ok
    assert "no usable feature column" in report.reason
    assert "family stat/ih not asked for" in report.reason
    assert "my_score" in report.reason and "matches no feature family" in report.reason
    dropped = dropped_columns(table, _study(tmp_path, families=["stat"]))
    assert "original_shape_VoxelVolume" in dropped["family morph not asked for"]
    assert dropped["not numeric (or not a feature)"] == [
        "Image",
        "Mask",
        "diagnostics_Versions_PyRadiomics",
    ]
    named = _study(tmp_path, columns=["original_firstorder_Mean", "original_shape_VoxelVolume"])
    assert check_site(table, site, named).usable_features == (
        "original_firstorder_Mean",
        "original_shape_VoxelVolume",
    )


@pytest.mark.slow
def test_mixed_federation_trains(tmp_path: Path) -> None:
    sites = [
        _pyradiomics_site(tmp_path, "pyrad", 24, 1),
        _extracting_site(tmp_path, "compat-b", 24, 2),
        _extracting_site(tmp_path, "compat-c", 24, 3),
    ]
    study = _study(tmp_path, families=["stat", "morph"])
    tables = [site_feature_table(s, study) for s in sites]
    reports = [check_site(t, s, study) for t, s in zip(tables, sites, strict=True)]
    assert all(r.ok for r in reports), [r.reason for r in reports]
    usable = [set(r.usable_features) for r in reports]
    assert usable[0] == usable[1] == usable[2]
    assert {"original_firstorder_Mean", "original_shape_MeshVolume"} <= usable[0]
    # The extracting sites computed the very values a PyRadiomics table holds.
    first = tables[1]
    column = first.feature_names.index("original_firstorder_Mean")
    case = first.case_ids[0]
    image = tmp_path / "compat-b" / f"{case}.nrrd"
    direct = extract_pyradiomics(image, image.with_name(f"{case}_label.nrrd"))
    assert first.values[0, column] == direct["original_firstorder_Mean"]

    result = run_federation(study, sites, tmp_path / "run")
    last = result["history"][-1]
    assert set(last["sites"]) == {"pyrad", "compat-b", "compat-c"}
    assert 0.5 < last["pooled"]["auc"] <= 1.0


def test_site_check_command_prints_dropped_columns(tmp_path: Path, capsys) -> None:
    from fedrad.cli import main

    site = _pyradiomics_site(tmp_path, "p", 12, 2)
    study = tmp_path / "study.toml"
    study.write_text('[study]\nname = "s"\nmin_cases = 10\n[features]\nfamilies = ["stat"]\n')
    assert main(["site", "check", str(site.root / "site.toml"), "--study", str(study)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "dropped 14 column(s): family morph not asked for: original_shape_Elongation" in out
    assert "can serve study" in out
