"""The cheap privacy round: memoised accounting equals composition from scratch, one composition a
round, and the site's noise plan cached on disk but never trusted without a check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrad.federation.config import PrivacyConfig, StudyConfig, TrainingConfig
from fedrad.federation.site_privacy import (
    PLAN_CACHE,
    PLAN_CACHE_FORMAT,
    PLAN_TOLERANCE,
    plan_round,
    planned_noise,
)
from fedrad.privacy import accountant
from fedrad.privacy.accountant import Mechanism, epsilon
from fedrad.privacy.ledger import FORMAT, VERSION, PrivacyBudgetExceeded, PrivacyLedger
from fedrad.privacy.planning import plan_noise, steps_for
from tests.privacy.reference_accounting import reference_epsilon

DELTA = 1e-5
#: PRV: the fast path must equal composition from scratch to well within the accountant's own
#: precision (eps_error 0.01 absolute); RDP is the same arithmetic, so to rounding.
REL = {"prv": 1e-6, "rdp": 1e-12}

A, B, C = Mechanism(1.8, 0.2, 10), Mechanism(2.5, 0.5, 4), Mechanism(1.2, 0.05, 25)
MIXED = [
    [A],
    [A, B, A, C, B],
    [Mechanism(1.1, 0.05, 20), Mechanism(2.0, 0.3, 7), Mechanism(0.8, 1.0, 3)],
    [Mechanism(0.6, 0.5, 40), Mechanism(3.0, 0.01, 0), Mechanism(0.6, 0.5, 10)],  # large epsilon
]


@pytest.mark.parametrize("acc", ["prv", "rdp"])
@pytest.mark.parametrize("mechanisms", MIXED, ids=["one", "mixed", "three-rates", "large"])
def test_fast_epsilon_equals_composition_from_scratch(
    mechanisms: list[Mechanism], acc: str
) -> None:
    accountant._composed_epsilon.cache_clear()
    accountant._rdp_per_step.cache_clear()
    slow = reference_epsilon(mechanisms, DELTA, acc)
    cold = epsilon(mechanisms, DELTA, acc)  # type: ignore[arg-type]
    warm = epsilon(mechanisms, DELTA, acc)  # type: ignore[arg-type]
    assert cold == pytest.approx(slow, rel=REL[acc])
    assert warm == cold


@pytest.mark.parametrize("acc", ["prv", "rdp"])
def test_identical_mechanisms_compose_exactly_as_one(acc: str) -> None:
    """k rounds of (sigma, q, s) are one mechanism of k * s steps: merged equals unmerged."""
    round_ = Mechanism(1.3, 0.1, 4)
    unmerged = reference_epsilon([round_] * 5, DELTA, acc, merge=False)
    assert epsilon([Mechanism(1.3, 0.1, 20)], DELTA, acc) == pytest.approx(unmerged, rel=REL[acc])  # type: ignore[arg-type]
    assert epsilon([round_] * 5, DELTA, acc) == epsilon([Mechanism(1.3, 0.1, 20)], DELTA, acc)  # type: ignore[arg-type]


def _write_ledger(path: Path, entries: list[tuple[str, str, int, Mechanism]], acc: str) -> None:
    """A ledger file in the on-disk format, written directly (its epsilon_after are placeholders)."""
    rows = [
        {
            "time": "2025-01-01T12:00:00+00:00",
            "study": study,
            "run_id": run_id,
            "round": rnd,
            "noise_multiplier": m.noise_multiplier,
            "sample_rate": m.sample_rate,
            "steps": m.steps,
            "delta": DELTA,
            "accountant": acc,
            "epsilon_after": 0.0,
        }
        for study, run_id, rnd, m in entries
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "entries": rows}))


def _thirty_entries() -> list[tuple[str, str, int, Mechanism]]:
    """Three studies at one site: 12 + 12 + 6 rounds, three different mechanisms."""
    return (
        [("study-a", "1", r, A) for r in range(12)]
        + [("study-b", "2", r, B) for r in range(12)]
        + [("study-c", "3", r, C) for r in range(6)]
    )


@pytest.mark.parametrize("acc", ["prv", "rdp"])
def test_ledger_of_thirty_entries_matches_composition_from_scratch(
    tmp_path: Path, acc: str
) -> None:
    entries = _thirty_entries()
    path = tmp_path / "ledger.json"
    _write_ledger(path, entries, acc)
    ledger = PrivacyLedger(path, 50.0, DELTA, acc)  # type: ignore[arg-type]
    mechanisms = [m for *_, m in entries]
    spent = reference_epsilon(mechanisms, DELTA, acc)
    assert ledger.spent() == pytest.approx(spent, rel=REL[acc])
    study_b = reference_epsilon([m for s, *_, m in entries if s == "study-b"], DELTA, acc)
    assert ledger.spent(study="study-b") == pytest.approx(study_b, rel=REL[acc])
    new = Mechanism(2.5, 0.5, 4)  # study b's mechanism again: merged into its entries
    after = reference_epsilon([*mechanisms, new], DELTA, acc)
    assert ledger.check(new, "study-b", "2", 12) == pytest.approx(after, rel=REL[acc])
    entry = ledger.record(new, "study-b", "2", 12)
    assert entry.epsilon_after == pytest.approx(after, rel=REL[acc])
    assert ledger.spent() == entry.epsilon_after
    assert ledger.record(new, "study-b", "2", 12) == entry  # idempotent as ever
    tight = PrivacyLedger(path, after * 1.001, DELTA, acc)  # type: ignore[arg-type]
    with pytest.raises(PrivacyBudgetExceeded) as refused:
        tight.check(Mechanism(1.0, 0.5, 50), "study-d", "4", 0)
    assert refused.value.spent == pytest.approx(after, rel=REL[acc])


def test_a_round_composes_the_ledger_once(tmp_path: Path) -> None:
    """check, record, spent and the study's share of one round: one PRV composition, not four."""
    ledger = PrivacyLedger(tmp_path / "ledger.json", None, DELTA, "prv")
    round_ = Mechanism(3.6, 0.73, 4)
    ledger.record(round_, "study", "7", 1)
    accountant._composed_epsilon.cache_clear()
    ledger.check(round_, "study", "7", 2)
    entry = ledger.record(round_, "study", "7", 2)
    total, share = ledger.spent(), ledger.spent(study="study", run_id=7)
    assert accountant._composed_epsilon.cache_info().misses == 1
    assert total == share == entry.epsilon_after
    assert total == pytest.approx(reference_epsilon([round_, round_], DELTA, "prv"), rel=1e-6)


