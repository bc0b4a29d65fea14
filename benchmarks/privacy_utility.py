"""What privacy costs in fedrad: the privacy-utility curve and the price of SecAgg+ per round.

On the built-in default scenario (5 synthetic hospitals, 20 rounds of FedAvg, per-patient DP-SGD
and Flower SecAgg+), the same study is federated several times, identical but for its privacy
settings, each exactly as ``fedrad simulate`` would run it (the CLI's own flag handling builds
every study):

* ``no DP``: ``fedrad simulate --no-dp`` (SecAgg+ on, as in the default scenario);
* ``epsilon E`` for E in ``--epsilons`` (default 1, 2, 4, 8): ``fedrad simulate --epsilon E``,
  per-patient DP-SGD (Opacus) planned at each site so that the whole study spends epsilon E
  (delta of the scenario, 1e-5) at that site; SecAgg+ on;
* ``plain FedAvg``: ``fedrad simulate --no-dp --no-secure-aggregation``, the baseline of the
  SecAgg+ cost (without SecAgg+ each site's update is sealed end to end to the ServerApp, as
  fedrad always does; that sealing is part of the baseline).

All runs of a seed share one cohort: it is generated and its features extracted once (the sites'
feature caches), then every federation runs in this process through
:func:`fedrad.simulation.harness.run_scenario` with ``sites=`` those folders, one after another.
That is the path the CLI takes after its cohort step, without repeating about a minute of
generation and extraction per run; in-process timings of the federations are comparable with each
other since they share the process, the machine and the imports (done before the first run).
Every run has its own run directory and fresh privacy ledgers.

Measured, per run, from ``RUN_DIR/metrics.json`` and the run directory:

* the held-out AUC of the federated model (pooled held-out cases of every site), of the pooled
  centralised model (never under DP, so it is the same in every run: the reference) and the mean
  of the local-only models;
* ``drop``: federated AUC without DP minus federated AUC at epsilon E, same seed (positive: worse);
* epsilon actually spent by each site over the study (``privacy.epsilon``; the table shows the
  largest) and each site's noise multiplier (``privacy.noise_multiplier``; the table shows the
  range over the sites);
* ``federate s``: wall seconds of Flower's simulation engine for the whole study
  (``timings.federate_s``: engine start, site checks, federated standardisation, the rounds);
* ``s / round``: the median interval between consecutive round checkpoints
  (``checkpoints/round-NNNN.npz`` modification times). Both the SecAgg+ workflow and the plain
  strategy write that checkpoint at the very end of each round, after the sites' training, the
  aggregation and the evaluation, so the interval is one whole round in both modes, without the
  engine's start-up; the median resists the load of a shared machine. The
  privacy-utility table shows it too: the time price of DP-SGD (Opacus per-sample gradients and
  each site's noise calibration);
* ``fit s``: with SecAgg+ the median ``fit_seconds`` of ``history.json`` (the secure fit alone, its
  four SecAgg+ stages and local training, no evaluation).

SecAgg+ cost: the ``no DP`` run (SecAgg+) against ``plain FedAvg``, both without DP, same seed,
same process: the ratios of ``federate s`` and of ``s / round``.

Target (verdict line, exit status 0 only when met): at epsilon 4 the federated AUC drops by at
most 0.05 against the federated AUC without DP (mean drop over the seeds).

``--seeds N`` repeats everything for N study seeds: the first is the scenario as it is (``fedrad
simulate`` without ``--seed``), the next ``fedrad simulate --seed S+1``, ``--seed S+2``, ... (S:
``--seed``, default the scenario's seed), each with its own cohort; AUCs are then means with their
standard deviation over the seeds, and ``drop`` the mean of the per-seed drops.

Results: tables on the terminal, ``benchmarks/results/privacy_utility.md`` and ``.json`` and the
plot ``benchmarks/results/privacy_utility.png`` (AUC against epsilon with the no-DP and pooled
lines); all git-ignored.

Usage::

    python benchmarks/privacy_utility.py                    # 6 federations, about 7 minutes
    python benchmarks/privacy_utility.py --epsilons 2,4     # fewer points
    python benchmarks/privacy_utility.py --seeds 3          # mean over 3 study seeds
    python benchmarks/privacy_utility.py --keep runs/pu     # keep the run directories there
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
DEFAULT_EPSILONS = (1.0, 2.0, 4.0, 8.0)
TARGET_EPSILON = 4.0
TARGET_DROP = 0.05
WARM_MODULES = (
    "flwr.simulation",
    "fedrad.federation.client_app",
    "fedrad.federation.secagg",
    "fedrad.federation.secagg_server",
    "fedrad.federation.server_app",
)


@dataclass(frozen=True)
class Variant:
    """One privacy setting of the study: DP at ``epsilon`` (None: no DP), SecAgg+ on or off."""

    epsilon: float | None
    secure: bool

    @property
    def label(self) -> str:
        if self.epsilon is None:
            return "no DP" if self.secure else "plain FedAvg"
        return f"epsilon {self.epsilon:g}"

    @property
    def slug(self) -> str:
        if self.epsilon is None:
            return "no-dp" if self.secure else "plain-fedavg"
        return f"eps-{self.epsilon:g}"

    def cli_flags(self) -> str:
        """The ``fedrad simulate`` flags this variant stands for."""
        dp = "--no-dp" if self.epsilon is None else f"--epsilon {self.epsilon:g}"
        return dp + ("" if self.secure else " --no-secure-aggregation")


NO_DP = Variant(None, True)
PLAIN = Variant(None, False)


@dataclass
class RunResult:
    """What one federation gave (one variant, one seed)."""

    variant: Variant
    seed_index: int
    seed: int
    federated_auc: float = math.nan
    pooled_auc: float = math.nan
    local_auc: float = math.nan
    epsilon_spent: dict[str, float] = field(default_factory=dict)
    noise_multiplier: dict[str, float] = field(default_factory=dict)
    federate_s: float = math.nan
    round_intervals: list[float] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)
    rounds: int = 0
    secure_aggregation: bool | None = None
    error: str = ""

    @property
    def per_round_s(self) -> float:
        return statistics.median(self.round_intervals) if self.round_intervals else math.nan

    @property
    def fit_s(self) -> float:
        return statistics.median(self.fit_seconds) if self.fit_seconds else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant.label,
            "flags": self.variant.cli_flags(),
            "epsilon_target": self.variant.epsilon,
            "secure_aggregation": self.secure_aggregation,
            "seed": self.seed,
            "federated_auc": self.federated_auc,
            "pooled_auc": self.pooled_auc,
            "local_only_auc_mean": self.local_auc,
            "epsilon_spent": self.epsilon_spent,
            "noise_multiplier": self.noise_multiplier,
            "federate_s": self.federate_s,
            "rounds": self.rounds,
            "seconds_per_round_median": self.per_round_s,
            "round_intervals_s": self.round_intervals,
            "secagg_fit_seconds_median": self.fit_s,
            "secagg_fit_seconds": self.fit_seconds,
            "error": self.error,
        }


def cli_args(seed: int | None, variant: Variant) -> argparse.Namespace:
    """The namespace ``fedrad simulate [--seed S] <variant flags>`` would parse to."""
    return argparse.Namespace(
        scenario=None,
        sites=None,
        seed=seed,
        rounds=None,
        strategy=None,
        epsilon=variant.epsilon,
        no_dp=variant.epsilon is None,
        secure_aggregation=variant.secure,
    )


def seed_list(first: int | None, count: int) -> list[int | None]:
    """The ``--seed`` of each repetition: None (the scenario as it is), then first+1, first+2..."""
    from fedrad.simulation.harness import DEFAULT_SCENARIO, Scenario

    base = first if first is not None else Scenario.from_file(DEFAULT_SCENARIO).seed
    return [first] + [base + i for i in range(1, count)]


def prepare_sites(seed: int | None, folder: Path) -> tuple[list[Any], int, float, float]:
    """Generate the seed's cohort and extract every site's features once (their caches).

    Returns the site configurations, the cohort seed and the generation and extraction seconds.
    """
    from fedrad.commands.simulate import load_scenario
    from fedrad.federation.site_data import site_feature_table
    from fedrad.simulation.harness import sites_from_cohort

    scenario = load_scenario(cli_args(seed, NO_DP))
    t0 = time.perf_counter()
    sites = sites_from_cohort(scenario, folder, progress=False)
    t1 = time.perf_counter()
    for site in sites:
        site_feature_table(site, scenario.study)
    return sites, scenario.seed, t1 - t0, time.perf_counter() - t1


def warm_imports() -> None:
    """Import the federation stack before the first timed federation, so no run pays for it."""
    for module in WARM_MODULES:
        importlib.import_module(module)


def checkpoint_intervals(run_dir: Path) -> list[float]:
    """Seconds between consecutive round checkpoints (one per round, written at its end)."""
    stamps = [p.stat().st_mtime_ns for p in sorted((run_dir / "checkpoints").glob("round-*.npz"))]
    return [(b - a) / 1e9 for a, b in itertools.pairwise(stamps)]


def run_variant(
    variant: Variant, seed: int | None, seed_index: int, sites: list[Any], run_dir: Path
) -> RunResult:
    """One federation of the seed's cohort under ``variant``; never raises (errors recorded)."""
    from fedrad.commands.simulate import load_scenario
    from fedrad.simulation.harness import run_scenario

    scenario = load_scenario(cli_args(seed, variant))
    result = RunResult(variant, seed_index, scenario.seed)
    try:
        metrics = run_scenario(scenario, run_dir, sites=sites, progress=False)
    except Exception as exc:  # a failed variant is reported, the others still run
        result.error = f"{type(exc).__name__}: {exc}"
        (run_dir / "benchmark-error.txt").write_text(traceback.format_exc())
        return result
    key = metrics["metric"]
    privacy = metrics["privacy"]
    result.federated_auc = _num(metrics["federated"].get(key))
    result.pooled_auc = _num(metrics["pooled"].get(key))
    result.local_auc = _num(metrics["local_only"].get(f"{key}_mean"))
    result.epsilon_spent = {s: v for s, v in privacy["epsilon"].items() if v is not None}
    result.noise_multiplier = {
        s: v for s, v in privacy["noise_multiplier"].items() if v is not None
    }
    result.secure_aggregation = bool(privacy["secure_aggregation"])
    result.federate_s = float(metrics["timings"]["federate_s"])
    result.rounds = int(metrics["rounds"])
    result.round_intervals = checkpoint_intervals(run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    result.fit_seconds = [float(h["fit_seconds"]) for h in history if "fit_seconds" in h]
    return result


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


def _sd(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.stdev(finite) if len(finite) > 1 else math.nan


def _auc(values: list[float], seeds: int) -> str:
    mean = _mean(values)
    if math.isnan(mean):
        return "-"
    sd = _sd(values)
    return f"{mean:.3f}" if seeds == 1 or math.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"


def _s(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def drops(results: list[RunResult], variant: Variant) -> list[float]:
    """Per seed: federated AUC without DP minus federated AUC under ``variant``."""
    out = []
    for r in results:
        if r.variant != variant:
            continue
        ref = [x for x in results if x.variant == NO_DP and x.seed_index == r.seed_index]
        if ref and not (math.isnan(ref[0].federated_auc) or math.isnan(r.federated_auc)):
            out.append(ref[0].federated_auc - r.federated_auc)
    return out


UTILITY_HEADER = [
    "epsilon (target)",
    "federated AUC",
    "drop vs no DP",
    "pooled AUC (no DP)",
    "local-only mean AUC",
    "epsilon spent (max site)",
    "noise multiplier (sites)",
    "s / round (median)",
]


def utility_rows(results: list[RunResult], epsilons: list[float], seeds: int) -> list[list[str]]:
    """The privacy-utility table: no DP first, then decreasing epsilon (more privacy)."""
    rows = []
    for variant in [NO_DP, *(Variant(e, True) for e in sorted(epsilons, reverse=True))]:
        runs = [r for r in results if r.variant == variant]
        spent = [v for r in runs for v in r.epsilon_spent.values()]
        noise = [v for r in runs for v in r.noise_multiplier.values()]
        d = drops(results, variant)
        failed = [r.error for r in runs if r.error]
        rows.append(
            [
                "no DP (∞)" if variant.epsilon is None else f"{variant.epsilon:g}",
                _auc([r.federated_auc for r in runs], seeds),
                "0 (reference)" if variant == NO_DP else ("-" if not d else f"{_mean(d):.3f}"),
                _auc([r.pooled_auc for r in runs], seeds),
                _auc([r.local_auc for r in runs], seeds),
                f"{max(spent):.2f}" if spent else "-",
                f"{min(noise):.2f}-{max(noise):.2f}" if noise else "-",
                _s(_mean([r.per_round_s for r in runs]), 2)
                + (f"  FAILED: {failed[0]}" if failed else ""),
            ]
        )
    return rows


COST_HEADER = [
    "aggregation (no DP)",
    "federate s",
    "s / round (median)",
    "SecAgg+ fit s / round (median)",
    "rounds",
    "federated AUC",
]


def cost_rows(results: list[RunResult], seeds: int) -> tuple[list[list[str]], dict[str, float]]:
    """SecAgg+ against plain FedAvg (both without DP), and the two ratios."""
    rows = []
    means: dict[str, dict[str, float]] = {}
    for variant, name in ((PLAIN, "plain FedAvg (sealed updates)"), (NO_DP, "SecAgg+")):
        runs = [r for r in results if r.variant == variant]
        means[variant.slug] = {
            "federate_s": _mean([r.federate_s for r in runs]),
            "per_round_s": _mean([r.per_round_s for r in runs]),
            "fit_s": _mean([r.fit_s for r in runs]),
        }
        m = means[variant.slug]
        rows.append(
            [
                name,
                _s(m["federate_s"]),
                _s(m["per_round_s"], 2),
                _s(m["fit_s"], 2),
                str(max((r.rounds for r in runs), default=0)),
                _auc([r.federated_auc for r in runs], seeds),
            ]
        )
    plain, secure = means[PLAIN.slug], means[NO_DP.slug]
    ratios = {
        "federate": secure["federate_s"] / plain["federate_s"],
        "per_round": secure["per_round_s"] / plain["per_round_s"],
    }
    rows.append(
        [
            "ratio SecAgg+ / plain",
            _ratio(ratios["federate"]),
            _ratio(ratios["per_round"]),
            "",
            "",
            "",
        ]
    )
    return rows, ratios


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def verdict(results: list[RunResult]) -> tuple[bool, str]:
    """PASS when the mean drop at epsilon 4 is at most 0.05."""
    d = drops(results, Variant(TARGET_EPSILON, True))
    if not d:
        return False, (
            f"FAIL: AUC drop at epsilon {TARGET_EPSILON:g} <= {TARGET_DROP}: not measured "
            "(a run failed or epsilon 4 was not among --epsilons)"
        )
    drop = _mean(d)
    ok = drop <= TARGET_DROP
    no_dp = _mean([r.federated_auc for r in results if r.variant == NO_DP])
    at_target = _mean(
        [r.federated_auc for r in results if r.variant == Variant(TARGET_EPSILON, True)]
    )
    return ok, (
        f"{'PASS' if ok else 'FAIL'}: AUC drop at epsilon {TARGET_EPSILON:g} = {drop:.3f} "
        f"(target <= {TARGET_DROP}; federated AUC no DP {no_dp:.3f}, "
        f"epsilon {TARGET_EPSILON:g} {at_target:.3f})"
    )


def plot(results: list[RunResult], epsilons: list[float], path: Path) -> Path:
    """AUC against epsilon (log2 axis) with the no-DP, pooled and local-only lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted(epsilons)
    fed = [[r.federated_auc for r in results if r.variant == Variant(e, True)] for e in eps]
    y = [_mean(v) for v in fed]
    err = [0.0 if math.isnan(_sd(v)) else _sd(v) for v in fed]
    no_dp = _mean([r.federated_auc for r in results if r.variant == NO_DP])
    pooled = _mean([r.pooled_auc for r in results if r.variant == NO_DP])
    local = _mean([r.local_auc for r in results if r.variant == NO_DP])
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    n_seeds = len({r.seed_index for r in results})
    label = "federated, DP-SGD + SecAgg+"
    if n_seeds > 1:
        label += f" (mean ± SD, {n_seeds} seeds)"
    ax.errorbar(eps, y, yerr=err, marker="o", capsize=3, label=label)
    if not math.isnan(no_dp):
        ax.axhline(no_dp, color="C1", ls="--", label=f"federated, no DP ({no_dp:.3f})")
        ax.axhspan(
            no_dp - TARGET_DROP, no_dp, color="C1", alpha=0.08, label=f"within {TARGET_DROP}"
        )
    if not math.isnan(pooled):
        ax.axhline(pooled, color="C2", ls=":", label=f"pooled, no DP ({pooled:.3f})")
    if not math.isnan(local):
        ax.axhline(local, color="C7", ls="-.", label=f"local-only mean ({local:.3f})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.set_xlabel("epsilon per site, whole study (delta 1e-5)")
    ax.set_ylabel("held-out AUC")
    ax.set_title("fedrad default scenario: privacy-utility")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def rich_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row, style="red" if "FAILED" in row[-1] else None)
    return table


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _strict(value: Any) -> Any:
    """``value`` with every NaN as None, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def machine() -> str:
    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cpus
    return (
        f"{platform.machine()}, {usable} usable of {cpus} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def parse_epsilons(text: str) -> list[float]:
    """``"1,2,4,8"`` -> [1.0, 2.0, 4.0, 8.0]; each must be a positive number."""
    values = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a number") from None
        if not value > 0 or math.isinf(value):
            raise argparse.ArgumentTypeError(f"epsilon {part.strip()} must be positive and finite")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError("give at least one epsilon, e.g. 1,2,4,8")
    return sorted(set(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--epsilons",
        type=parse_epsilons,
        default=list(DEFAULT_EPSILONS),
        help="comma-separated target epsilons per site (default 1,2,4,8)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="study seeds to average (default 1)")
    parser.add_argument(
        "--seed", type=int, help="seed of the first repetition (default: the scenario's own)"
    )
    parser.add_argument("--keep", help="keep the cohorts and run directories under this folder")
    parser.add_argument("--output", default=str(RESULTS / "privacy_utility.md"))
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    console = Console() if sys.stdout.isatty() else Console(width=160)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    where = machine()
    load_before = os.getloadavg()[0]
    variants = [NO_DP, PLAIN, *(Variant(e, True) for e in args.epsilons)]
    seeds = seed_list(args.seed, args.seeds)
    console.print(
        f"[bold]fedrad privacy-utility benchmark[/]  ({where}; load average {load_before:.2f}); "
        f"{len(variants)} federations x {len(seeds)} seed(s)"
    )

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fedrad-privacy-"))
    results: list[RunResult] = []
    prep: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task("importing the federation stack", total=None)
            warm_imports()
            progress.update(task, description="federation stack imported")
            progress.stop_task(task)
            for index, seed in enumerate(seeds):
                folder = root / f"seed-{index + 1}"
                if folder.exists():
                    shutil.rmtree(folder)
                task = progress.add_task(f"seed {index + 1}: cohort and features", total=None)
                sites, cohort_seed, gen_s, ext_s = prepare_sites(seed, folder / "cohort")
                prep.append({"seed": cohort_seed, "generate_s": gen_s, "extract_s": ext_s})
                progress.update(
                    task,
                    description=f"seed {cohort_seed}: {len(sites)} sites generated in {gen_s:.0f} "
                    f"s, features extracted in {ext_s:.0f} s",
                )
                progress.stop_task(task)
                for variant in variants:
                    task = progress.add_task(
                        f"seed {cohort_seed}: {variant.label} ({variant.cli_flags()})", total=None
                    )
                    r = run_variant(variant, seed, index, sites, folder / variant.slug)
                    results.append(r)
                    done = (
                        f"FAILED: {r.error[:80]}"
                        if r.error
                        else f"AUC {r.federated_auc:.3f}, federate {r.federate_s:.0f} s, "
                        f"{r.per_round_s:.2f} s/round"
                    )
                    progress.update(
                        task, description=f"seed {cohort_seed}: {variant.label}: {done}"
                    )
                    progress.stop_task(task)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    elapsed = time.perf_counter() - started
    load = f"1-minute load average {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after"
    n = len(seeds)
    u_rows = utility_rows(results, args.epsilons, n)
    c_rows, ratios = cost_rows(results, n)
    ok, verdict_line = verdict(results)
    png = plot(results, args.epsilons, out.with_suffix(".png"))
    seeds_text = ", ".join(str(p["seed"]) for p in prep)
    console.print(
        rich_table(f"privacy-utility, default scenario (seed {seeds_text})", UTILITY_HEADER, u_rows)
    )
    console.print(rich_table("cost of SecAgg+ (no DP)", COST_HEADER, c_rows))
    console.print(f"[{'green' if ok else 'red'}]{verdict_line}[/]")
    for r in results:
        if r.error:
            console.print(f"[red]seed {r.seed} {r.variant.label}:[/] {r.error}")

    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    text = "\n".join(
        [
            "## Privacy-utility and the cost of SecAgg+",
            "",
            f"Measured {stamp} on {where}; {load}; {elapsed / 60:.1f} minutes in all.",
            f"Default scenario, seed(s) {seeds_text}; "
            + "; ".join(
                f"cohort {p['seed']}: generated in {p['generate_s']:.0f} s, features "
                f"{p['extract_s']:.0f} s (once for all runs)"
                for p in prep
            )
            + ".",
            "",
            "Held-out AUC on the pooled held-out cases of every site; DP-SGD per patient at every "
            "site, epsilon for the whole study (delta 1e-5), SecAgg+ on in every row:",
            "",
            markdown_table(UTILITY_HEADER, u_rows),
            "",
            "Cost of SecAgg+ against plain FedAvg, both without DP (same process, same machine): "
            "`federate s` is the whole federation, `s / round` the median interval between round "
            "checkpoints:",
            "",
            markdown_table(COST_HEADER, c_rows),
            "",
            verdict_line,
            "",
            f"Plot: `{png.name}`.",
            "",
        ]
    )
    out.write_text(text)
    payload = {
        "measured": stamp,
        "machine": where,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "elapsed_s": elapsed,
        "epsilons": args.epsilons,
        "cohorts": prep,
        "runs": [r.to_json() for r in results],
        "secagg_ratio": ratios,
        "target": {"epsilon": TARGET_EPSILON, "max_drop": TARGET_DROP, "passed": ok},
        "drop_at_target": _mean(drops(results, Variant(TARGET_EPSILON, True))),
    }
    out.with_suffix(".json").write_text(json.dumps(_strict(payload), indent=2) + "\n")
    console.print(f"{load}\nwritten: {out}, {out.with_suffix('.json')}, {png}")
    return 0 if ok and not any(r.error for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
