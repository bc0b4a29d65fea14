"""The simulation harness: a whole federation of virtual hospitals on one machine.

``run_scenario`` follows exactly the path of a real study: each virtual site is a folder with a
``site.toml`` and its files (a manifest of NIfTI images and masks, or a feature table); each site
extracts its features; Flower's simulation engine runs the study's ServerApp against one ClientApp
per site. Then, for method development, the harness compares the federated model with a pooled
centralised model and with local-only models on the same pooled held-out cases.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedrad.errors import FedradError
from fedrad.federation.config import ConfigError, SiteConfig, StudyConfig
from fedrad.federation.site_data import site_arrays, site_feature_table
from fedrad.federation.site_privacy import write_dp_secret
from fedrad.simulation import baselines
from fedrad.site.policy import SitePolicy

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "default.toml"


@dataclass
class Scenario:
    """A scenario file: the study, the virtual cohort and the simulation's own settings.

    ``[cohort]`` configures the synthetic cohort generator, or names a real data set
    (``source = "ibsi_sts"``, see :mod:`fedrad.simulation.real_cohort`). ``[simulation]
    cv_folds = k`` (k >= 2) runs a stratified k-fold cross-validation
    (:mod:`fedrad.simulation.crossval`) instead of one train/held-out split.
    """

    name: str
    study: StudyConfig
    cohort: dict[str, Any] = field(default_factory=dict)
    sites: int = 5
    seed: int = 7
    source: Path | None = None
    cv_folds: int = 0
    #: The virtual sites' ``[policy]`` (None: fedrad's default site policy).
    policy: SitePolicy | None = None

    @staticmethod
    def from_file(path: str | Path) -> Scenario:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: scenario file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        sim = dict(data.pop("simulation", {}))
        cohort = dict(data.pop("cohort", {}))
        policy_table = data.pop("policy", None)
        policy = (
            None if policy_table is None else SitePolicy.from_dict(policy_table, str(path), None)
        )
        study = StudyConfig.from_dict(data, where=str(path)).with_inlined_params(path.parent)
        cv_folds = int(sim.get("cv_folds", study.cv_folds))
        if cv_folds == 1 or cv_folds < 0:
            raise ConfigError(
                f"{path}: [simulation] cv_folds must be 0 (no cross-validation) or >= 2"
            )
        return Scenario(
            name=str(sim.get("name", path.stem)),
            study=study,
            cohort=cohort,
            sites=int(sim.get("sites", 5)),
            seed=int(sim.get("seed", 7)),
            source=path,
            cv_folds=cv_folds,
            policy=policy,
        )


def write_site_toml(
    folder: Path,
    site_id: str,
    *,
    manifest: str | None = None,
    feature_table: str | None = None,
    policy: SitePolicy | None = None,
) -> Path:
    """A minimal site.toml for a virtual site (with ``policy`` as its ``[policy]``, else the
    default policy)."""
    lines = ["[site]", f'id = "{site_id}"']
    if manifest:
        lines.append(f'manifest = "{manifest}"')
    if feature_table:
        lines.append(f'feature_table = "{feature_table}"')
    lines += [
        'cache_dir = "cache"',
        'log_dir = "logs"',
        'keys_dir = "keys"',
        'egress_log = "egress.jsonl"',
        "",
    ]
    if policy is not None:
        lines.append(policy.to_toml())
    path = folder / "site.toml"
    path.write_text("\n".join(lines))
    return path


def sites_from_feature_table(
    table: Path,
    site_column: str,
    label_column: str,
    out: Path,
    study: StudyConfig,
    policy: SitePolicy | None = None,
) -> list[SiteConfig]:
    """Split a multi-site feature table (one row per case) into virtual site folders."""
    with table.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        rows = list(reader)
    for col in (site_column, label_column):
        if col not in columns:
            raise ConfigError(f"{table}: no column {col!r} (columns: {', '.join(columns[:8])}...)")
    if "case_id" not in columns:
        for i, row in enumerate(rows):
            row["case_id"] = f"case{i:05d}"
        columns = ["case_id", *columns]
    by_site: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_site.setdefault(row[site_column], []).append(row)
    sites = []
    for site_id in sorted(by_site):
        folder = out / "sites" / _safe(site_id)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "features.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[c for c in columns if c != site_column])
            writer.writeheader()
            for row in by_site[site_id]:
                writer.writerow({k: v for k, v in row.items() if k != site_column})
        toml = write_site_toml(folder, _safe(site_id), feature_table="features.csv", policy=policy)
        text = toml.read_text() + f'\n[columns]\n{study.label_column} = "{label_column}"\n'
        toml.write_text(text)
        sites.append(SiteConfig.from_file(toml))
    return sites


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text) or "site"


def sites_from_cohort(scenario: Scenario, out: Path, progress: bool) -> list[SiteConfig]:
    """Generate the synthetic multi-scanner cohort and a site folder per virtual hospital.

    A real data set (``[cohort] source``) gives a site folder per group of its cases instead;
    ``scenario.sites`` becomes their number and ``scenario.study`` the study to run on them.
    """
    from fedrad.simulation import real_cohort

    if real_cohort.is_real_cohort(scenario.cohort):
        real = real_cohort.build_cohort(scenario, out, progress=progress)
        scenario.study, scenario.sites = real.study, len(real.sites)
        return real.sites
    from fedrad.simulation.cohort import CohortSpec, generate_cohort

    spec = CohortSpec.from_dict({**scenario.cohort, "sites": scenario.sites}, seed=scenario.seed)
    cohort = generate_cohort(out, spec, seed=scenario.seed, progress=progress, overwrite=True)
    sites = []
    for site in cohort.sites:
        folder = Path(site.folder)
        toml = write_site_toml(
            folder, site.site_id, manifest=Path(site.manifest).name, policy=scenario.policy
        )
        sites.append(SiteConfig.from_file(toml))
    return sites


class _KnownDeprecation(logging.Filter):
    """Drops Flower's notice that ``run_simulation`` is deprecated (fedrad knows; the harness
    moves to ``flwr run`` with a local simulation federation when Flower removes it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def quiet_flower() -> None:
    """Flower and Ray without telemetry, usage statistics or known deprecation notices.

    Flower's round-by-round INFO lines stay: they are the federation's progress.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    flower = logging.getLogger("flwr")
    if not any(isinstance(f, _KnownDeprecation) for f in flower.filters):
        flower.addFilter(_KnownDeprecation())


def simulation_keys(sites: list[SiteConfig]):
    """Fresh keys for a simulated study: the ServerApp's sealing key, each virtual site's
    Ed25519 identity (registered with the server) and the server key each site pins."""
    from fedrad.federation.sealing import SiteSealing
    from fedrad.federation.server_app import UpdateSealing
    from fedrad.secure.identity import SiteRegistry, generate_identity, generate_sealing_key

    server_key = generate_sealing_key()
    identities = {site.site_id: generate_identity() for site in sites}
    registry = SiteRegistry({sid: key.public_key() for sid, key in identities.items()})
    sealings = [
        SiteSealing(site.site_id, identities[site.site_id], server_key.public_key(), True)
        for site in sites
    ]
    return UpdateSealing(server_key, registry), sealings


def approve_studies(sites: list[SiteConfig], studies: list[StudyConfig]) -> None:
    """Each virtual hospital approves the scenario's studies, as a real one would with
    ``fedrad site approve`` (its policy still applies to every message)."""
    from fedrad.site.approval import approve

    for site in sites:
        for study in studies:
            approve(site, study)


def run_federations(
    studies: list[tuple[StudyConfig, Path]], sites: list[SiteConfig]
) -> list[dict[str, Any]]:
    """Run every ``(study, run_dir)`` in turn over the same virtual sites, in one session of
    Flower's simulation engine (the ServerApp runs them one after the other; one ClientApp per
    site). Starting the engine costs far more than a small study, so cross-validation folds
    share it. Returns each study's results (arrays, history, summary, standardisation).
    """
    quiet_flower()
    from flwr.simulation import run_simulation

    from fedrad.federation.client_app import build_client_app, simulation_resolver
    from fedrad.federation.sealing import simulation_sealing_resolver
    from fedrad.federation.server_app import build_server_app

    results: list[dict[str, Any]] = []
    failures: list[BaseException] = []
    approve_studies(sites, [study for study, _ in studies])
    sealing, site_sealings = simulation_keys(sites)
    run_simulation(
        server_app=build_server_app(
            studies, results, sealing=sealing, failures=failures, expected_sites=len(sites)
        ),
        client_app=build_client_app(
            simulation_resolver(sites), simulation_sealing_resolver(site_sealings)
        ),
        num_supernodes=len(sites),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": max(1, os.cpu_count() or 1),
                "include_dashboard": False,
                "log_to_driver": False,
            },
        },
    )
    if failures:
        exc = failures[0]
        if isinstance(exc, FedradError):
            raise exc
        which = f"study {len(results) + 1} of {len(studies)}" if len(studies) > 1 else "the study"
        raise FedradError(f"{which} failed: {type(exc).__name__}: {exc}") from exc
    if len(results) != len(studies):
        raise FedradError(
            f"the federation stopped after {len(results)} of {len(studies)} studies; "
            f"see {studies[len(results)][1]} and the log above"
        )
    return results


def run_federation(study: StudyConfig, sites: list[SiteConfig], run_dir: Path) -> dict[str, Any]:
    """Flower's simulation engine: the study's ServerApp and one ClientApp per site."""
    return run_federations([(study, run_dir)], sites)[0]


def compare(
    study: StudyConfig, sites: list[SiteConfig], federation: dict[str, Any]
) -> dict[str, Any]:
    """Federated vs pooled vs local-only on the pooled held-out cases (simulation only)."""
    std = federation["standardisation"]
    data = [site_arrays(site_feature_table(s, study), s, study, std.features) for s in sites]
    accepted = {r["site_id"] for r in federation["summary"]["sites"] if r.get("ok")}
    data = [d for d in data if d.site_id in accepted]
    held = baselines.pooled_held_out(data)
    key = "auc" if study.task == "binary" else "c_index"
    federated = baselines.federated_model_score(
        study, federation["arrays"], std.mean, std.std, held
    )
    pooled = baselines.pooled_model_score(study, data, held)
    local = baselines.local_model_scores(study, data, held)
    final = federation["summary"]["final"]
    # a site may withhold its evaluation (its policy's minimum cell count): the server's
    # site-aggregate figure covers the others, and is checked against the exact figure on them
    evaluated = sorted(final.get("sites", {}))
    shown = [d for d in data if d.site_id in evaluated]
    exact_evaluated = (
        baselines.federated_model_score(
            study, federation["arrays"], std.mean, std.std, baselines.pooled_held_out(shown)
        )
        if shown
        else float("nan")
    )
    return {
        "metric": key,
        "sites_evaluated": evaluated,
        "federated": {
            key: federated,
            f"{key}_from_site_aggregates": final.get("pooled", {}).get(key),
            f"{key}_on_evaluated_sites": exact_evaluated,
            **{
                k: final.get("pooled", {}).get(k)
                for k in ("calibration_slope", "calibration_intercept", "brier")
                if k in final.get("pooled", {})
            },
        },
        "pooled": {key: pooled},
        "local_only": {f"{key}_mean": float(np.nanmean(list(local.values()))), "per_site": local},
        "n_held_out": int(held.y.shape[0]),
    }


def site_budgets(sites: list[SiteConfig], study: StudyConfig) -> dict[str, Any]:
    """How each site's privacy budget was spent and what it released, from the site's own
    ledger and egress log (what a hospital reads with ``fedrad site audit``)."""
    from fedrad.federation.egress import read_egress
    from fedrad.federation.site_privacy import site_ledger

    out: dict[str, Any] = {}
    for site in sites:
        ledger = site_ledger(site, study)
        released: dict[str, dict[str, int]] = {}
        if site.egress_log_path.exists():
            for entry in read_egress(site.egress_log_path):
                kinds = released.setdefault(entry.kind, {})
                label = "+".join(entry.protection) or "clear"
                kinds[label] = kinds.get(label, 0) + 1
        out[site.site_id] = {
            "epsilon_budget": ledger.budget,
            "epsilon_spent": ledger.spent(),
            "dp_rounds": len(ledger.entries()),
            "delta": ledger.delta,
            "released": released,
        }
    return out


def run_scenario(
    scenario: Scenario,
    run_dir: Path,
    *,
    sites: list[SiteConfig] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate (or take) the sites, extract, federate, compare; write ``metrics.json``."""
    from fedrad.federation.run_dir import RunDirectory

    run = RunDirectory(run_dir)
    t0 = time.perf_counter()
    if sites is None:
        sites = sites_from_cohort(scenario, run.path, progress)
    timings = {"generate_s": time.perf_counter() - t0}
    for site in sites:  # virtual hospitals are new in every run: so are their privacy ledgers
        site.ledger_path.unlink(missing_ok=True)
        site.egress_log_path.unlink(missing_ok=True)
        shutil.rmtree(site.cache_dir / "releases", ignore_errors=True)
        # a real site draws its DP secret at random; a virtual one from the seed, so runs repeat
        secret = hashlib.sha256(f"dp-secret:{scenario.seed}:{site.site_id}".encode()).digest()
        write_dp_secret(site, secret)
    t1 = time.perf_counter()
    for site in sites:  # each site extracts (and caches) its features, as a hospital would
        site_feature_table(site, scenario.study, progress=progress)
    timings["extract_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    federation = run_federation(scenario.study, sites, run.path)
    timings["federate_s"] = time.perf_counter() - t2
    privacy = federation["summary"]["privacy"]
    comparison = compare(scenario.study, sites, federation)
    timings["total_s"] = time.perf_counter() - t0
    key = comparison["metric"]
    metrics = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "task": scenario.study.task,
        "strategy": scenario.study.training.strategy,
        "sites": len(sites),
        "rounds": scenario.study.training.rounds
        if scenario.study.training.strategy != "exact"
        else federation["summary"]["rounds"],
        "federated": comparison["federated"],
        "pooled": comparison["pooled"],
        "local_only": comparison["local_only"],
        "n_held_out": comparison["n_held_out"],
        "sites_evaluated": comparison["sites_evaluated"],
        "site_reports": [  # the server's pre-study checks
            {k: v for k, v in r.items() if k != "node_id"} for r in federation["summary"]["sites"]
        ],
        "privacy": {
            "epsilon": privacy["epsilon"],
            "delta": privacy["delta"],
            "accountant": privacy["accountant"] if privacy["mode"] != "none" else None,
            "mode": privacy["mode"],
            "noise_multiplier": privacy["noise_multiplier"],
            "out_of_budget": privacy["out_of_budget"],
            "secure_aggregation": privacy["secure_aggregation"],
        },
        "features": len(federation["standardisation"].features),
        "site_budgets": site_budgets(sites, scenario.study),
        "timings": timings,
        "metric": key,
    }
    run.write_json("metrics.json", metrics)
    return metrics
