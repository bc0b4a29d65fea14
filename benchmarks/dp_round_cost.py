"""What the privacy bookkeeping of one DP-SGD round costs a site, before and after memoisation.

A site's round asks its ledger four times for a composition of every entry: ``check`` before
training, ``record`` after it, then ``spent()`` and ``spent(study, run_id)`` for the report. For a
ledger of N entries (three studies, three different mechanisms, like a site that joined several
studies) this times those four calls

* ``before``: every composition from scratch, as the ledger did before (Opacus' accountants built
  anew for each call, RDP orders recomputed for the PRV domain; the reference lives in
  ``tests/privacy/reference_accounting.py``, not in the library);
* ``after, cold``: the library with its caches emptied first (a fresh process, e.g. a deployed
  ClientApp, which is started anew for every message);
* ``after, warm``: the library in a process that has already accounted a round with the same
  mechanism (Flower's simulation engine keeps its workers), only the composition itself new;

as the median of ``--repeats`` runs, all in this one process, so the ratios compare like with like.
The ledger file is restored before every run. A second table times noise planning: a fresh plan
against the site's cached plan (checked with one accountant evaluation).

Usage (from the repository root, the project's environment active)::

    python benchmarks/dp_round_cost.py                       # N = 10, 20, 40; prv
    python benchmarks/dp_round_cost.py --entries 30 --accountant rdp --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fedrad.federation.config import PrivacyConfig, StudyConfig, TrainingConfig  # noqa: E402
from fedrad.federation.site_privacy import plan_round  # noqa: E402
from fedrad.privacy import accountant, planning  # noqa: E402
from fedrad.privacy.accountant import Mechanism  # noqa: E402
from fedrad.privacy.ledger import FORMAT, VERSION, PrivacyLedger  # noqa: E402
from tests.privacy.reference_accounting import reference_epsilon  # noqa: E402

DELTA = 1e-5
#: One round of each of the three studies: (noise multiplier, sample rate, steps).
STUDIES = {
    "study-a": Mechanism(1.8, 0.2, 10),
    "study-b": Mechanism(2.5, 0.5, 4),
    "study-c": Mechanism(3.0, 0.05, 25),
}


class FromScratchLedger(PrivacyLedger):
    """The ledger as it was: every composition computed anew, nothing remembered."""

    def _epsilon(self, mechanisms: list[Mechanism]) -> float:
        return reference_epsilon(mechanisms, self.delta, self.accountant)


def ledger_text(n: int, acc: str) -> str:
    """A ledger of ``n`` entries, the studies taking turns (file format version 1)."""
    names = list(STUDIES)
    rows = []
    for i in range(n):
        study = names[i % len(names)]
        m = STUDIES[study]
        rows.append(
            {
                "time": "2025-01-01T12:00:00+00:00",
                "study": study,
                "run_id": str(names.index(study) + 1),
                "round": i // len(names),
                "noise_multiplier": m.noise_multiplier,
                "sample_rate": m.sample_rate,
                "steps": m.steps,
                "delta": DELTA,
                "accountant": acc,
                "epsilon_after": 0.0,
            }
        )
    return json.dumps({"format": FORMAT, "version": VERSION, "entries": rows})


def one_round(ledger: PrivacyLedger, n: int) -> tuple[float, float]:
    """check + record + spent + spent(study) of study a's next round: ``(seconds, epsilon)``."""
    mech, key = STUDIES["study-a"], ("study-a", "1", n)
    start = time.perf_counter()
    ledger.check(mech, *key)
    entry = ledger.record(mech, *key)
    ledger.spent()
    ledger.spent(study="study-a", run_id="1")
    return time.perf_counter() - start, entry.epsilon_after


def timed(
    path: Path, text: str, make: Callable[[], PrivacyLedger], prepare: Callable[[], None], n: int
) -> tuple[float, float]:
    path.write_text(text)
    prepare()
    return one_round(make(), n)


def clear_all() -> None:
    accountant._composed_epsilon.cache_clear()
    accountant._rdp_per_step.cache_clear()


def ledger_table(entries: list[int], acc: str, repeats: int) -> None:
    print(f"one round's check + record + spent + spent(study), accountant {acc}, delta {DELTA:g}")
    print(
        f"{'N':>4} {'before s':>9} {'cold s':>8} {'warm s':>8} {'x cold':>7} {'x warm':>7}  rel diff"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "privacy-ledger.json"
        before_ledger = lambda: FromScratchLedger(path, None, DELTA, acc)  # noqa: E731
        after_ledger = lambda: PrivacyLedger(path, None, DELTA, acc)  # noqa: E731
        warm_up = lambda: accountant._composed_epsilon.cache_clear()  # noqa: E731
        for n in entries:
            text = ledger_text(n, acc)
            timed(path, text, before_ledger, lambda: None, n)  # imports, first touches
            runs: dict[str, list[float]] = {"before": [], "cold": [], "warm": []}
            eps: dict[str, float] = {}
            for _ in range(repeats):
                for name, make, prepare in (
                    ("before", before_ledger, lambda: None),
                    ("cold", after_ledger, clear_all),
                    ("warm", after_ledger, warm_up),
                ):
                    seconds, eps[name] = timed(path, text, make, prepare, n)
                    runs[name].append(seconds)
            med = {k: statistics.median(v) for k, v in runs.items()}
            diff = max(abs(eps[k] - eps["before"]) / eps["before"] for k in ("cold", "warm"))
            print(
                f"{n:>4} {med['before']:>9.3f} {med['cold']:>8.3f} {med['warm']:>8.3f} "
                f"{med['before'] / med['cold']:>7.1f} {med['before'] / med['warm']:>7.1f}"
                f"  {diff:.1e}  (epsilon {eps['cold']:.4f})"
            )


def plan_table(acc: str, repeats: int) -> None:
    study = StudyConfig(
        training=TrainingConfig(rounds=5, local_epochs=2, batch_size=16),
        privacy=PrivacyConfig(mode="sample", target_epsilon=4.0, accountant=acc),  # type: ignore[arg-type]
    )
    fresh, cached = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            cache = Path(tmp) / f"cache-{i}"
            for where, runs in ((cache, fresh), (cache, cached)):  # 1st plans, 2nd reads
                planning._plan.cache_clear()
                clear_all()
                start = time.perf_counter()
                plan_round(study, 22, where)
                runs.append(time.perf_counter() - start)
    f, c = statistics.median(fresh), statistics.median(cached)
    print(f"\nnoise plan of a site (22 rows, 5 rounds x 2 epochs, target 4.0, {acc}), cold caches")
    print(f"fresh plan {f:.3f} s, cached plan checked {c:.3f} s: x {f / c:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--accountant", choices=["prv", "rdp"], default="prv")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    ledger_table(args.entries, args.accountant, args.repeats)
    plan_table(args.accountant, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
