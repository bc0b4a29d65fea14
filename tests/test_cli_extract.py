"""`fedrad extract` from the command line: one case, a manifest with a failing case, errors."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fedrad.cli import main
from fedrad.radiomics.table import LONG_COLUMNS
from tests.conftest import DIG_PHANTOM_IMAGE, DIG_PHANTOM_MASK


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_case(folder: Path, name: str, seed: int) -> tuple[Path, Path]:
    """A small random-texture image with a blob ROI, written as NRRD."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 20, size=(12, 16, 16)).astype(np.float32)
    zz, yy, xx = np.mgrid[:12, :16, :16]
    mask = ((zz - 6) ** 2 / 16 + (yy - 8) ** 2 / 25 + (xx - 8) ** 2 / 25) <= 1
    image = sitk.GetImageFromArray(img)
    image.SetSpacing((1.0, 1.0, 2.0))
    m = sitk.GetImageFromArray(mask.astype(np.uint8))
    m.CopyInformation(image)
    ip, mp = folder / f"{name}.nrrd", folder / f"{name}_mask.nrrd"
    sitk.WriteImage(image, str(ip))
    sitk.WriteImage(m, str(mp))
    return ip, mp


def test_single_case_long_format(tmp_path: Path) -> None:
    out = tmp_path / "phantom.csv"
    rc = main(
        [
            "extract",
            str(DIG_PHANTOM_IMAGE),
            str(DIG_PHANTOM_MASK),
            "--preset",
            "ibsi-dig-phantom",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    rows = _read(out)
    assert tuple(rows[0].keys()) == LONG_COLUMNS
    codes = {(r["ibsi_code"], r["aggregation_code"]) for r in rows}
    assert ("RNU0", "DHQ4") in codes  # morphology volume
    assert ("GYBY", "ITBB") in codes  # GLCM joint maximum, 3D averaged
    assert all(r["case_id"] == "ibsi1_digital_phantom" for r in rows)


def test_single_case_wide_format_to_stdout(capsys) -> None:
    rc = main(["extract", str(DIG_PHANTOM_IMAGE), str(DIG_PHANTOM_MASK), "--format", "wide"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    header = lines[0].split(",")
    assert header[0] == "case_id" and "morph_volume" in header
    assert "glcm_joint_maximum_3D_avg" in header


def test_manifest_keeps_good_cases_and_reports_the_bad_one(tmp_path: Path) -> None:
    a = _write_case(tmp_path, "a", 1)
    b = _write_case(tmp_path, "b", 2)
    corrupt = tmp_path / "corrupt.nrrd"
    corrupt.write_bytes(b"NRRD0004\nthis is not an image\n")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        "case_id,image,mask,site\n"
        f"A,{a[0].name},{a[1].name},north\n"
        f"BAD,{corrupt.name},{a[1].name},north\n"
        f"B,{b[0].name},{b[1].name},south\n"
    )
    out = tmp_path / "features.csv"
    rc = main(["extract", "--manifest", str(manifest), "-o", str(out)])
    assert rc == 1
    rows = _read(out)
    assert [r["case_id"] for r in rows] == ["A", "B"]
    assert [r["site"] for r in rows] == ["north", "south"]
    errors = _read(tmp_path / "features.errors.csv")
    assert [e["case_id"] for e in errors] == ["BAD"]
    assert "corrupt.nrrd" in errors[0]["error"]


def test_manifest_parallel_jobs_give_the_same_table(tmp_path: Path) -> None:
    lines = ["case_id,image,mask"]
    for i in range(3):
        ip, mp = _write_case(tmp_path, f"c{i}", 10 + i)
        lines.append(f"c{i},{ip.name},{mp.name}")
    manifest = tmp_path / "cases.csv"
    manifest.write_text("\n".join(lines) + "\n")
    assert main(["extract", "--manifest", str(manifest), "-o", str(tmp_path / "one.csv")]) == 0
    assert (
        main(
            ["extract", "--manifest", str(manifest), "-o", str(tmp_path / "two.csv"), "--jobs", "2"]
        )
        == 0
    )
    assert _read(tmp_path / "one.csv") == _read(tmp_path / "two.csv")
    assert not (tmp_path / "one.errors.csv").exists()


def test_manifest_without_required_columns(tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text("id,img\nx,y\n")
    rc = main(["extract", "--manifest", str(manifest), "-o", str(tmp_path / "o.csv")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "case_id" in err and "Traceback" not in err


def test_manifest_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    sub = tmp_path / "site"
    sub.mkdir()
    shutil.copy(DIG_PHANTOM_IMAGE, sub / "img.nii.gz")
    shutil.copy(DIG_PHANTOM_MASK, sub / "msk.nii.gz")
    (sub / "cases.csv").write_text("case_id,image,mask\np,img.nii.gz,msk.nii.gz\n")
    out = tmp_path / "f.csv"
    assert (
        main(["extract", "--manifest", str(sub / "cases.csv"), "-o", str(out), "--format", "long"])
        == 0
    )
    rows = _read(out)
    assert {r["case_id"] for r in rows} == {"p"}


@pytest.mark.parametrize(
    "argv",
    [
        ["extract"],
        ["extract", "only_image.nii.gz"],
        ["extract", "--manifest", "m.csv"],
    ],
)
def test_incomplete_command_lines_give_a_message(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_dicom_series_with_rtstruct_gives_the_nifti_features(tmp_path: Path) -> None:
    from tests.conftest import CT_PHANTOM, require_shared

    series = require_shared(CT_PHANTOM / "dicom" / "image")
    rtstruct = require_shared(CT_PHANTOM / "dicom" / "mask" / "DCM_RS_00060.dcm")
    nifti = require_shared(CT_PHANTOM / "nifti" / "phantom.nii.gz")
    nifti_mask = require_shared(CT_PHANTOM / "nifti" / "mask.nii.gz")
    out_dicom, out_nifti = tmp_path / "dicom.csv", tmp_path / "nifti.csv"
    args = ["--preset", "ibsi-config-c", "--format", "wide"]
    assert (
        main(
            [
                "extract",
                str(series),
                str(rtstruct),
                "--roi-name",
                "GTV-1",
                *args,
                "-o",
                str(out_dicom),
            ]
        )
        == 0
    )
    assert main(["extract", str(nifti), str(nifti_mask), *args, "-o", str(out_nifti)]) == 0
    a, b = _read(out_dicom)[0], _read(out_nifti)[0]
    a.pop("case_id"), b.pop("case_id")
    assert a.keys() == b.keys()
    np.testing.assert_allclose(
        [float(v) for v in a.values()], [float(v) for v in b.values()], rtol=1e-6, equal_nan=True
    )  # DICOM slice spacing differs by 1e-13 mm


def test_manifest_clinical_label_column_is_carried_not_used_as_mask_label(tmp_path: Path) -> None:
    a = _write_case(tmp_path, "a", 1)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,image,mask,label\nA,{a[0].name},{a[1].name},0\n")
    out = tmp_path / "features.csv"
    assert main(["extract", "--manifest", str(manifest), "-o", str(out)]) == 0
    row = _read(out)[0]
    assert row["label"] == "0"
    roi_voxels = int(sitk.GetArrayFromImage(sitk.ReadImage(str(a[1]))).sum())
    assert float(row["morph_approximate_volume"]) == pytest.approx(
        roi_voxels * 2.0
    )  # 1 x 1 x 2 mm voxels


PYRADIOMICS_PARAMS = """\
setting:
  binWidth: 25
  padDistance: 10
  geometryTolerance: 0.0001
featureClass:
  firstorder:
  glcm: [Contrast, Idm]
"""


def _manifest(tmp_path: Path, n: int) -> Path:
    lines = ["case_id,image,mask"]
    for i in range(n):
        ip, mp = _write_case(tmp_path, f"c{i}", seed=i)
        lines.append(f"c{i},{ip.name},{mp.name}")
    manifest = tmp_path / "cases.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_compat_pyradiomics_gives_pyradiomics_columns_notices_once_and_a_summary(
    tmp_path: Path, capfd
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(PYRADIOMICS_PARAMS)
    manifest = _manifest(tmp_path, 3)
    out = tmp_path / "out.csv"
    argv = ["extract", "--manifest", str(manifest), "-o", str(out), "--params", str(params)]
    assert main([*argv, "--compat", "pyradiomics", "--jobs", "2"]) == 0
    rows = _read(out)
    features = [c for c in rows[0] if c != "case_id"]
    assert [c for c in features if "_glcm_" in c] == ["original_glcm_Contrast", "original_glcm_Idm"]
    assert len([c for c in features if c.startswith("original_firstorder_")]) == 18
    err = capfd.readouterr().err
    lines = err.splitlines()
    for key in ("geometryTolerance", "padDistance"):
        notice = [line for line in lines if f"'{key}' is ignored" in line]
        assert len(notice) == 1, err  # one plain line, once per run (not per job)
    assert "Warning" not in err and "settings.py" not in err
    assert lines[-1].startswith("extracted 3 case(s), 20 feature(s) per case, 0 failure(s) in ")
    assert lines[-1].endswith(" s")


def test_feature_list_in_ibsi_mode_is_refused_with_a_message(tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(PYRADIOMICS_PARAMS)
    ip, mp = _write_case(tmp_path, "c", seed=1)
    assert main(["extract", str(ip), str(mp), "--params", str(params)]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "glcm: [Contrast, Idm]" in err and "compat pyradiomics" in err
    assert "Traceback" not in err


def test_summary_counts_failures(tmp_path: Path, capsys) -> None:
    manifest = _manifest(tmp_path, 2)
    manifest.write_text(manifest.read_text() + "gone,missing.nrrd,missing_mask.nrrd\n")
    out = tmp_path / "out.csv"
    assert (
        main(
            ["extract", "--manifest", str(manifest), "-o", str(out), "--preset", "ibsi-dig-phantom"]
        )
        == 1
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("extracted 3 case(s), ") and " 1 failure(s) in " in last
