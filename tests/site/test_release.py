"""The one release path: retries come from the cache, different re-releases and excess
releases are refused, small counts are withheld."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedrad.federation.config import StudyConfig
from fedrad.site.policy import SitePolicy
from fedrad.site.refusal import SiteRefusal, classify, refusal_code, refusal_reason
from fedrad.site.release import ReleaseGuard, check_cell_counts, input_hash
from tests.federation.helpers import write_site

STUDY = StudyConfig()


def _guard(tmp_path: Path, **policy) -> ReleaseGuard:
    site = write_site(tmp_path, "h", 20, 1)
    return ReleaseGuard(site, SitePolicy.allowing(STUDY, **policy))


def _release(guard: ReleaseGuard, value: float, *, kind="evaluate", round=1, run=7, study="s"):
    calls = []

    def compute() -> RecordDict:
        calls.append(value)
        return RecordDict({"metrics": MetricRecord({"value": value})})

    content = guard.release(
        study=STUDY,
        study_hash=study,
        approval="a",
        run_id=run,
        kind=kind,
        round=round,
        input=input_hash([np.array([value])], {"x": 1}),
        compute=compute,
    )
    return float(content["metrics"]["value"]), calls


def test_a_retry_is_answered_from_the_cache(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    value, calls = _release(guard, 0.5)
    again, calls_again = _release(guard, 0.5)
    assert (value, again) == (0.5, 0.5) and calls == [0.5] and calls_again == []


def test_a_second_different_release_is_refused(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    _release(guard, 0.5)
    with pytest.raises(SiteRefusal) as info:
        _release(guard, 0.9)  # same study, run, kind and round; another model
    assert info.value.code == "already-released"
    assert _release(guard, 0.9, round=2)[0] == 0.9  # the next round is a new release


def test_limits_per_run_and_runs_per_study(tmp_path: Path) -> None:
    guard = _guard(tmp_path, max_queries={"calibration": 2}, max_runs_per_study=2)
    _release(guard, 1.0, kind="calibration", round="a")
    _release(guard, 2.0, kind="calibration", round="b")
    with pytest.raises(SiteRefusal) as info:
        _release(guard, 3.0, kind="calibration", round="c")
    assert info.value.code == "query-limit"
    _release(guard, 1.0, run=8)
    with pytest.raises(SiteRefusal, match="max_runs_per_study"):
        _release(guard, 1.0, run=9)


def test_statistics_outside_the_policy_are_refused(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    assert "newton" not in guard.policy.statistics
    with pytest.raises(SiteRefusal) as info:
        _release(guard, 1.0, kind="newton")
    assert info.value.code == "policy"


def test_the_release_record_names_the_protection(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    content = guard.release(
        study=STUDY,
        study_hash="s",
        approval="a",
        run_id=1,
        kind="train",
        round=1,
        input="i",
        protection=("dp",),
        compute=lambda: RecordDict({"c": ConfigRecord({"k": 1})}),
    )
    assert content["release"]["protection"] == "dp"
    assert content["release"]["kind"] == "train"


def test_small_counts_are_withheld() -> None:
    policy = SitePolicy(min_cell_count=5)
    check_cell_counts({"n": 5, "zero": 0}, policy, "x")
    with pytest.raises(SiteRefusal, match=r"positive=2"):
        check_cell_counts({"n": 40, "positive": 2}, policy, "evaluation")


def test_refusals_leave_as_codes_only() -> None:
    from fedrad.privacy.ledger import PrivacyBudgetExceeded, ReleaseConflictError

    reason = refusal_reason("budget")
    assert refusal_code(reason) == "budget" and "\n" not in reason
    assert classify(PrivacyBudgetExceeded("x", budget=1, spent=1, after=2)) == "budget"
    assert classify(ReleaseConflictError("x")) == "already-released"
    assert classify(KeyError("secret detail")) == "internal"
