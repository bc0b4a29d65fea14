"""A site's data for the study: its feature table (extracted with a cache, or precomputed),
its outcome columns, the train/held-out split, and the pre-study check of what it can serve.

Nothing here leaves the site: the server only ever sees :class:`SiteReport` counts and model
updates.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.radiomics.batch import extract_manifest, read_manifest, write_results
from fedrad.radiomics.settings import Settings
from fedrad.radiomics.table import column_families

META_COLUMNS = {"case_id", "image", "mask", "label", "time", "event", "site", "split"}


@dataclass
class FeatureTable:
    """Rows = cases, columns = features, plus every other column as text."""

    case_ids: list[str]
    feature_names: list[str]
    values: np.ndarray
    other: dict[str, list[str]]
    failures: list[tuple[str, str]] = field(default_factory=list)

    def column(self, name: str) -> list[str] | None:
        return self.other.get(name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_feature_table(path: Path, non_features: set[str]) -> FeatureTable:
    """Read a wide feature table (one row per case; ``case_id`` column required)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return FeatureTable([], [], np.zeros((0, 0)), {})
    if "case_id" not in rows[0]:
        raise ValueError(f"{path}: the feature table needs a case_id column")
    names = [c for c in rows[0] if c is not None and c not in non_features and c != "case_id"]
    numeric = [
        c
        for c in names
        if all(r[c] == "" or _is_number(r[c]) for r in rows) and not c.startswith("diagnostics_")
    ]
    values = np.array(
        [[float(r[c]) if r[c] != "" else math.nan for c in numeric] for r in rows], dtype=np.float64
    )
    other = {c: [r[c] for r in rows] for c in rows[0] if c is not None and c not in numeric}
    return FeatureTable(
        [r["case_id"] for r in rows], numeric, values.reshape(len(rows), len(numeric)), other
    )


def study_settings(study: StudyConfig) -> Settings:
    """Feature settings of the study (``[features]`` table of study.toml)."""
    data = dict(study.feature_settings)
    if "params" in data:
        raise ValueError(
            "the study's [features] names a file (params); a site never opens a path a study "
            "names (the coordinator's fedrad inlines the file when it reads study.toml)"
        )
    if "settings" in data:  # a params file, inlined by content
        return Settings.from_dict(dict(data["settings"]), name=study.name)
    return Settings.from_dict(data, name=study.name)


def _settings_key(settings: Settings) -> str:
    blob = json.dumps(settings.to_dict(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def site_feature_table(
    site: SiteConfig, study: StudyConfig, *, jobs: int = 1, progress: bool = False
) -> FeatureTable:
    """The site's features for this study: a precomputed table, or extracted (and cached)."""
    outcome = {site.column(c) for c in study.outcome_columns}
    if site.feature_table is not None:
        return read_feature_table(site.feature_table, META_COLUMNS | outcome)
    assert site.manifest is not None
    settings = study_settings(study).replace(label=site.label)
    cache = site.cache_dir / f"features-{_settings_key(settings)}.csv"
    entries = read_manifest(site.manifest)
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        results = extract_manifest(entries, settings, jobs=jobs)
        write_results(results, cache, "wide")
    table = read_feature_table(
        cache, META_COLUMNS | outcome | set(entries[0].extras if entries else ())
    )
    errors = cache.with_name(cache.stem + ".errors.csv")
    if errors.exists():
        with errors.open(newline="") as fh:
            table.failures = [(r["case_id"], r["error"]) for r in csv.DictReader(fh)]
    return table


@dataclass(frozen=True)
class SiteReport:
    """What a site tells the server before round 1 (counts only, never rows)."""

    site_id: str
    ok: bool
    reason: str
    n_cases: int
    n_train: int
    n_test: int
    n_positive: int
    failed_cases: int
    usable_features: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "site_id": self.site_id,
            "ok": self.ok,
            "reason": self.reason,
            "n_cases": self.n_cases,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_positive": self.n_positive,
            "failed_cases": self.failed_cases,
        }


@dataclass
class SiteData:
    """Training and held-out arrays of one site, with the feature names they follow."""

    site_id: str
    feature_names: list[str]
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    time_train: np.ndarray | None = None
    time_test: np.ndarray | None = None
    case_ids_test: list[str] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])


