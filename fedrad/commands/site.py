"""``fedrad site``: a hospital's side of a study.

``check`` runs the server's pre-study check on the site's data, ``init`` makes the site's keys
(SuperNode authentication and identity, in the site's ``keys_dir``) and pins the coordinator's
sealing key and CA certificate there, ``join`` serves the site to the study's SuperLink over
TLS with the site's node key, and ``audit`` (:mod:`fedrad.commands.site_audit`) shows what the
site has sent. Each subcommand is one ``_add_*`` parser function and one ``run_*`` function.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedrad.commands import site_audit
from fedrad.errors import FedradError

#: How long `site join` retries when the SuperLink does not know the site's key (yet).
REGISTRATION_WAIT_S = 300.0
#: Pause between two such tries.
REGISTRATION_RETRY_S = 10.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "site",
        help="check a site's data, make its keys, or join a study's server",
        description="A hospital's side of a deployed federation.",
    )
    commands = p.add_subparsers(dest="site_command", metavar="SUBCOMMAND")
    _add_check(commands)
    _add_approve(commands)
    _add_init(commands)
    _add_join(commands)
    site_audit.add_parser(commands)
    p.set_defaults(run=lambda args: _usage(p))


def _add_check(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check",
        help="can this site serve the study? (the same check the server asks for)",
        description=(
            "Load the site's features (extracting them, with the site's cache, when the site has a "
            "manifest) and run the server's pre-study check: outcome columns, usable cases and "
            "classes, feature columns. Exits non-zero with the reason when the site cannot serve "
            "the study. Nothing leaves the site."
        ),
    )
    check.add_argument("site", help="the site's site.toml")
    check.add_argument(
        "--study",
        help="the study's study.toml (default: a binary study on column 'label', 10+ cases)",
    )
    check.add_argument("-j", "--jobs", type=int, default=1, help="extraction processes (default 1)")
    check.add_argument(
        "--approve",
        action="store_true",
        help="approve the study (pin its hash) when the check and the site's policy pass",
    )
    check.set_defaults(run=run_check)


def _add_approve(commands: argparse._SubParsersAction) -> None:
    approve = commands.add_parser(
        "approve",
        help="approve a study: the site answers only messages of approved study hashes",
        description=(
            "Pin a study's canonical hash (features by content, split, model, strategy, privacy, "
            "secure aggregation) in the site's keys folder, after checking it against the site's "
            "[policy]. The site then refuses any message whose study differs, naming the fields. "
            "--list shows the approvals, --revoke HASH withdraws one."
        ),
    )
    approve.add_argument("site", help="the site's site.toml")
    approve.add_argument("study", nargs="?", help="the study's study.toml")
    approve.add_argument("--list", action="store_true", help="list the approved studies")
    approve.add_argument("--revoke", metavar="HASH", help="withdraw the approval with this hash")
    approve.set_defaults(run=run_approve)


def _add_init(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser(
        "init",
        help="make this site's keys and pin the study's sealing key and CA certificate",
        description=(
            "Write the site's keys into its keys_dir (site.toml [site] keys_dir, default "
            ".fedrad/keys): node.key/node.pub, the SuperNode authentication key pair (ECDSA "
            "P-384, OpenSSH format), and identity.key/identity.pub (Ed25519, PEM), which sign "
            "and seal the site's model updates. Private keys are 0600. Send node.pub and "
            "identity.pub to the study coordinator and read them the printed fingerprints over "
            "a second channel. With the coordinator's sealing.pub and ca.crt, pin them as "
            "keys_dir/server-sealing.pub (the site then seals every update to that key and "
            "refuses a server that does not ask for sealing) and keys_dir/ca.crt (what "
            "`fedrad site join` checks the server with); run again with only these options to "
            "pin them once the keys exist, and compare the printed fingerprints with the "
            "coordinator's."
        ),
    )
    init.add_argument("site", help="the site's site.toml")
    init.add_argument(
        "--server-sealing-key",
        metavar="SEALING_PUB",
        help="the coordinator's sealing.pub, pinned as keys_dir/server-sealing.pub",
    )
    init.add_argument(
        "--root-cert",
        metavar="CA_CRT",
        help="the study's ca.crt from the coordinator, saved as keys_dir/ca.crt",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace existing keys (the coordinator must register the new node.pub) and "
        "pinned files",
    )
    init.set_defaults(run=run_init)


def _add_join(commands: argparse._SubParsersAction) -> None:
    join = commands.add_parser(
        "join",
        help="serve this site to a study's server (Flower SuperNode)",
        description=(
            "Start Flower's SuperNode for this site; it connects to the study's SuperLink over "
            "TLS (checked against the study's ca.crt), authenticates with the site's node key "
            "and answers the server's checks, training and evaluation rounds from the site's "
            "data. Runs until stopped (Ctrl-C). Log: the site's log_dir/supernode.log."
        ),
    )
    join.add_argument("site", help="the site's site.toml")
    join.add_argument(
        "--superlink", required=True, help="the study server's HOST:PORT (fedrad server start)"
    )
    security = join.add_mutually_exclusive_group()
    security.add_argument(
        "--root-cert",
        help="the study's CA certificate from the coordinator (default: keys_dir/ca.crt)",
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        help="connect without TLS and without the node key (a trusted test network only)",
    )
    join.add_argument(
        "--registration-wait",
        type=float,
        default=REGISTRATION_WAIT_S,
        help="seconds to keep retrying while the SuperLink does not know this site's key yet "
        f"(default {REGISTRATION_WAIT_S:.0f}; 0: fail at once)",
    )
    join.add_argument(
        "--runtime-port",
        type=int,
        help="local port of the SuperNode's Runtime API on 127.0.0.1 (default: a free port)",
    )
    join.set_defaults(run=run_join)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_check(args: argparse.Namespace) -> int:
    from fedrad.federation.config import SiteConfig, StudyConfig
    from fedrad.federation.site_data import check_site, site_feature_table

    console = Console()
    site = SiteConfig.from_file(args.site)
    study = StudyConfig.from_file(args.study) if args.study else StudyConfig()
    source = site.feature_table or site.manifest
    with console.status(f"loading the features of site {site.site_id} ({source})"):
        try:
            table = site_feature_table(site, study, jobs=max(1, args.jobs))
        except (OSError, ValueError) as exc:
            raise FedradError(f"site {site.site_id} ({args.site}): {exc}") from None
    report = check_site(table, site, study)
    broken = show_policy(console, site, study) if args.study else []

    summary = Table(title=f"site {site.site_id} for study {study.name!r} ({study.task})")
    summary.add_column("check")
    summary.add_column("value", justify="right")
    summary.add_row("usable cases", str(report.n_cases))
    summary.add_row("training / held-out", f"{report.n_train} / {report.n_test}")
    label = "positive cases" if study.task == "binary" else "events"
    summary.add_row(label, str(report.n_positive))
    summary.add_row("cases that could not be read", str(report.failed_cases))
    summary.add_row("usable feature columns", str(len(report.usable_features)))
    console.print(summary)
    from fedrad.federation.site_data import dropped_columns

    for reason, names in dropped_columns(table, study).items():
        shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        console.print(
            f"  [yellow]dropped[/] {len(names)} column(s): {reason}: {shown}", highlight=False
        )
    for case_id, error in table.failures[:10]:
        console.print(f"  [yellow]left out[/] case {case_id}: {error}", highlight=False)
    if not report.ok:
        raise FedradError(f"site {site.site_id} cannot serve study {study.name!r}: {report.reason}")
    if broken:
        raise FedradError(
            f"site {site.site_id}'s policy refuses study {study.name!r}: " + "; ".join(broken)
        )
    console.print(f"[green]site {site.site_id} can serve study {study.name!r}[/]")
    if getattr(args, "approve", False):
        _approve(console, site, study)
    return 0


def show_policy(console: Console, site, study) -> list[str]:
    """Print the site's policy next to the study; return the clauses the study breaks."""
    from rich.markup import escape

    from fedrad.site.approval import approval_hash, approved_studies
    from fedrad.site.policy import check_study

    policy = site.site_policy
    broken = check_study(policy, study)
    table = Table(title=f"policy of site {site.site_id} ([policy] of site.toml)")
    table.add_column("clause")
    table.add_column("site allows")
    table.add_column("study", overflow="fold")
    clauses = {b.split(":", 1)[0]: b.split(":", 1)[1].strip() for b in broken}
    for clause, value in policy.rows():
        verdict = clauses.get(clause, "ok")
        style = "red" if clause in clauses else None
        table.add_row(escape(clause), escape(value), escape(verdict), style=style)
    console.print(table)
    approved = approval_hash(study) in approved_studies(site)
    console.print(
        f"study hash {approval_hash(study)[:16]}...: "
        + ("approved by this site" if approved else "not approved yet (fedrad site approve)"),
        highlight=False,
        markup=False,
    )
    return broken


