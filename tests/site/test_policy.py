"""The site's [policy]: safe defaults, parsing with clear errors, and the clauses a study breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrad.federation.config import ConfigError, SiteConfig, StudyConfig
from fedrad.site.policy import SitePolicy, check_study


def _site_toml(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "features.csv").write_text("case_id,stat_a,label\nc1,1.0,0\n")
    path = folder / "site.toml"
    path.write_text(f'[site]\nid = "h"\nfeature_table = "features.csv"\n{extra}')
    return path


DP_SECAGG = StudyConfig.from_dict(
    {
        "privacy": {"mode": "sample", "target_epsilon": 4.0},
        "secure_aggregation": {"enabled": True},
    }
)


def test_a_site_without_policy_gets_safe_finite_defaults(tmp_path: Path) -> None:
    site = SiteConfig.from_file(_site_toml(tmp_path / "s"))
    policy = site.site_policy
    assert policy.privacy_modes == ("sample",)
    assert policy.require_secure_aggregation
    assert 0 < policy.epsilon_budget < float("inf")
    assert policy.min_secagg_threshold >= 2 and policy.min_cell_count >= 2
    assert check_study(policy, DP_SECAGG) == []


def test_privacy_epsilon_budget_is_the_lifetime_budget(tmp_path: Path) -> None:
    site = SiteConfig.from_file(_site_toml(tmp_path / "s", "[privacy]\nepsilon_budget = 6.5\n"))
    assert site.site_policy.epsilon_budget == 6.5


def test_policy_table_is_read_and_unknown_keys_name_the_nearest(tmp_path: Path) -> None:
    site = SiteConfig.from_file(
        _site_toml(
            tmp_path / "a",
            '[policy]\nprivacy_modes = ["sample", "none"]\nmin_cell_count = 10\n'
            "[policy.max_queries]\ncalibration = 4\n",
        )
    )
    assert site.site_policy.privacy_modes == ("sample", "none")
    assert site.site_policy.min_cell_count == 10
    assert site.site_policy.max_queries == {"calibration": 4}
    with pytest.raises(ConfigError, match=r"min_cel_count \(did you mean min_cell_count\?\)"):
        SiteConfig.from_file(_site_toml(tmp_path / "b", "[policy]\nmin_cel_count = 3\n"))
    with pytest.raises(ConfigError, match="unknown mode"):
        SiteConfig.from_file(_site_toml(tmp_path / "c", '[policy]\nprivacy_modes = ["off"]\n'))
    with pytest.raises(ConfigError, match="threshold of 1"):
        SitePolicy(min_secagg_threshold=1)


@pytest.mark.parametrize(
    ("changes", "clause"),
    [
        ({"privacy": {"mode": "none"}}, "privacy_modes"),
        ({"privacy": {"mode": "sample", "target_epsilon": 50.0}}, "max_study_epsilon"),
        ({"privacy": {"mode": "sample", "noise_multiplier": 0.1}}, "min_noise_multiplier"),
        ({"secure_aggregation": {"enabled": False}}, "require_secure_aggregation"),
        (
            {"secure_aggregation": {"enabled": True, "reconstruction_threshold": 1.5}},
            "min_secagg_threshold",
        ),
        (
            {"privacy": {"mode": "client"}, "secure_aggregation": {"enabled": False}},
            "trust_server_noise",
        ),
    ],
)
def test_each_clause_a_study_breaks_is_named(changes: dict, clause: str) -> None:
    data = {
        "privacy": {"mode": "sample", "target_epsilon": 4.0},
        "secure_aggregation": {"enabled": True},
        **changes,
    }
    study = StudyConfig.from_dict(data)
    broken = check_study(SitePolicy(), study)
    assert any(b.startswith(clause + ":") for b in broken), broken


def test_exact_mode_under_dp_is_refused_even_when_newton_is_allowed() -> None:
    study = StudyConfig.from_dict(
        {"training": {"strategy": "exact"}, "privacy": {"mode": "sample", "target_epsilon": 4}}
    )
    policy = SitePolicy.sandbox()
    broken = check_study(policy, study)
    assert any("noise-free" in b for b in broken)
    assert check_study(policy, study.with_privacy(mode="none", target_epsilon=None)) == []


def test_allowing_widens_the_default_just_enough() -> None:
    study = DP_SECAGG.with_privacy(mode="none", target_epsilon=None)
    assert check_study(SitePolicy(), study)
    widened = SitePolicy.allowing(study)
    assert check_study(widened, study) == []
    assert (
        "sample" in widened.privacy_modes and widened.min_cell_count == SitePolicy().min_cell_count
    )


def test_policy_round_trips_through_toml(tmp_path: Path) -> None:
    policy = SitePolicy.allowing(DP_SECAGG, min_cell_count=7)
    site = SiteConfig.from_file(_site_toml(tmp_path / "s", policy.to_toml()))
    assert site.site_policy == policy
