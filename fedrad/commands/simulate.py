"""``fedrad simulate``: a whole federation of virtual hospitals on this machine."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedrad.errors import FedradError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a federation of virtual hospitals (default: synthetic 5-site cohort)",
        description=(
            "Run a multi-centre study on one machine: generate (or take) the sites' data, extract "
            "features at each site, federate with Flower's simulation engine, and compare the "
            "federated model with a pooled centralised model and local-only models on held-out cases."
        ),
    )
    p.add_argument(
        "scenario", nargs="?", help="scenario TOML (default: the built-in synthetic scenario)"
    )
    p.add_argument("--sites", type=int, help="number of virtual sites (synthetic cohort)")
    p.add_argument("--rounds", type=int, help="federated rounds")
    p.add_argument("--seed", type=int, help="seed of the cohort and the study")
    p.add_argument(
        "--strategy", help="fedavg, fedprox, fedadam, fedmedian, fedtrimmedavg, krum or exact"
    )
    p.add_argument(
        "--epsilon",
        type=float,
        help="sample-level DP (Opacus DP-SGD) at target epsilon per site for the whole study",
    )
    p.add_argument(
        "--no-dp",
        action="store_true",
        help="switch differential privacy off (the privacy-utility baseline)",
    )
    p.add_argument(
        "--secure-aggregation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Flower SecAgg+ secure aggregation on (or --no-secure-aggregation: off)",
    )
    p.add_argument("-o", "--output", help="run directory (default: runs/<scenario>-<seed>)")
    p.add_argument("--features", help="a precomputed multi-site feature table (one row per case)")
    p.add_argument("--site-column", help="with --features: the column naming each row's site")
    p.add_argument("--label-column", help="with --features: the binary outcome column")
    p.add_argument("--data", help="folder of the real data set the scenario names ([cohort] data)")
    p.add_argument(
        "--folds", type=int, help="cross-validation folds (overrides [simulation] cv_folds)"
    )
    p.set_defaults(run=run)


def load_scenario(args: argparse.Namespace):
    from fedrad.simulation.harness import DEFAULT_SCENARIO, Scenario

    scenario = Scenario.from_file(args.scenario or DEFAULT_SCENARIO)
    if args.sites is not None:
        if args.sites < 2:
            raise FedradError("--sites must be at least 2")
        scenario.sites = args.sites
    if args.seed is not None:
        scenario.seed = args.seed
        scenario.study = scenario.study.replace(seed=args.seed)
    training: dict[str, object] = {}
    if args.rounds is not None:
        training["rounds"] = args.rounds
    if args.strategy:
        training["strategy"] = args.strategy
    study = scenario.study
    # one replacement, so the study is validated once, with every flag applied
    scenario.study = dataclasses.replace(
        study,
        training=dataclasses.replace(study.training, **training),
        **privacy_changes(study, args),
    )
    return scenario


def privacy_changes(study, args: argparse.Namespace) -> dict[str, object]:
    """``--epsilon``, ``--no-dp`` and ``--[no-]secure-aggregation`` as replacements of the
    study's ``privacy`` and ``secure_aggregation`` settings."""
    epsilon = getattr(args, "epsilon", None)
    no_dp = getattr(args, "no_dp", False)
    secure = getattr(args, "secure_aggregation", None)
    changes: dict[str, object] = {}
    if epsilon is not None and no_dp:
        raise FedradError("--epsilon and --no-dp contradict each other: choose one")
    if epsilon is not None:
        if not epsilon > 0:
            raise FedradError("--epsilon must be positive")
        changes["privacy"] = dataclasses.replace(
            study.privacy, mode="sample", target_epsilon=float(epsilon), noise_multiplier=None
        )
    elif no_dp:
        changes["privacy"] = dataclasses.replace(study.privacy, mode="none")
    if secure is not None:
        changes["secure_aggregation"] = dataclasses.replace(
            study.secure_aggregation, enabled=bool(secure)
        )
    return changes


def run(args: argparse.Namespace) -> int:
    from fedrad.simulation.harness import run_scenario, sites_from_feature_table

    console = Console()
    scenario = load_scenario(args)
    apply_cohort_flags(scenario, args)
    run_dir = Path(args.output or f"runs/{scenario.name}-{scenario.seed}")
    sites = None
    widened: list[str] = []
    if args.features:
        if not (args.site_column and args.label_column):
            raise FedradError("--features needs --site-column and --label-column")
        scenario.name = Path(args.features).stem
        scenario.study = dataclasses.replace(
            scenario.study, feature_families=(), feature_settings={}
        )
        widened = virtual_site_policy(scenario)
        sites = sites_from_feature_table(
            Path(args.features),
            args.site_column,
            args.label_column,
            run_dir,
            scenario.study,
            policy=scenario.policy,
        )
        scenario.sites = len(sites)
    widened = widened or virtual_site_policy(scenario)
    if widened:
        from rich.text import Text

        console.print(
            Text(
                "virtual sites' policy widened for this simulation (fedrad's default site "
                "policy would refuse it): " + "; ".join(widened),
                style="yellow",
            )
        )
    rounds = scenario.study.training.rounds
    console.print(
        f"[bold]fedrad simulate[/] {scenario.name}: {scenario.sites} sites, "
        f"{rounds} round{'s' if rounds != 1 else ''} of {scenario.study.training.strategy}, "
        f"seed {scenario.seed}"
    )
    metrics = (
        run_cross_validated(scenario, run_dir, sites, console)
        if scenario.cv_folds
        else run_scenario(scenario, run_dir, sites=sites)
    )
    console.print(comparison_table(metrics))
    if "privacy" in metrics:
        console.print(privacy_line(metrics["privacy"]))
    console.print(f"run directory: {run_dir}  (metrics.json, history.json, checkpoints/, plots/)")
    return 0


