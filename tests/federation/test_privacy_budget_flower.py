"""A site whose privacy budget runs out refuses the next round; the server carries on without it.

Three virtual sites on Flower's simulation engine, DP-SGD planned for epsilon 2 over 4 rounds;
one site's site.toml allows only epsilon 1, so it trains the first round(s) and then refuses.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.privacy.accountant import Mechanism
from fedrad.privacy.ledger import PrivacyLedger
from fedrad.simulation.harness import run_federation, sites_from_feature_table
from fedrad.site.policy import SitePolicy

pytestmark = pytest.mark.slow

TIGHT_BUDGET = 2.4
#: What east already spent in an earlier study (its lifetime budget admits this study, whose
#: target is 2, but not all of it on top of the earlier spending).
EARLIER = Mechanism(2.0, 0.2, 10)  # epsilon about 1.63 at delta 1e-5


def _table(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for site, n in (("north", 50), ("south", 45), ("east", 40)):
        X = rng.normal(size=(n, 3))
        y = (X[:, 0] + rng.normal(scale=0.5, size=n) > 0).astype(int)
        rows += [
            {"hospital": site, "label": int(y[i]), **{f"stat_f{j}": X[i, j] for j in range(3)}}
            for i in range(n)
        ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_out_of_budget_site_leaves_and_study_finishes(tmp_path: Path) -> None:
    study = (
        StudyConfig(name="budget", min_cases=10)
        .with_training(rounds=4, local_epochs=1, batch_size=16, learning_rate=0.1)
        .with_privacy(mode="sample", target_epsilon=2.0)
    )
    sites = sites_from_feature_table(
        _table(tmp_path / "table.csv"),
        "hospital",
        "label",
        tmp_path,
        study,
        policy=SitePolicy.allowing(study),  # a sealed study without SecAgg+
    )
    east = next(s for s in sites if s.site_id == "east")
    toml = east.root / "site.toml"
    toml.write_text(toml.read_text() + f"\n[privacy]\nepsilon_budget = {TIGHT_BUDGET}\n")
    sites = [SiteConfig.from_file(s.root / "site.toml") for s in sites]
    east = next(s for s in sites if s.site_id == "east")
    PrivacyLedger(east.ledger_path, TIGHT_BUDGET, east.delta, "prv").record(
        EARLIER, study="earlier", run_id="0", round=1
    )

    result = run_federation(study, sites, tmp_path / "run")

    privacy = result["summary"]["privacy"]
    assert list(privacy["out_of_budget"]) == ["east"]
    assert "budget" in privacy["out_of_budget"]["east"].lower()
    # the others trained every round; east trained only while its budget allowed
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 4
    assert all({"north", "south"} <= set(h["train_sites"]) for h in history)
    east_rounds = [h["round"] for h in history if "east" in h["train_sites"]]
    assert (
        east_rounds and east_rounds == list(range(1, len(east_rounds) + 1)) and len(east_rounds) < 4
    )
    # east's ledger never exceeds its budget; the others spent (about) the study's target
    east_ledger = PrivacyLedger(east.ledger_path, TIGHT_BUDGET, east.delta, "prv")
    assert east_ledger.spent() <= TIGHT_BUDGET
    assert len(east_ledger.per_round()) == len(east_rounds) + 1  # with the earlier study
    for site in ("north", "south"):
        assert privacy["epsilon"][site] == pytest.approx(2.0, abs=0.05)
