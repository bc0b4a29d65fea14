"""`fedrad simulate` with differential privacy: what metrics.json reports, what the ledgers hold,
and sealing of updates when secure aggregation is off.

One small federation (3 virtual sites, 3 rounds) serves every assertion: it runs the whole site
path (NIfTI files -> extraction -> Opacus DP-SGD in a Flower ClientApp).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrad.cli import main
from fedrad.federation.config import SiteConfig

pytestmark = pytest.mark.slow

EPSILON = 2.0


@pytest.fixture(scope="module")
def sealed_dp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dp") / "run"
    argv = ["simulate", "--sites", "3", "--rounds", "3", "--seed", "5"]
    argv += ["--epsilon", str(EPSILON), "--no-secure-aggregation", "-o", str(run)]
    assert main(argv) == 0
    return run


def _json(path: Path):
    return json.loads(path.read_text())


def test_metrics_report_the_privacy_each_site_spent(sealed_dp_run: Path) -> None:
    privacy = _json(sealed_dp_run / "metrics.json")["privacy"]
    assert privacy["mode"] == "sample" and privacy["accountant"] == "prv"
    assert privacy["secure_aggregation"] is False
    assert privacy["delta"] == pytest.approx(1e-5)
    assert len(privacy["epsilon"]) == 3
    for site, spent in privacy["epsilon"].items():
        # the noise was planned for the whole study: all rounds spend the target, never more
        assert EPSILON - 0.05 <= spent <= EPSILON + 1e-6, (site, spent)
        assert privacy["noise_multiplier"][site] > 0.5


def test_each_site_ledger_holds_one_entry_per_round(sealed_dp_run: Path) -> None:
    from fedrad.privacy.ledger import PrivacyLedger

    spent = _json(sealed_dp_run / "metrics.json")["privacy"]["epsilon"]
    for toml in sorted((sealed_dp_run / "sites").glob("*/site.toml")):
        site = SiteConfig.from_file(toml)
        ledger = PrivacyLedger(site.ledger_path, site.epsilon_budget, site.delta, "prv")
        rounds = [row["round"] for row in ledger.per_round()]
        assert rounds == [1, 2, 3], site.site_id
        assert ledger.spent() == pytest.approx(spent[site.site_id], abs=1e-6)


def test_history_shows_epsilon_per_site_per_round(sealed_dp_run: Path) -> None:
    history = _json(sealed_dp_run / "history.json")
    assert [h["round"] for h in history] == [1, 2, 3]
    growth = []
    for entry in history:
        eps = {s: v["epsilon_study"] for s, v in entry["train_sites"].items()}
        assert len(eps) == 3
        growth.append(max(eps.values()))
    assert growth[0] < growth[1] < growth[2] <= EPSILON + 1e-6


def test_updates_were_sealed_end_to_end(sealed_dp_run: Path) -> None:
    federation = _json(sealed_dp_run / "federation.json")
    assert federation["sealing"] == {"enabled": True, "rejected": []}
    # the DP noise secret stays in the site's keys folder, readable by the site only
    for keys in sorted((sealed_dp_run / "sites").glob("*/keys")):
        secret = keys / "dp-noise.secret"
        assert secret.stat().st_mode & 0o077 == 0, secret