def virtual_site_policy(scenario) -> list[str]:
    """Give the virtual sites a policy that admits the scenario's study.

    Without a ``[policy]`` in the scenario they carry fedrad's default site policy; when that
    would refuse the study (``--no-dp``, secure aggregation off, another strategy), they get the
    default widened just enough (:meth:`~fedrad.site.policy.SitePolicy.allowing`), and the
    clauses it widened are returned so the command can say so.
    """
    from fedrad.site.policy import SitePolicy, check_study

    if scenario.policy is not None:
        return []
    broken = check_study(SitePolicy(), scenario.study)
    if broken:
        scenario.policy = SitePolicy.allowing(scenario.study)
        still = check_study(scenario.policy, scenario.study)
        if still:
            raise FedradError("no site policy admits this study: " + "; ".join(still))
    return broken


def privacy_line(privacy: dict) -> str:
    """One line on how the sites' updates were protected and what privacy they spent."""
    secure = "on (Flower SecAgg+)" if privacy.get("secure_aggregation") else "off"
    mode = privacy.get("mode", "none")
    if mode == "none":
        dp = "differential privacy: off"
    else:
        spent = [v for v in privacy.get("epsilon", {}).values() if v is not None]
        kind = "per-patient DP-SGD" if mode == "sample" else "client-level DP"
        worst = f"{max(spent):.2f}" if spent else "-"
        dp = (
            f"{kind}: epsilon spent per site up to {worst} "
            f"(delta {privacy.get('delta', 0):g}, {privacy.get('accountant')} accountant)"
        )
        if privacy.get("out_of_budget"):
            dp += f"; out of budget: {', '.join(privacy['out_of_budget'])}"
    return f"{dp}; secure aggregation: {secure}"


def apply_cohort_flags(scenario, args: argparse.Namespace) -> None:
    """``--data`` and ``--folds``; a real data set's sites are counted for the header line."""
    from fedrad.simulation import real_cohort

    if getattr(args, "folds", None) is not None:
        if args.folds == 1 or args.folds < 0:
            raise FedradError("--folds must be 0 (no cross-validation) or at least 2")
        scenario.cv_folds = args.folds
    if getattr(args, "data", None):
        if not real_cohort.is_real_cohort(scenario.cohort):
            raise FedradError("--data applies to scenarios whose [cohort] names a real data set")
        scenario.cohort = real_cohort.with_data_override(scenario.cohort, args.data)
    if real_cohort.is_real_cohort(scenario.cohort):
        spec = real_cohort.cohort_spec(scenario)
        groups, _ = real_cohort.group_cases(
            real_cohort.read_cases(spec.data), spec.min_site_cases or scenario.study.min_cases
        )
        scenario.sites = len(groups)


def run_cross_validated(scenario, run_dir: Path, sites, console: Console) -> dict:
    """A cross-validated scenario: one federation per fold, a line per fold, pooled metrics."""
    from fedrad.simulation.crossval import run_crossval

    console.print(f"{scenario.cv_folds}-fold cross-validation, one federated study per fold")

    def show(fold) -> None:
        console.print(
            f"  fold {fold.fold + 1}: {fold.y.size} held-out cases, federated AUC "
            f"{_fmt(_fold_auc(fold.y, fold.federated))}, {fold.rounds} rounds"
        )

    metrics = run_crossval(scenario, run_dir, sites=sites, on_fold=show)
    console.print(
        f"per-fold studies: {run_dir}/fold-1 .. fold-{scenario.cv_folds}; "
        f"held-out predictions: {run_dir}/cv_predictions.csv"
    )
    return metrics


def _fold_auc(y, p) -> float:
    from fedrad.learn.metrics import roc_auc

    return float(roc_auc(y, p)) if 0 < y.sum() < y.size else float("nan")


def _table_title(metrics: dict, label: str) -> str:
    where = f"{metrics['n_held_out']} cases from {metrics['sites']} sites"
    if metrics.get("cv_folds"):
        return f"{metrics['cv_folds']}-fold cross-validated {label} on {where}"
    return f"held-out {label} on {where}"


def _fmt(value) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


def comparison_table(metrics: dict) -> Table:
    key = metrics["metric"]
    label = "AUC" if key == "auc" else "C-index"
    table = Table(title=_table_title(metrics, label))
    table.add_column("model")
    table.add_column(label, justify="right")
    table.add_row(
        f"federated ({metrics['strategy']}, {metrics['rounds']} rounds)",
        _fmt(metrics["federated"][key]),
    )
    table.add_row("pooled (centralised)", _fmt(metrics["pooled"][key]))
    table.add_row("local-only, mean over sites", _fmt(metrics["local_only"][f"{key}_mean"]))
    for site, value in metrics["local_only"]["per_site"].items():
        table.add_row(f"  local-only {site}", _fmt(value))
    return table
