"""The site's privacy ledger: persistence, budget, idempotency, delta, corruption, concurrency."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fedrad.errors import FedradError
from fedrad.privacy.accountant import Mechanism, PrivacyError, epsilon
from fedrad.privacy.ledger import (
    LedgerCorruptError,
    PrivacyBudgetExceeded,
    PrivacyLedger,
)
from fedrad.privacy.planning import plan_noise, steps_for

ROUND = Mechanism(1.5, 0.1, 20)
DELTA = 1e-5


def _ledger(tmp_path: Path, budget: float | None = None, accountant: str = "rdp") -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "logs" / "privacy-ledger.json", budget, DELTA, accountant)  # type: ignore[arg-type]


def test_empty_ledger(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, budget=5.0)
    assert ledger.spent() == 0.0
    assert ledger.remaining() == 5.0
    assert ledger.per_round() == []
    assert not ledger.path.exists()  # created by the first record


def test_records_survive_a_restart_and_compose(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, accountant="prv")
    for r in range(3):
        entry = ledger.record(ROUND, "study-a", "run-1", r)
        assert entry.epsilon_after == pytest.approx(epsilon([ROUND] * (r + 1), DELTA, "prv"))
    restarted = PrivacyLedger(ledger.path, None, DELTA, "prv")  # a new process, same file
    assert restarted.spent() == pytest.approx(ledger.spent())
    restarted.record(ROUND, "study-a", "run-1", 3)
    assert [e.round for e in _ledger(tmp_path).entries()] == [0, 1, 2, 3]
    assert restarted.spent() == pytest.approx(epsilon([ROUND] * 4, DELTA, "prv"))
    rows = restarted.per_round()
    assert [row["round"] for row in rows] == [0, 1, 2, 3]
    increments = [row["epsilon_round"] for row in rows]
    assert sum(increments) == pytest.approx(rows[-1]["epsilon_after"])
    assert increments[0] > increments[-1] > 0  # composition: later rounds add less
    on_disk = json.loads(ledger.path.read_text())
    assert on_disk["format"] == "fedrad-privacy-ledger"
    assert set(on_disk["entries"][0]) >= {
        "time", "study", "run_id", "round", "noise_multiplier", "sample_rate", "steps",
        "epsilon_after",
    }  # fmt: skip


def test_retried_round_is_counted_once(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    first = ledger.record(ROUND, "s", "run-1", 0)
    before = ledger.path.read_bytes()
    again = ledger.record(ROUND, "s", "run-1", 0)
    assert again == first
    assert ledger.path.read_bytes() == before
    assert len(ledger.entries()) == 1
    assert ledger.check(ROUND, "s", "run-1", 0) == pytest.approx(ledger.spent())  # costs nothing


def test_same_round_with_other_parameters_is_refused(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record(ROUND, "s", "run-1", 0)
    with pytest.raises(PrivacyError, match="already recorded"):
        ledger.record(Mechanism(1.0, 0.1, 20), "s", "run-1", 0)
    assert len(ledger.entries()) == 1


def test_budget_is_enforced_across_studies(tmp_path: Path) -> None:
    one = epsilon([ROUND], DELTA, "rdp")
    two = epsilon([ROUND, ROUND], DELTA, "rdp")
    ledger = _ledger(tmp_path, budget=(two + epsilon([ROUND] * 3, DELTA, "rdp")) / 2)
    ledger.record(ROUND, "study-a", "run-a", 0)
    assert ledger.check(ROUND, "study-b", "run-b", 0) == pytest.approx(two)
    ledger.record(ROUND, "study-b", "run-b", 0)
    with pytest.raises(PrivacyBudgetExceeded) as info:
        ledger.check(ROUND, "study-c", "run-c", 4)
    err = info.value
    assert isinstance(err, FedradError)
    assert err.budget == ledger.budget
    assert err.spent == pytest.approx(two)
    assert err.after > err.budget
    message = str(err)
    assert f"budget epsilon {ledger.budget:g}" in message
    assert f"already spent {two:.4g}" in message
    assert "would bring it to" in message and "study-c" in message
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.record(ROUND, "study-c", "run-c", 4)
    assert len(ledger.entries()) == 2  # the refused round was not written
    assert one < two


def test_planned_study_fits_its_budget_exactly(tmp_path: Path) -> None:
    """Plan a study for epsilon 2 and run its rounds against a site budget of 2: all fit."""
    schedule = steps_for(n_train=120, batch_size=12, local_epochs=1, rounds=10)
    sigma = plan_noise(2.0, DELTA, schedule.sample_rate, schedule.steps, "rdp")
    ledger = _ledger(tmp_path, budget=2.0)
    for r in range(schedule.rounds):
        ledger.check(schedule.round_mechanism(sigma), "s", "run", r)
        ledger.record(schedule.round_mechanism(sigma), "s", "run", r)
    assert 1.99 <= ledger.spent() <= 2.0
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.check(schedule.round_mechanism(sigma), "s", "run", schedule.rounds)


def test_study_delta_larger_than_the_site_is_refused(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(PrivacyError, match="larger than this site's delta"):
        ledger.check(ROUND, "s", "run", 0, study_delta=1e-4)
    with pytest.raises(PrivacyError, match="larger than this site's delta"):
        ledger.record(ROUND, "s", "run", 0, study_delta=1e-4)
    entry = ledger.record(ROUND, "s", "run", 0, study_delta=1e-6)
    assert entry.delta == DELTA  # composed at the site's delta


def test_noiseless_round_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PrivacyError, match="not differentially private"):
        _ledger(tmp_path).record(Mechanism(0.0, 0.1, 5), "s", "run", 0)


@pytest.mark.parametrize(
    ("budget", "delta", "accountant"),
    [(0.0, 1e-5, "rdp"), (-1.0, 1e-5, "rdp"), (float("inf"), 1e-5, "rdp"), (1.0, 2.0, "rdp"),
     (1.0, 1e-5, "moments")],
)  # fmt: skip
def test_bad_settings_are_refused(tmp_path: Path, budget, delta, accountant) -> None:
    with pytest.raises(PrivacyError):
        PrivacyLedger(tmp_path / "l.json", budget, delta, accountant)


@pytest.mark.parametrize(
    ("study", "run_id", "round"), [("", "r", 0), ("s", "", 0), ("s", "r", -1), ("s", "r", 1.0)]
)
def test_bad_keys_are_refused(tmp_path: Path, study, run_id, round) -> None:
    with pytest.raises(PrivacyError):
        _ledger(tmp_path).record(ROUND, study, run_id, round)


def _valid_entry() -> dict:
    return {
        "time": "2025-01-01T00:00:00+00:00",
        "study": "s",
        "run_id": "r",
        "round": 0,
        "noise_multiplier": 1.5,
        "sample_rate": 0.1,
        "steps": 20,
        "delta": 1e-5,
        "accountant": "rdp",
        "epsilon_after": 1.0,
    }


def _doc(*entries: dict) -> str:
    return json.dumps({"format": "fedrad-privacy-ledger", "version": 1, "entries": list(entries)})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not valid JSON"),
        ('{"format": "fedrad-privacy-ledger", "version": 1, "entr', "not valid JSON"),
        ("[]", "not a fedrad privacy ledger"),
        ('{"format": "fedrad-privacy-ledger", "version": 7, "entries": []}', "version 7"),
        ('{"format": "fedrad-privacy-ledger", "version": 1, "entries": {}}', "not a list"),
        (_doc({k: v for k, v in _valid_entry().items() if k != "steps"}), "lacks steps"),
        (_doc({**_valid_entry(), "steps": -3}), "steps"),
        (_doc({**_valid_entry(), "round": "zero"}), "round"),
        (_doc(_valid_entry(), _valid_entry()), "appears twice"),
    ],
)
def test_corrupt_ledger_is_an_error_never_a_reset(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "privacy-ledger.json"
    path.write_text(text)
    with pytest.raises(LedgerCorruptError, match=match) as info:
        PrivacyLedger(path, 10.0, DELTA, "rdp")
    assert str(path) in str(info.value)
    assert path.read_text() == text  # untouched


def test_corrupted_after_opening_blocks_recording(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record(ROUND, "s", "r", 0)
    ledger.path.write_text("{ garbage")
    with pytest.raises(LedgerCorruptError, match="never resets"):
        ledger.record(ROUND, "s", "r", 1)
    assert ledger.path.read_text() == "{ garbage"


def test_valid_hand_written_ledger_is_read(tmp_path: Path) -> None:
    path = tmp_path / "privacy-ledger.json"
    path.write_text(_doc(_valid_entry()))
    ledger = PrivacyLedger(path, None, DELTA, "rdp")
    assert ledger.spent() == pytest.approx(epsilon([ROUND], DELTA, "rdp"))


def test_failed_write_leaves_the_old_ledger_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the final rename fails (disk full, crash)."""
    ledger = _ledger(tmp_path)
    ledger.record(ROUND, "s", "r", 0)
    before = ledger.path.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("simulated failure")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        ledger.record(ROUND, "s", "r", 1)
    monkeypatch.undo()
    assert ledger.path.read_bytes() == before
    leftovers = sorted(p.name for p in ledger.path.parent.iterdir())
    assert leftovers == ["privacy-ledger.json", "privacy-ledger.json.lock"]