def _approve(console: Console, site, study) -> None:
    from fedrad.site.approval import approve
    from fedrad.site.policy import check_study

    broken = check_study(site.site_policy, study)
    if broken:
        raise FedradError(
            f"site {site.site_id}'s policy refuses study {study.name!r}, so it cannot be "
            "approved: " + "; ".join(broken)
        )
    key = approve(site, study)
    console.print(
        f"approved study {study.name!r} (hash {key}) at site {site.site_id}",
        highlight=False,
        markup=False,
    )


def run_approve(args: argparse.Namespace) -> int:
    from fedrad.federation.config import SiteConfig, StudyConfig
    from fedrad.site.approval import approved_studies, revoke

    console = Console()
    site = SiteConfig.from_file(args.site)
    if args.revoke:
        if not revoke(site, args.revoke):
            raise FedradError(f"site {site.site_id} has no approval with hash {args.revoke}")
        console.print(f"revoked approval {args.revoke} at site {site.site_id}", markup=False)
        return 0
    if args.list or not args.study:
        table = Table(title=f"studies approved by site {site.site_id}")
        table.add_column("hash")
        table.add_column("study")
        table.add_column("approved (UTC)")
        for key, entry in approved_studies(site).items():
            table.add_row(key[:16], str(entry.get("name")), str(entry.get("approved_at")))
        console.print(table)
        return 0
    study = StudyConfig.from_file(args.study)
    show_policy(console, site, study)
    _approve(console, site, study)
    return 0


