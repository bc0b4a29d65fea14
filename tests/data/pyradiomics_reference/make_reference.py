"""Make ``reference.csv``: PyRadiomics' own feature values on its five test cases.

Run with the PyRadiomics environment that ``benchmarks/envs.sh`` builds (PyRadiomics 3.0.1)::

    benchmarks/.envs/pyradiomics/bin/python tests/data/pyradiomics_reference/make_reference.py

It reads ``../shared/data/pyradiomics_testcases/<case>_image.nrrd`` and ``<case>_label.nrrd``
with ``params.yaml`` (next to this script) and writes one row per case, one column per feature
(PyRadiomics' column names; its ``diagnostics_*`` columns are left out). fedrad's tests read the
CSV, so CI needs no PyRadiomics.
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

import radiomics
from radiomics import featureextractor

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE.parents[3] / "shared" / "data" / "pyradiomics_testcases"
CASES = ("brain1", "brain2", "breast1", "lung1", "lung2")


def main() -> int:
    radiomics.setVerbosity(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(str(HERE / "params.yaml"))
    rows = []
    for case in CASES:
        image = CASES_DIR / f"{case}_image.nrrd"
        mask = CASES_DIR / f"{case}_label.nrrd"
        result = extractor.execute(str(image), str(mask))
        row = {"case_id": case}
        row.update(
            {k: repr(float(v)) for k, v in result.items() if not k.startswith("diagnostics_")}
        )
        rows.append(row)
        print(case, len(row) - 1, "features", file=sys.stderr)
    with (HERE / "reference.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("pyradiomics", radiomics.__version__, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
