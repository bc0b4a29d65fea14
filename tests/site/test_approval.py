"""Approved, pinned studies: a canonical hash over what is computed and released."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrad.federation.config import StudyConfig
from fedrad.site.approval import approval_hash, approve, require_approved, study_hash
from fedrad.site.refusal import SiteRefusal
from tests.federation.helpers import write_site

STUDY = StudyConfig.from_dict(
    {
        "study": {"name": "lung", "seed": 1},
        "features": {"families": ["stat"]},
        "privacy": {"mode": "sample", "target_epsilon": 4.0},
        "secure_aggregation": {"enabled": True},
    }
)


def test_hash_is_canonical_and_covers_every_field() -> None:
    again = StudyConfig.from_dict(
        {
            "secure_aggregation": {"enabled": True},
            "privacy": {"target_epsilon": 4.0, "mode": "sample"},
            "features": {"families": ["stat"]},
            "study": {"seed": 1, "name": "lung"},
        }
    )
    assert study_hash(again) == study_hash(STUDY)
    for changed in (
        STUDY.replace(seed=2),
        STUDY.replace(test_fraction=0.0),
        STUDY.with_privacy(mode="none", target_epsilon=None),
        STUDY.with_training(rounds=3),
        STUDY.replace(feature_settings={"discretisation": {"method": "fbn", "value": 8}}),
    ):
        assert approval_hash(changed) != approval_hash(STUDY)


def test_folds_share_one_approval_but_not_one_release_key() -> None:
    fold0, fold1 = STUDY.replace(cv_folds=5, cv_fold=0), STUDY.replace(cv_folds=5, cv_fold=1)
    assert approval_hash(fold0) == approval_hash(fold1)
    assert study_hash(fold0) != study_hash(fold1)


def test_site_answers_only_approved_studies_and_names_what_differs(tmp_path: Path) -> None:
    site = write_site(tmp_path, "h", 20, 1)
    with pytest.raises(SiteRefusal, match="never approved") as info:
        require_approved(site, STUDY)
    assert info.value.code == "study-not-approved"
    approve(site, STUDY)
    assert require_approved(site, STUDY) == study_hash(STUDY)
    tampered = STUDY.with_privacy(mode="none", target_epsilon=None).replace(seed=9)
    with pytest.raises(SiteRefusal, match=r"privacy\.mode.*privacy\.target_epsilon.*seed"):
        require_approved(site, tampered)


def test_a_study_naming_a_file_is_refused(tmp_path: Path) -> None:
    site = write_site(tmp_path, "h", 20, 1)
    with pytest.raises(SiteRefusal) as info:
        approve(site, STUDY.replace(feature_settings={"params": "/etc/passwd"}))
    assert info.value.code == "malformed"


def test_study_file_params_are_inlined_by_content(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("discretisation: {method: fbn, value: 16}\n")
    (tmp_path / "study.toml").write_text('[features]\nparams = "params.yaml"\n')
    study = StudyConfig.from_file(tmp_path / "study.toml")
    assert "params" not in study.feature_settings
    assert study.feature_settings["settings"]["discretisation"]["value"] == 16
    first = approval_hash(study)
    (tmp_path / "params.yaml").write_text("discretisation: {method: fbn, value: 8}\n")
    assert approval_hash(StudyConfig.from_file(tmp_path / "study.toml")) != first