def run_init(args: argparse.Namespace) -> int:
    from fedrad.deploy.sealing_setup import SITE_CA_CERT, prepare_pins
    from fedrad.federation.config import SiteConfig
    from fedrad.secure.identity import SERVER_SEALING_PUB
    from fedrad.secure.identity import fingerprint as identity_fingerprint
    from fedrad.secure.node_auth import (
        SiteKeyFiles,
        fingerprint,
        init_site_keys,
        load_identity_public_key,
        load_node_public_key,
    )

    site = SiteConfig.from_file(args.site)
    keys = SiteKeyFiles(site.keys_dir)
    # Check what the coordinator sent before any file is written.
    pins = prepare_pins(
        site.keys_dir,
        server_sealing_key=args.server_sealing_key,
        root_cert=args.root_cert,
        force=args.force,
    )
    keep = bool(pins) and not args.force and all(p.exists() for p in keys.all())
    if not keep:
        init_site_keys(site.keys_dir, site.site_id, force=args.force)
    for pin in pins:
        pin.write()
    node_print = fingerprint(load_node_public_key(keys.node_pub))
    identity_print = identity_fingerprint(load_identity_public_key(keys.identity_pub))
    state = "kept" if keep else "written"
    lines = [
        f"[green]keys of site {site.site_id} {state}[/] in {site.keys_dir}",
        f"  node authentication key  {keys.node_pub}\n    fingerprint {node_print}",
        f"  identity key             {keys.identity_pub}\n    fingerprint {identity_print}",
    ]
    if not keep:
        lines.append(
            "send node.pub and identity.pub to the study coordinator and confirm these "
            "fingerprints with them by phone; node.key and identity.key never leave this site."
        )
    for pin in pins:
        how = "already pinned" if pin.unchanged else "pinned"
        label = "SHA-256" if pin.is_certificate else "fingerprint"
        lines.append(
            f"[green]{pin.what} {how}[/]: {pin.target}\n    {label} {pin.fingerprint}\n"
            "    compare it with the one the coordinator reads you; if it differs, delete "
            "the file and call them back"
        )
    if not (site.keys_dir / SERVER_SEALING_PUB).exists():
        lines.append(
            "pin the coordinator's sealing key with `--server-sealing-key sealing.pub`: the "
            "site then seals its updates end to end to it"
        )
    if not (site.keys_dir / SITE_CA_CERT).exists():
        lines.append(
            "save the coordinator's ca.crt with `--root-cert ca.crt` (or pass --root-cert to "
            "`fedrad site join`)"
        )
    Console().print("\n".join(lines), highlight=False, soft_wrap=True)
    return 0


