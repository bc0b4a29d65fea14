"""Before round 1 the server checks every site; bad sites are excluded with their reason.

These run real Flower simulations (Flower's simulation engine, one ClientApp per site).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedrad.federation.config import StudyConfig
from fedrad.federation.server_app import StudyAbortedError
from fedrad.federation.site_data import check_site, site_feature_table
from fedrad.simulation.harness import run_federation
from tests.federation.helpers import write_site

pytestmark = pytest.mark.slow

STUDY = StudyConfig.from_dict(
    {"study": {"min_cases": 12}, "training": {"rounds": 2, "min_sites": 2}}
)


def test_site_check_reasons(tmp_path: Path) -> None:
    ok = write_site(tmp_path, "ok", 40, 1)
    single = write_site(tmp_path, "single", 40, 2, single_class=True)
    small = write_site(tmp_path, "small", 8, 3)
    renamed = write_site(tmp_path, "renamed", 40, 4, label_name="outcome")
    reports = {
        s.site_id: check_site(site_feature_table(s, STUDY), s, STUDY)
        for s in (ok, single, small, renamed)
    }
    assert reports["ok"].ok and reports["ok"].reason == ""
    assert "single class" in reports["single"].reason
    assert "only 8 usable case(s)" in reports["small"].reason
    assert "'label'" in reports["renamed"].reason and "missing" in reports["renamed"].reason


def test_federation_excludes_bad_sites_and_finishes(tmp_path: Path) -> None:
    sites = [
        write_site(tmp_path, "a", 50, 1),
        write_site(tmp_path, "b", 45, 2, shift=0.3),
        write_site(tmp_path, "single", 40, 3, single_class=True),
        write_site(tmp_path, "tiny", 6, 4),
    ]
    result = run_federation(STUDY, sites, tmp_path / "run")
    reports = {r["site_id"]: r for r in json.loads((tmp_path / "run" / "sites.json").read_text())}
    assert reports["a"]["ok"] and reports["b"]["ok"]
    assert not reports["single"]["ok"] and "single class" in reports["single"]["reason"]
    assert not reports["tiny"]["ok"] and "usable case" in reports["tiny"]["reason"]
    assert set(result["history"][-1]["sites"]) == {"a", "b"}
    assert (tmp_path / "run" / "checkpoints" / "round-0002.npz").exists()
    assert (tmp_path / "run" / "plots" / "roc.png").exists()
    assert 0.5 < result["history"][-1]["pooled"]["auc"] <= 1.0


def test_study_aborts_when_too_few_sites_can_serve_it(tmp_path: Path) -> None:
    sites = [
        write_site(tmp_path, "a", 50, 1),
        write_site(tmp_path, "single", 40, 3, single_class=True),
    ]
    with pytest.raises(Exception) as info:
        run_federation(STUDY, sites, tmp_path / "run")
    assert isinstance(info.value, StudyAbortedError) or "site(s) can serve" in str(info.value)
    reports = json.loads((tmp_path / "run" / "sites.json").read_text())
    assert [r["ok"] for r in reports].count(True) == 1


def test_exact_mode_through_flower_equals_pooled_logistic_fit(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from fedrad.federation.site_data import site_arrays

    study = STUDY.with_training(strategy="exact").replace(
        model=STUDY.model.__class__(type="logistic", l2=0.5)
    )
    sites = [
        write_site(tmp_path, s, n, i) for i, (s, n) in enumerate([("a", 40), ("b", 70), ("c", 25)])
    ]
    result = run_federation(study, sites, tmp_path / "run")
    std = result["standardisation"]
    data = [site_arrays(site_feature_table(s, study), s, study, std.features) for s in sites]
    X = std.apply(np.concatenate([d.X_train for d in data]))
    y = np.concatenate([d.y_train for d in data])
    ref = LogisticRegression(C=1 / 0.5, tol=1e-12, max_iter=10_000).fit(X, y)
    weight, bias = result["arrays"]
    np.testing.assert_allclose(weight.ravel(), ref.coef_.ravel(), atol=1e-6)
    np.testing.assert_allclose(bias, ref.intercept_, atol=1e-6)

    # the final model's calibration, fitted by federated Newton over the sites' held-out cases,
    # equals the fit on the pooled held-out predictions
    from fedrad.learn.federated_calibration import pooled_calibration

    X_test = std.apply(np.concatenate([d.X_test for d in data]))
    y_test = np.concatenate([d.y_test for d in data])
    p_test = 1.0 / (1.0 + np.exp(-(X_test @ weight.ravel() + bias.ravel()[0])))
    expected = pooled_calibration(y_test, p_test)
    final = result["summary"]["final"]["pooled"]
    assert np.isfinite(expected["calibration_slope"])
    for key in ("calibration_slope", "calibration_intercept"):
        assert final[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-8), key
    assert final["calibration_exchanges"] >= 2
