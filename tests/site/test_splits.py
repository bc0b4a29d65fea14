"""The site fixes its split from its secret and the approved study: no message can move it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrad.federation.config import StudyConfig
from fedrad.federation.site_data import site_arrays, site_feature_table, site_split
from fedrad.site.secret import write_site_secret
from tests.federation.helpers import write_site

STUDY = StudyConfig.from_dict({"study": {"test_fraction": 0.3, "seed": 42}})


def test_split_depends_on_the_site_secret_not_on_the_study_seed(tmp_path: Path) -> None:
    site = write_site(tmp_path, "h", 60, 1)
    y = np.array([0, 1] * 30, dtype=float)
    write_site_secret(site, b"a" * 32)
    first = site_split(y, STUDY, site)
    assert first.sum() == 18  # stratified 30% of 60
    np.testing.assert_array_equal(first, site_split(y, STUDY, site))
    write_site_secret(site, b"b" * 32)
    assert not np.array_equal(first, site_split(y, STUDY, site))
    # what the server could compute from the study alone (its seed) is not the site's split
    from fedrad.federation.site_data import held_out_mask

    write_site_secret(site, b"a" * 32)
    assert not np.array_equal(held_out_mask(y, STUDY, "h"), first)


def test_folds_of_one_study_partition_the_cases(tmp_path: Path) -> None:
    site = write_site(tmp_path, "h", 40, 2)
    table = site_feature_table(site, STUDY)
    held_out = []
    for fold in range(4):
        study = STUDY.replace(cv_folds=4, cv_fold=fold)
        data = site_arrays(table, site, study, ["stat_f0"])
        held_out.append(data.case_ids_test)
    everyone = sorted(c for ids in held_out for c in ids)
    assert everyone == sorted(set(everyone)) and len(everyone) == 40


def test_studies_with_the_same_split_settings_share_the_held_out_patients(tmp_path: Path) -> None:
    """Two approved studies cannot be differenced through different splits: the split follows
    the split settings and the site's secret, not the study's name, seed or training."""
    site = write_site(tmp_path, "h", 60, 3)
    y = np.array([0, 1] * 30, dtype=float)
    other = STUDY.replace(name="another", seed=7).with_training(rounds=3, learning_rate=0.5)
    np.testing.assert_array_equal(site_split(y, STUDY, site), site_split(y, other, site))
    assert not np.array_equal(
        site_split(y, STUDY, site), site_split(y, STUDY.replace(test_fraction=0.5), site)
    )
