"""A whole simulated study: only model arrays and aggregate metrics left each site.

Three virtual hospitals (synthetic NIfTI cohort, real extraction, Flower's simulation engine, two
rounds) each keep an egress log at ``RUN_DIR/sites/SITE/egress.jsonl``. The log holds shapes,
values of scalars and text, and hashes of numeric lists; so the test checks what the messages
contained: no case id anywhere, arrays only of the model's parameter shapes or per-feature
vectors and matrices, metric and config keys only from the aggregate allow-list, text only
feature names, and no list as long as a site's number of cases.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedrad.federation import protocol
from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.federation.egress import EgressEntry, read_egress
from fedrad.federation.sealing import SEALED_RECORD
from fedrad.federation.site_data import site_feature_table
from fedrad.learn.federated_calibration import N_STATISTICS
from fedrad.learn.models import build_model, get_parameters
from fedrad.simulation.harness import Scenario, run_scenario
from fedrad.site.policy import SitePolicy

pytestmark = pytest.mark.slow

ROUNDS = 2
PATIENTS = 22

#: Every record item a site may send, by record name: its aggregate statistics and the model.
ALLOWED = {
    "site": {"site_id"},
    "report": {"ok", "reason", "usable-features"},
    "counts": {"n-cases", "n-train", "n-test", "n-positive", "failed-cases"},
    "metrics": {
        "num-examples",
        "train-loss",
        "hist-neg",
        "hist-pos",
        "confusion",
        "sq-error",
        "auc",
        "cindex-score",
        "cindex-comparable",
        *protocol.PRIVACY_METRICS,
    },
    "stats": {"loglik", "num-examples"},
    "moments": {"n", "sum", "sumsq"},
    "newton": {"grad", "hess"},
    "calibration": {"stats"},  # nine sums over the held-out cases per calibration exchange
    "arrays": {"0", "1", "2", "3", "4", "5"},  # the model's parameter tensors, in order
    "release": {"kind", "key", "protection"},  # what the site's release path applied
}
#: The records that may hold arrays (their shapes are checked against the model and features).
ARRAY_RECORDS = {"arrays", "moments", "newton", "calibration"}
#: The envelope of a sealed reply (fedrad.federation.sealing): keys, nonce, ciphertext, ids.
ENVELOPE = {
    "version",
    "site-id",
    "run-id",
    "server-round",
    "message-id",
    "ephemeral-key",
    "recipient-key",
    "nonce",
    "ciphertext",
    "signature",
}
#: The only numeric lists a site sends, with their lengths.
LIST_LENGTHS = {
    "hist-neg": protocol.SCORE_BINS,
    "hist-pos": protocol.SCORE_BINS,
    "confusion": 4,
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StudyConfig]:
    study = StudyConfig.from_dict(
        {
            "study": {"name": "egress", "label_column": "outcome", "min_cases": 8, "seed": 3},
            "features": {
                "resampled_spacing": [1.0, 1.0, 1.0],
                "interpolation": "linear",
                "discretisation": {"method": "fbn", "value": 16},
                "families": ["morph", "stat"],
            },
            "model": {"type": "logistic"},
            "training": {"rounds": ROUNDS, "local_epochs": 1, "min_sites": 3},
        }
    )
    scenario = Scenario(
        name="egress",
        study=study,
        cohort={"patients_per_site": PATIENTS},
        sites=3,
        seed=5,
        policy=SitePolicy.allowing(study, min_cell_count=1),  # no DP or SecAgg+, tiny sites
    )
    run_dir = tmp_path_factory.mktemp("egress") / "run"
    run_scenario(scenario, run_dir, progress=False)
    return run_dir, study


def _site_folders(run_dir: Path) -> list[Path]:
    folders = sorted(p.parent for p in (run_dir / "sites").glob("*/site.toml"))
    assert len(folders) == 3, folders
    return folders


def _case_ids(folder: Path) -> list[str]:
    with (folder / "manifest.csv").open(newline="") as fh:
        return [row["case_id"] for row in csv.DictReader(fh)]


def _log(folder: Path) -> list[EgressEntry]:
    path = folder / "egress.jsonl"
    assert path.exists(), (
        f"{path} is missing: build_client_app must put fedrad.federation.egress.make_egress_mod "
        "first in ClientApp(mods=[...]) and virtual sites need egress_log = 'egress.jsonl'"
    )
    assert SiteConfig.from_file(folder / "site.toml").egress_log_path == path.resolve()
    return read_egress(path)


def test_every_message_of_every_site_is_logged(simulated) -> None:
    run_dir, _ = simulated
    for folder in _site_folders(run_dir):
        entries = _log(folder)
        site_id = SiteConfig.from_file(folder / "site.toml").site_id
        kinds = [e.kind for e in entries]
        assert kinds.count("query/check") == 1 and kinds.count("query/moments") == 1, kinds
        allowed_kinds = {"query/check", "query/moments", "query/calibration", "train", "evaluate"}
        assert set(kinds) <= allowed_kinds, kinds
        assert kinds.count("query/calibration") >= 2, kinds  # the final model's calibration fit
        assert sorted(e.round for e in entries if e.kind == "train") == list(range(1, ROUNDS + 1))
        assert kinds.count("evaluate") >= ROUNDS
        for e in entries:
            assert e.site == site_id and e.error is None
            assert e.bytes > 0 and len(e.sha256) == 64
        assert len({e.raw["run"] for e in entries}) == 1


def test_no_case_id_left_any_site(simulated) -> None:
    run_dir, _ = simulated
    for folder in _site_folders(run_dir):
        ids = _case_ids(folder)
        assert len(ids) == PATIENTS
        text = (folder / "egress.jsonl").read_text()
        leaked = [c for c in ids if c in text]
        assert not leaked, f"case ids in the egress log of {folder.name}: {leaked[:5]}"


def _check_envelope(e: EgressEntry, site_id: str) -> None:
    """What left a sealed reply: one envelope record, and the log describes its plaintext."""
    names = {name for name, _ in e.items(as_sent=True)}
    assert names <= {SEALED_RECORD}, (e.kind, names)
    if not e.sealed:
        return
    sent = {item["key"]: item for _, item in e.items(as_sent=True)}
    assert set(sent) <= ENVELOPE, (e.kind, sorted(sent))
    assert sent["site-id"]["value"] == site_id
    for item in sent.values():
        if item["type"] == "bytes":
            assert "value" not in item and item["length"] > 0


def test_only_model_arrays_and_aggregates_left(simulated) -> None:
    run_dir, study = simulated
    for folder in _site_folders(run_dir):
        entries = _log(folder)
        site = SiteConfig.from_file(folder / "site.toml")
        check = next(e for e in entries if e.kind == "query/check")
        counts = {item["key"]: item["value"] for _, item in check.items("metrics")}
        case_counts = {PATIENTS, counts["n-cases"], counts["n-train"], counts["n-test"]}
        feature_names = set(site_feature_table(site, study).feature_names)  # from the cache
        n_features = next(e for e in entries if e.kind == "query/moments").array_shapes()[0][0]
        assert n_features <= len(feature_names) and n_features not in case_counts
        model = build_model(study.model_settings(), n_features)
        model_shapes = [tuple(a.shape) for a in get_parameters(model)]
        allowed_shapes = {*model_shapes, (n_features,), (n_features, n_features)}
        for e in entries:
            sent = {name for name, _ in e.items(as_sent=True)}
            assert e.sealed or SEALED_RECORD not in sent, (
                f"{e.kind}: a sealed reply was logged without its plaintext; put "
                "fedrad.federation.egress.egress_plaintext_mod right inside the sealing mod"
            )
            if e.sealed:
                _check_envelope(e, site.site_id)
            if e.kind == "train":
                assert e.array_shapes() == model_shapes  # the model's parameters, nothing more
            if e.kind == "query/calibration":  # a fixed number of sums, whatever the site's size
                assert e.array_shapes() == [(N_STATISTICS,)], e.array_shapes()
            for shape in [] if e.kind == "query/calibration" else e.array_shapes():
                assert shape in allowed_shapes, (e.kind, shape)
                assert not set(shape) & case_counts, (e.kind, shape, case_counts)
            for record, _ in e.items("arrays"):
                assert record in ARRAY_RECORDS, (e.kind, record)
            for record, item in e.items():  # what the message holds (a sealed one: opened)
                assert record in ALLOWED and item["key"] in ALLOWED[record], (e.kind, record, item)
                if "shape" in item:
                    continue
                if item["type"].startswith("list") and "value" not in item:
                    assert item["length"] == LIST_LENGTHS[item["key"]], (e.kind, item)
                    assert item["length"] not in case_counts
                if item["key"] == "usable-features":  # text that left: feature names only
                    assert set(item["value"]) <= feature_names, item["value"]
                elif item["type"] == "str":
                    assert item["key"] in ("site_id", "reason", "kind", "key", "protection"), item
                assert item["type"] not in ("bytes", "list[bytes]"), (e.kind, item)
        assert any(e.kind == "train" for e in entries)


def test_site_audit_reads_a_simulated_site(simulated, capsys) -> None:
    import argparse

    from fedrad.commands import site_audit

    run_dir, _ = simulated
    folder = _site_folders(run_dir)[0]
    parser = argparse.ArgumentParser()
    site_audit.add_parser(parser.add_subparsers())
    args = parser.parse_args(["audit", str(folder / "site.toml"), "--json"])
    assert args.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["messages"] == len(_log(folder))
    assert out["summary"]["by_kind"]["train"]["messages"] == ROUNDS