# -- the site's noise plan, cached on disk ------------------------------------------------------


def _study(acc: str = "rdp", **privacy: float) -> StudyConfig:
    settings = {"target_epsilon": 4.0, **privacy}
    return StudyConfig(
        name="plan-cache",
        training=TrainingConfig(rounds=5, local_epochs=2, batch_size=16),
        privacy=PrivacyConfig(mode="sample", accountant=acc, **settings),  # type: ignore[arg-type]
    )


def _cached(cache_dir: Path) -> dict[str, float]:
    data = json.loads((cache_dir / PLAN_CACHE).read_text())
    assert data["format"] == PLAN_CACHE_FORMAT
    return data["plans"]


@pytest.mark.parametrize("acc", ["prv", "rdp"])
def test_plan_is_cached_and_equals_a_fresh_plan(tmp_path: Path, acc: str) -> None:
    study = _study(acc)
    plan = plan_round(study, 22, tmp_path)
    q, total = steps_for(22, 16, 2, 5)
    assert plan.noise_multiplier == plan_noise(4.0, DELTA, q, total, acc)  # type: ignore[arg-type]
    assert (plan.sample_rate, plan.total_steps) == (q, total)
    assert list(_cached(tmp_path).values()) == [plan.noise_multiplier]
    assert plan_round(study, 22, tmp_path) == plan
    assert plan_round(study, 22) == plan  # without a cache folder: the same plan


def test_cached_plan_that_overspends_is_replanned(tmp_path: Path) -> None:
    q, total = steps_for(22, 16, 2, 5)
    sigma = planned_noise(4.0, DELTA, q, total, "rdp", tmp_path)
    (key,) = _cached(tmp_path)
    for bad in (sigma * 0.8, sigma * 2.0):  # overspends / wastes utility: both outside the band
        path = tmp_path / PLAN_CACHE
        path.write_text(
            json.dumps({"format": PLAN_CACHE_FORMAT, "version": 1, "plans": {key: bad}})
        )
        assert planned_noise(4.0, DELTA, q, total, "rdp", tmp_path) == sigma
        assert _cached(tmp_path)[key] == sigma


def test_cached_plan_within_the_band_is_used(tmp_path: Path) -> None:
    q, total = steps_for(22, 16, 2, 5)
    sigma = planned_noise(4.0, DELTA, q, total, "rdp", tmp_path)
    (key,) = _cached(tmp_path)
    other = sigma * (1 + 1e-9)  # another noise, still spending the target
    assert other != sigma
    assert 4.0 - PLAN_TOLERANCE <= epsilon([Mechanism(other, q, total)], DELTA, "rdp") <= 4.0
    (tmp_path / PLAN_CACHE).write_text(
        json.dumps({"format": PLAN_CACHE_FORMAT, "version": 1, "plans": {key: other}})
    )
    assert planned_noise(4.0, DELTA, q, total, "rdp", tmp_path) == other


@pytest.mark.parametrize(
    "text", ["", "{not json", json.dumps([1, 2]), json.dumps({"format": "other"}), "\udcff"]
)
def test_unreadable_plan_cache_is_ignored_and_rewritten(tmp_path: Path, text: str) -> None:
    (tmp_path / PLAN_CACHE).write_text(text, errors="surrogateescape")
    plan = plan_round(_study(), 22, tmp_path)
    assert list(_cached(tmp_path).values()) == [plan.noise_multiplier]


def test_fixed_noise_is_not_planned_nor_cached(tmp_path: Path) -> None:
    study = StudyConfig(
        training=TrainingConfig(rounds=5, local_epochs=2, batch_size=16),
        privacy=PrivacyConfig(mode="sample", noise_multiplier=1.3),
    )
    assert plan_round(study, 22, tmp_path).noise_multiplier == 1.3
    assert not (tmp_path / PLAN_CACHE).exists()


def test_unwritable_cache_folder_still_plans(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    plan = plan_round(_study(), 22, blocker)
    assert plan.noise_multiplier == plan_round(_study(), 22).noise_multiplier
