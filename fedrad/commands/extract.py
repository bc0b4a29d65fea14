"""``fedrad extract``: radiomic features of one image or of a whole manifest."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedrad.errors import FedradError
from fedrad.radiomics.batch import (
    CaseResult,
    errors_path,
    extract_manifest,
    read_manifest,
    write_results,
)
from fedrad.radiomics.extraction import extract
from fedrad.radiomics.settings import PRESETS, Settings
from fedrad.radiomics.table import LONG_COLUMNS, long_rows, wide_row, write_csv


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="extract IBSI radiomic features from an image + mask, or a manifest of cases",
        description=(
            "Extract IBSI-standard radiomic features. Give IMAGE and MASK for one case, or "
            "--manifest CASES.csv (columns case_id,image,mask; extra columns are carried through)."
        ),
    )
    p.add_argument("image", nargs="?", help="image file (NIfTI, NRRD, MHA) or DICOM series folder")
    p.add_argument("mask", nargs="?", help="mask file (label map) or DICOM RTSTRUCT")
    p.add_argument("--manifest", help="CSV of cases: case_id,image,mask[,mask_label,...]")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=sorted(PRESETS), help="built-in settings preset")
    group.add_argument("--params", help="fedrad YAML settings file or PyRadiomics parameter file")
    p.add_argument("--label", type=int, help="mask label of the ROI (default: settings' label, 1)")
    p.add_argument(
        "--roi-name", help="ROI of a DICOM RTSTRUCT mask (optional when it holds one ROI)"
    )
    p.add_argument(
        "--series-uid", help="DICOM SeriesInstanceUID when the image folder holds several series"
    )
    p.add_argument(
        "--format",
        choices=("wide", "long"),
        help="wide: one row per case; long: one row per value (default: long for one case, wide for a manifest)",
    )
    p.add_argument("-o", "--output", help="output CSV (default: standard output for one case)")
    p.add_argument(
        "--jobs", type=int, default=1, help="parallel processes for a manifest (default 1)"
    )
    p.add_argument("--diagnostics", action="store_true", help="also write IBSI diagnostic values")
    p.add_argument(
        "--compat",
        choices=("ibsi", "pyradiomics"),
        help="definitions: ibsi (default) or pyradiomics (reproduce PyRadiomics 3.x values and "
        "column names, e.g. original_glcm_Contrast, from the same --params file)",
    )
    p.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace, notices: list[str] | None = None) -> Settings:
    """The run's settings; notices about ignored PyRadiomics settings go to ``notices``."""
    if args.preset:
        settings = Settings.preset(args.preset)
    elif args.params:
        settings = Settings.from_file(
            args.params, notices=notices, compat=getattr(args, "compat", None)
        )
    else:
        settings = Settings(name="fedrad-default")
    if args.diagnostics:
        settings = settings.replace(diagnostics=True)
    compat = getattr(args, "compat", None)
    if compat and compat != settings.compat:
        if compat == "pyradiomics" and args.preset:
            raise FedradError(
                "--compat pyradiomics reads a PyRadiomics --params file, not a preset"
            )
        settings = settings.replace(compat=compat)
        if compat == "pyradiomics":
            from fedrad.radiomics.compat.values import settings_of

            settings_of(settings)  # refuses, before any case, what compat mode cannot reproduce
    if settings.compat == "pyradiomics" and settings.diagnostics:
        raise FedradError(
            "--diagnostics gives IBSI diagnostics: not available with compat pyradiomics"
        )
    return settings


def summary_line(n_cases: int, n_features: int, n_failed: int, seconds: float) -> str:
    """``fedrad extract``'s last line: cases, features per case, failures and wall time."""
    return (
        f"extracted {n_cases} case(s), {n_features} feature(s) per case, "
        f"{n_failed} failure(s) in {seconds:.1f} s"
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    console = Console(stderr=True)
    notices: list[str] = []
    settings = settings_from_args(args, notices)
    for notice in notices:
        console.print(notice, markup=False, highlight=False, soft_wrap=True)
    if args.manifest:
        if args.image or args.mask:
            raise FedradError("give either IMAGE MASK or --manifest, not both")
        if not args.output:
            raise FedradError("--manifest needs -o OUT.csv")
        return _run_manifest(args, settings, console, started)
    if not (args.image and args.mask):
        raise FedradError(
            "give IMAGE and MASK, or --manifest CASES.csv (see fedrad extract --help)"
        )
    case_id = Path(args.image).name.split(".")[0]
    values = extract(
        args.image,
        args.mask,
        settings,
        label=args.label,
        case_id=case_id,
        roi_name=args.roi_name,
        series_uid=args.series_uid,
    )
    fmt = args.format or "long"
    if fmt == "long":
        rows, first = long_rows(case_id, values), LONG_COLUMNS
    else:
        rows, first = [wide_row(case_id, values)], ("case_id",)
    if args.output:
        write_csv(args.output, rows, first=first)
        console.print(f"[green]{len(values)} feature values[/] of {case_id} -> {args.output}")
    else:
        import csv

        header = list(first) + [k for k in rows[0] if k not in first] if rows else list(first)
        writer = csv.DictWriter(sys.stdout, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    console.print(
        summary_line(1, len(values), 0, time.perf_counter() - started),
        markup=False,
        highlight=False,
    )
    return 0


def _run_manifest(
    args: argparse.Namespace, settings: Settings, console: Console, started: float
) -> int:
    entries = read_manifest(args.manifest)
    if args.label is not None:
        entries = [
            e if e.label is not None else type(e)(**{**e.__dict__, "label": args.label})
            for e in entries
        ]
    progress = Progress(
        TextColumn("[bold]extract"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        disable=not console.is_terminal and False,
    )
    failed: list[CaseResult] = []

    with progress:
        task = progress.add_task("cases", total=len(entries), last="")

        def on_result(result: CaseResult) -> None:
            if result.error:
                failed.append(result)
                progress.console.print(f"[red]failed[/] {result.error}")
            progress.update(task, advance=1, last=result.entry.case_id)

        results = extract_manifest(entries, settings, jobs=args.jobs, on_result=on_result)
    n_ok, n_bad = write_results(results, args.output, args.format or "wide")
    console.print(f"[green]{n_ok} case(s)[/] -> {args.output}")
    if n_bad:
        console.print(f"[red]{n_bad} case(s) failed[/] -> {errors_path(args.output)}")
    n_features = max((len(r.values) for r in results if r.values is not None), default=0)
    line = summary_line(n_ok + n_bad, n_features, n_bad, time.perf_counter() - started)
    console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 1 if n_bad else 0