def run_join(args: argparse.Namespace) -> int:
    from fedrad.deploy import INSECURE_WARNING, DeploymentError, stop_on_termination
    from fedrad.deploy.supernode import SuperNode
    from fedrad.federation.config import SiteConfig
    from fedrad.secure.node_auth import SiteKeyFiles, fingerprint, load_node_private_key

    console = Console()
    site = SiteConfig.from_file(args.site)
    keys = SiteKeyFiles(site.keys_dir)
    root_cert = auth_key = None
    node_print = ""
    if args.insecure:
        Console(stderr=True).print(
            f"[bold red]WARNING[/] {INSECURE_WARNING}", highlight=False, soft_wrap=True
        )
        mode = "[yellow](INSECURE: no TLS, no node key)[/]"
    else:
        root_cert = Path(args.root_cert) if args.root_cert else site.keys_dir / "ca.crt"
        if not root_cert.is_file():
            raise FedradError(
                f"the study's CA certificate {root_cert} is missing: save the coordinator's "
                "ca.crt there or pass --root-cert FILE (or --insecure on a trusted test network)"
            )
        auth_key = keys.node_key
        node_print = fingerprint(load_node_private_key(auth_key).public_key())
        mode = f"(TLS, node key {node_print})"

    deadline = time.monotonic() + max(0.0, args.registration_wait)
    while True:
        with stop_on_termination():
            node = SuperNode.start(
                Path(args.site),
                args.superlink,
                root_certificates=root_cert,
                auth_key=auth_key,
                insecure=args.insecure,
                runtime_port=args.runtime_port,
            )
            try:
                console.print(
                    f"[bold]fedrad site[/] {site.site_id}: SuperNode connecting to "
                    f"{args.superlink} {mode}\nlog: {node.process.log_path}   (Ctrl-C stops it)",
                    highlight=False,
                    soft_wrap=True,
                )
                code = node.process.popen.wait()
            finally:
                node.stop()
        if code == 0:
            return 0
        if not node.refused_as_unregistered():
            raise DeploymentError(node.process.describe_exit())
        if time.monotonic() + REGISTRATION_RETRY_S > deadline:
            raise DeploymentError(
                f"the SuperLink at {args.superlink} does not know site {site.site_id}'s node key "
                f"({node_print}), or a SuperNode with this key is connected already: send "
                f"{keys.node_pub} to the study coordinator, who runs "
                f"`fedrad server register {site.site_id} node.pub` and starts the server again"
            )
        console.print(
            f"[yellow]the SuperLink does not know this site's node key yet[/]; trying again in "
            f"{REGISTRATION_RETRY_S:.0f} s (the coordinator registers it with "
            "`fedrad server register`)",
            highlight=False,
            soft_wrap=True,
        )
        time.sleep(REGISTRATION_RETRY_S)