def _outcomes(
    table: FeatureTable, site: SiteConfig, study: StudyConfig
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(label or event, time or None, problem) for every row; rows with a missing outcome are NaN."""
    problems = []
    arrays = []
    for name in study.outcome_columns:
        col = table.column(site.column(name))
        if col is None:
            problems.append(f"column {site.column(name)!r} (study {name!r}) is missing")
            arrays.append(np.full(len(table.case_ids), np.nan))
        else:
            arrays.append(np.array([float(v) if _is_number(v) else np.nan for v in col]))
    problem = "; ".join(problems)
    if study.task == "binary":
        return arrays[0], None, problem
    return arrays[1], arrays[0], problem


def _split(y: np.ndarray, test_fraction: float, seed: int, site_id: str) -> np.ndarray:
    """Boolean test mask, stratified by ``y``, deterministic in (seed, site id)."""
    digest = int(hashlib.sha256(f"{seed}:{site_id}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(digest)
    test = np.zeros(y.shape[0], dtype=bool)
    if test_fraction <= 0:
        return test
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        k = int(round(test_fraction * idx.size))
        test[idx[:k]] = True
    return test


def cv_folds(y: np.ndarray, n_folds: int, seed: int, site_id: str) -> np.ndarray:
    """Stratified k-fold assignment: the fold (``0 .. n_folds - 1``) of every case.

    Within each class (in ascending order of label) the cases are shuffled by a generator seeded by
    ``(seed, site id)`` and dealt to the folds in turn, starting at a fold drawn from the same
    generator (so that small sites do not all fill the first folds), each class continuing where
    the previous one stopped. So every case lies in exactly one fold, fold sizes differ by at most
    one, and each fold's count of a class differs from ``n_class / n_folds`` by less than one.
    """
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    digest = int(hashlib.sha256(f"{seed}:{site_id}:cv".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(digest)
    fold = np.empty(y.shape[0], dtype=np.int64)
    start = int(rng.integers(n_folds))
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        fold[idx] = (start + np.arange(idx.size)) % n_folds
        start = (start + idx.size) % n_folds
    return fold


def held_out_mask(
    y: np.ndarray, study: StudyConfig, site_id: str, seed: int | None = None
) -> np.ndarray:
    """The site's held-out cases: fold ``study.cv_fold`` when ``study.cv_folds > 1``, else a
    stratified ``study.test_fraction`` (both deterministic in ``seed`` and the site id).

    A site always passes its own split seed (:func:`fedrad.site.splits.split_seed`, from its
    secret and the approved study); ``seed=None`` (the study seed) is for pure unit tests."""
    seed = study.seed if seed is None else seed
    if study.cv_folds > 1:
        return cv_folds(y, study.cv_folds, seed, site_id) == study.cv_fold
    return _split(y, study.test_fraction, seed, site_id)


def site_split(y: np.ndarray, study: StudyConfig, site: SiteConfig) -> np.ndarray:
    """The held-out mask the site fixes for ``study`` (seeded by its secret)."""
    from fedrad.site.splits import split_seed

    return held_out_mask(y, study, site.site_id, split_seed(site, study))


def select_features(table: FeatureTable, study: StudyConfig) -> list[str]:
    """Feature columns the study uses that this site has, finite for every case."""
    names = table.feature_names
    if study.feature_columns:
        names = [c for c in study.feature_columns if c in table.feature_names]
    elif study.feature_families:
        wanted = set(study.feature_families)
        names = [c for c in names if wanted & set(column_families(c))]
    finite = (
        np.isfinite(table.values).all(axis=0)
        if table.values.size
        else np.ones(len(table.feature_names), bool)
    )
    ok = {n for n, f in zip(table.feature_names, finite, strict=True) if f}
    return [n for n in names if n in ok]


def dropped_columns(table: FeatureTable, study: StudyConfig) -> dict[str, list[str]]:
    """Columns of the table the study does not use, by reason (for ``site check``)."""
    usable = set(select_features(table, study))
    out: dict[str, list[str]] = {}
    finite = np.isfinite(table.values).all(axis=0) if table.values.size else None
    for i, name in enumerate(table.feature_names):
        if name in usable:
            continue
        if study.feature_columns:
            if name not in study.feature_columns:
                continue  # the study names its columns: the others are simply not asked for
            reason = "missing or non-finite value in some case"
        elif study.feature_families and not set(study.feature_families) & set(
            column_families(name)
        ):
            families = column_families(name)
            reason = (
                f"family {'/'.join(families)} not asked for"
                if families
                else "name matches no feature family (neither fedrad's nor PyRadiomics' naming)"
            )
        elif finite is not None and not finite[i]:
            reason = "missing or non-finite value in some case"
        else:
            continue
        out.setdefault(reason, []).append(name)
    non_numeric = [
        c
        for c in table.other
        if c not in META_COLUMNS and not all(v == "" or _is_number(v) for v in table.other[c])
    ]
    if non_numeric:
        out["not numeric (or not a feature)"] = non_numeric
    return out


def dropped_summary(dropped: dict[str, list[str]], limit: int = 5) -> str:
    """``"12 column(s): family glcm not asked for (a, b, ...); ..."``."""
    parts = []
    for reason, names in dropped.items():
        shown = ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")
        parts.append(f"{len(names)} column(s) {reason} ({shown})")
    return "; ".join(parts)


def check_site(table: FeatureTable, site: SiteConfig, study: StudyConfig) -> SiteReport:
    """Can this site serve the study? Counts only; the reason names the problem."""
    y, time, problem = _outcomes(table, site, study)
    usable = tuple(select_features(table, study))
    missing = [c for c in study.feature_columns if c not in table.feature_names]
    known = np.isfinite(y) & (np.isfinite(time) if time is not None else True)
    n = int(known.sum())
    n_pos = int((y[known] == 1).sum()) if n else 0
    reasons = []
    if problem:
        reasons.append(problem)
    if missing:
        reasons.append(
            f"feature column(s) missing: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    if n < study.min_cases:
        reasons.append(f"only {n} usable case(s), the study needs at least {study.min_cases}")
    if study.task == "binary" and n and (n_pos == 0 or n_pos == n):
        reasons.append(f"a single class (all {n} cases have label {int(y[known][0])})")
    if study.task == "survival" and n and n_pos == 0:
        reasons.append("no events")
    if not usable:
        why = dropped_summary(dropped_columns(table, study))
        reasons.append("no usable feature column" + (f": {why}" if why else ""))
    test = site_split(y[known], study, site) if n else np.zeros(0, bool)
    return SiteReport(
        site_id=site.site_id,
        ok=not reasons,
        reason="; ".join(reasons),
        n_cases=n,
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
        n_positive=n_pos,
        failed_cases=len(table.failures),
        usable_features=usable,
    )


def site_arrays(
    table: FeatureTable, site: SiteConfig, study: StudyConfig, features: list[str]
) -> SiteData:
    """Train/held-out arrays over ``features`` (the study's agreed columns, in that order)."""
    y, time, problem = _outcomes(table, site, study)
    if problem:
        raise ValueError(f"site {site.site_id}: {problem}")
    index = {n: i for i, n in enumerate(table.feature_names)}
    missing = [f for f in features if f not in index]
    if missing:
        raise ValueError(
            f"site {site.site_id}: feature column(s) missing: {', '.join(missing[:5])}"
        )
    X = (
        table.values[:, [index[f] for f in features]]
        if features
        else np.zeros((len(table.case_ids), 0))
    )
    known = np.isfinite(y) & (np.isfinite(time) if time is not None else True)
    X, y = X[known], y[known]
    time = time[known] if time is not None else None
    ids = [c for c, k in zip(table.case_ids, known, strict=True) if k]
    test = site_split(y, study, site)
    return SiteData(
        site_id=site.site_id,
        feature_names=list(features),
        X_train=X[~test],
        X_test=X[test],
        y_train=y[~test],
        y_test=y[test],
        time_train=None if time is None else time[~test],
        time_test=None if time is None else time[test],
        case_ids_test=[c for c, t in zip(ids, test, strict=True) if t],
    )