def test_concurrent_studies_cannot_both_take_the_last_budget(tmp_path: Path) -> None:
    """Four writers at once (separate ledger objects, as separate processes would be); the budget
    fits two rounds, so exactly two are recorded and two refused."""
    path = tmp_path / "privacy-ledger.json"
    two = epsilon([ROUND, ROUND], DELTA, "rdp")
    budget = (two + epsilon([ROUND] * 3, DELTA, "rdp")) / 2

    def attempt(i: int) -> str:
        ledger = PrivacyLedger(path, budget, DELTA, "rdp")
        try:
            ledger.record(ROUND, f"study-{i}", f"run-{i}", 0)
        except PrivacyBudgetExceeded:
            return "refused"
        return "recorded"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = sorted(pool.map(attempt, range(4)))
    assert outcomes == ["recorded", "recorded", "refused", "refused"]
    assert len(PrivacyLedger(path, budget, DELTA, "rdp").entries()) == 2


def test_spent_per_study_and_integer_run_ids(tmp_path: Path) -> None:
    """Flower's run ids are integers; they are stored as strings and match either way."""
    ledger = _ledger(tmp_path)
    ledger.record(ROUND, "study-a", 17, 0)
    ledger.record(ROUND, "study-a", 17, 1)
    ledger.record(ROUND, "study-b", 99, 0)
    assert ledger.record(ROUND, "study-a", "17", 1).run_id == "17"  # same key: no new entry
    assert len(ledger.entries()) == 3
    assert ledger.spent(study="study-a") == pytest.approx(epsilon([ROUND] * 2, DELTA, "rdp"))
    assert ledger.spent(run_id=17) == ledger.spent(study="study-a")
    assert ledger.spent(study="study-b", run_id="99") == pytest.approx(
        epsilon([ROUND], DELTA, "rdp")
    )
    assert ledger.spent() == pytest.approx(epsilon([ROUND] * 3, DELTA, "rdp"))
    assert ledger.spent(study="nobody") == 0.0
