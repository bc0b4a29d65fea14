"""``fedrad site audit``: show a hospital everything its site has sent, from its egress log."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedrad.errors import FedradError


def add_parser(site_subparsers: argparse._SubParsersAction) -> None:
    """Add ``audit`` to the subcommands of ``fedrad site``."""
    audit = site_subparsers.add_parser(
        "audit",
        help="show every message this site has sent (its egress log)",
        description=(
            "Print the site's egress log: for every message that left the site, when, for which "
            "run and round, what it held (records, array shapes, metric values, text), its size, "
            "its SHA-256 and the privacy budget spent so far; then totals per message kind. "
            "Give the site's site.toml (its egress log is found from it) or the egress.jsonl."
        ),
    )
    audit.add_argument("log", metavar="SITE_TOML_OR_EGRESS_JSONL", help="site.toml or egress.jsonl")
    audit.add_argument(
        "--json", action="store_true", help="print the entries and the summary as JSON"
    )
    # dest is not "run": the command line keeps the handler of a command in args.run
    audit.add_argument("--run", dest="run_id", type=int, help="only the messages of this run id")
    audit.set_defaults(run=run_audit)


def egress_path(given: str | Path) -> Path:
    """The egress log named by ``given``: a ``site.toml`` (its ``egress_log_path``) or the log."""
    path = Path(given)
    if path.suffix == ".toml":
        from fedrad.federation.config import SiteConfig

        return SiteConfig.from_file(path).egress_log_path
    return path


def _epsilon(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def run_audit(args: argparse.Namespace) -> int:
    """Print the egress log (a rich table and totals, or JSON with ``--json``)."""
    from fedrad.federation.egress import read_egress, summarise

    path = egress_path(args.log)
    entries = read_egress(path)
    if args.run_id is not None:
        entries = [e for e in entries if e.run == args.run_id]
        if not entries:
            raise FedradError(f"{path}: no message of run {args.run_id} in this egress log")
    summary = summarise(entries)
    console = Console()
    if args.json:
        out = {
            "log": str(path),
            "entries": [e.raw for e in entries],
            "summary": {
                "messages": summary.messages,
                "bytes": summary.bytes,
                "by_kind": {
                    k: {"messages": c, "bytes": b} for k, (c, b) in summary.by_kind.items()
                },
                "runs": list(summary.runs),
                "errors": summary.errors,
                "max_epsilon": summary.max_epsilon,
                "first": summary.first,
                "last": summary.last,
            },
        }
        print(json.dumps(out, indent=2))  # plain, so other tools can read it
        return 0

    site = entries[0].site if entries else "?"
    table = Table(title=f"egress log of site {site} ({path})", show_lines=False)
    for name, justify in (
        ("time (UTC)", "left"),
        ("run", "right"),
        ("round", "right"),
        ("type", "left"),
        ("protection", "left"),
        ("what left", "left"),
        ("bytes", "right"),
        ("sha256", "left"),
        ("epsilon", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    for e in entries:
        table.add_row(
            e.time.replace("T", " ").rstrip("Z"),
            "-" if e.run is None else str(e.run),
            "-" if e.round is None else str(e.round),
            e.kind,
            "+".join(e.protection),
            e.what(),
            str(e.bytes),
            (e.sha256 or "-")[:12],
            _epsilon(e.epsilon),
        )
    console.print(table)

    totals = Table(title="totals")
    totals.add_column("type")
    totals.add_column("messages", justify="right")
    totals.add_column("bytes", justify="right")
    for kind, (count, size) in summary.by_kind.items():
        totals.add_row(kind, str(count), _size(size))
    totals.add_row("all", str(summary.messages), _size(summary.bytes), style="bold")
    console.print(totals)
    runs = ", ".join(str(r) for r in summary.runs) or "-"
    console.print(
        f"{summary.messages} message(s) in run(s) {runs}; errors sent: {summary.errors}; "
        f"privacy budget spent (max epsilon): {_epsilon(summary.max_epsilon)}",
        highlight=False,
    )
    return 0
