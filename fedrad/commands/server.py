"""``fedrad server``: the study coordinator's side of a deployed federation.

``init`` makes the study's CA and the SuperLink's TLS certificate (``DIR/tls``) and the
ServerApp's sealing key (``DIR/keys``), ``register`` adds a site's node public key to the
register of sites allowed to join (``DIR/nodes``) and its identity key to the register of who
signs updates (``DIR/identities``), and ``start`` runs the SuperLink with TLS and SuperNode
authentication, registers those keys and runs the study, sealed end to end when the sealing key
and identities are there. ``DIR`` is the coordinator's server folder, the one that holds
``study.toml`` (``server/`` by default).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from fedrad.errors import FedradError

if TYPE_CHECKING:
    from fedrad.deploy.sealing_setup import SealingPlan
    from fedrad.deploy.superlink import RunState, SuperLink
    from fedrad.federation.config import StudyConfig
    from fedrad.secure.node_auth import RegisteredSite


#: The coordinator's server folder when none is named (the repository's ``server/``).
DEFAULT_SERVER_DIR = "server"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "server",
        help="run a study's server (Flower SuperLink) for sites to join",
        description="The study coordinator's side of a deployed federation.",
    )
    commands = p.add_subparsers(dest="server_command", metavar="SUBCOMMAND")
    _add_init(commands)
    _add_register(commands)
    _add_start(commands)
    p.set_defaults(run=lambda args: _usage(p))


def _add_init(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser(
        "init",
        help="make the study's CA, the SuperLink's TLS certificate and the sealing key",
        description=(
            "Write DIR/tls/ca.crt and ca.key (the study's certificate authority), "
            "DIR/tls/server.crt and server.key (the SuperLink's certificate, signed by the CA, "
            "valid for localhost, 127.0.0.1 and every --host) and DIR/keys/sealing.key and "
            "sealing.pub (the ServerApp's X25519 key that sites seal their updates to). Private "
            "keys are 0600. Give every site ca.crt and sealing.pub; ca.key, server.key and "
            "sealing.key never leave the coordinator."
        ),
    )
    init.add_argument(
        "dir",
        nargs="?",
        default=DEFAULT_SERVER_DIR,
        help=f"the server folder, holding study.toml (default: {DEFAULT_SERVER_DIR}/)",
    )
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="a DNS name or IP address sites reach the server by (repeat for several)",
    )
    init.add_argument("--force", action="store_true", help="replace existing files")
    only = init.add_mutually_exclusive_group()
    only.add_argument(
        "--keep-ca",
        action="store_true",
        help="issue a new server certificate with the existing CA and keep the sealing key "
        "(made if missing): sites keep their ca.crt and sealing.pub",
    )
    only.add_argument(
        "--sealing-only",
        action="store_true",
        help="make only the sealing key (DIR/keys), leaving DIR/tls as it is; with --force, "
        "replace it (every site must then pin the new sealing.pub)",
    )
    init.set_defaults(run=run_init)


def _add_register(commands: argparse._SubParsersAction) -> None:
    register = commands.add_parser(
        "register",
        help="allow a site to join: add its node public key to the register",
        description=(
            "Check a site's node public key (the node.pub of `fedrad site init`) and store it "
            "as SERVER_DIR/nodes/SITE_ID.pub, and with --identity its identity.pub as "
            "SERVER_DIR/identities/SITE_ID.pub (the ServerApp's register of who signs updates). "
            "`fedrad server start` admits the registered sites only; delete the file to revoke "
            "a site. Compare the printed fingerprints with the ones the site read you."
        ),
    )
    register.add_argument("site_id", help="the site's id (site.toml [site] id)")
    register.add_argument("public_key", help="the site's node.pub")
    register.add_argument("--identity", help="the site's identity.pub, filed beside it")
    register.add_argument(
        "--server-dir",
        default=DEFAULT_SERVER_DIR,
        help=f"the server folder (default: {DEFAULT_SERVER_DIR}/)",
    )
    register.add_argument("--force", action="store_true", help="replace the site's key")
    register.set_defaults(run=run_register)


def _add_start(commands: argparse._SubParsersAction) -> None:
    start = commands.add_parser(
        "start",
        help="start a SuperLink and run the study on the sites that join",
        description=(
            "Start Flower's SuperLink (one port for the sites, the flwr CLI and the ServerApp) "
            "with TLS and SuperNode authentication, register the sites of the study's nodes/ "
            "folder, submit the study with `flwr run`, wait for the sites (fedrad site join "
            "...), run the rounds and write the run directory; then stop the SuperLink. With "
            "secure aggregation off, the sites seal their updates end to end to the ServerApp "
            "when keys/sealing.key and the sites' identity keys (identities/) are there; "
            "otherwise it warns."
        ),
    )
    start.add_argument("study", help="the study's study.toml")
    start.add_argument(
        "--address",
        default="127.0.0.1",
        help="interface the SuperLink listens on (default 127.0.0.1; 0.0.0.0 for remote sites)",
    )
    start.add_argument(
        "--port",
        "--fleet-port",
        dest="port",
        type=int,
        default=None,
        help="the SuperLink's port, which sites connect to (default 9092). Flower 1.41 serves "
        "the Fleet, Control and Runtime APIs on this one port",
    )
    start.add_argument(
        "--run-dir", help="run directory for results and logs (default: runs/<study name>)"
    )
    security = start.add_mutually_exclusive_group()
    security.add_argument(
        "--tls-dir",
        help="folder of ca.crt, server.crt and server.key (default: tls/ beside study.toml)",
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        help="run without TLS and without SuperNode authentication (a trusted test network "
        "only: updates travel unencrypted and any machine can join)",
    )
    start.add_argument(
        "--nodes-dir",
        help="the register of site public keys (default: nodes/ beside study.toml)",
    )
    start.add_argument(
        "--sealing-key",
        help="the ServerApp's sealing.key (default: keys/sealing.key beside study.toml); with "
        "it and the sites' identity keys, every site seals its updates end to end",
    )
    start.add_argument(
        "--identities-dir",
        help="the register of site identity keys (default: identities/ beside study.toml)",
    )
    start.add_argument(
        "--app",
        help="a Flower App folder to run instead of the generated one (e.g. a fedrad checkout)",
    )
    start.add_argument(
        "--node-timeout",
        type=float,
        default=120.0,
        help=(
            "seconds the study waits for every registered site to join; when the time is up "
            "it starts with those connected if they are at least min_sites (default 120)"
        ),
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=24 * 3600.0,
        help="seconds after which the run is abandoned (default one day)",
    )
    start.set_defaults(run=run_start)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text) or "study"


def run_init(args: argparse.Namespace) -> int:
    from fedrad.deploy.sealing_setup import (
        certificate_fingerprint,
        check_server_sealing,
        init_server_sealing,
    )
    from fedrad.secure.certificates import (
        TlsFiles,
        certificate_hosts,
        init_tls,
        load_certificate,
    )

    server_dir = Path(args.dir)
    console = Console()
    if args.sealing_only and args.host:
        raise FedradError("--host names the server certificate, which --sealing-only leaves alone")
    keep = args.keep_ca
    check_server_sealing(server_dir, force=args.force, keep=keep)  # before any file is written
    lines = []
    if args.sealing_only:
        files = TlsFiles.in_dir(server_dir / "tls")
    else:
        files = init_tls(server_dir / "tls", args.host, force=args.force, keep_ca=keep)
        hosts = certificate_hosts(load_certificate(files.server_cert))
        made = "server certificate (existing CA kept)" if keep else "CA and server certificate"
        lines += [
            f"[green]{made} written[/] to {files.ca_cert.parent}",
            f"  server.crt names: {', '.join(hosts)}",
        ]
    sealing = init_server_sealing(server_dir, force=args.force, keep=keep)
    state = "written" if sealing.created else "kept"
    lines.append(f"[green]sealing key {state}[/]: {sealing.key} (sites seal their updates to it)")
    lines.append("give every site these public files and read them their fingerprints by phone:")
    if files.ca_cert.is_file():
        ca_print = certificate_fingerprint(load_certificate(files.ca_cert))
        lines.append(f"  [bold]{files.ca_cert}[/]\n    SHA-256 {ca_print}")
    lines += [
        f"  [bold]{sealing.pub}[/]\n    fingerprint {sealing.fingerprint}",
        "  sites pin them with `fedrad site init SITE.toml --root-cert ca.crt "
        "--server-sealing-key sealing.pub`",
        "keep ca.key, server.key and sealing.key here (private, 0600)",
        "next: register each site with `fedrad server register SITE_ID node.pub --identity "
        f"identity.pub --server-dir {server_dir}`",
    ]
    if args.sealing_only and sealing.created and args.force:
        lines.append("[yellow]a new sealing key: every site must pin the new sealing.pub[/]")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)
    return 0


def run_register(args: argparse.Namespace) -> int:
    from fedrad.secure.node_auth import (
        load_identity_public_key,
        load_node_public_key,
        register_identity,
        register_site,
    )

    server_dir = Path(args.server_dir)
    if args.identity:  # check both keys before filing either
        load_node_public_key(args.public_key)
        load_identity_public_key(args.identity)
    site = register_site(server_dir / "nodes", args.site_id, args.public_key, force=args.force)
    lines = [
        f"[green]site {site.site_id} registered[/]: {site.path}",
        f"  node key fingerprint {site.fingerprint}",
    ]
    if args.identity:
        identity = register_identity(
            server_dir / "identities", args.site_id, args.identity, force=args.force
        )
        lines += [
            f"  identity key: {identity.path}",
            f"  identity key fingerprint {identity.fingerprint}",
        ]
    lines.append("check the fingerprints with the site before the study starts")
    Console().print("\n".join(lines), highlight=False, soft_wrap=True)
    return 0


def run_start(args: argparse.Namespace) -> int:
    from fedrad.deploy import INSECURE_WARNING, stop_on_termination
    from fedrad.deploy.superlink import DEFAULT_PORT, SuperLink
    from fedrad.federation.config import StudyConfig
    from fedrad.secure.certificates import TlsFiles
    from fedrad.secure.node_auth import registered_sites

    console = Console()
    if args.insecure:
        Console(stderr=True).print(
            f"[bold red]WARNING[/] {INSECURE_WARNING}", highlight=False, soft_wrap=True
        )
    study_path = Path(args.study).resolve()
    study = StudyConfig.from_file(study_path)
    run_dir = Path(args.run_dir or Path("runs") / _safe(study.name)).resolve()
    app_dir = None
    if args.app:
        app_dir = Path(args.app).resolve()
        if not (app_dir / "pyproject.toml").is_file():
            raise FedradError(f"--app {app_dir}: no pyproject.toml (a Flower App folder) there")
    port = DEFAULT_PORT if args.port is None else args.port

    tls = None
    sites = []
    if not args.insecure:
        tls_dir = Path(args.tls_dir) if args.tls_dir else study_path.parent / "tls"
        nodes_dir = Path(args.nodes_dir) if args.nodes_dir else study_path.parent / "nodes"
        tls = TlsFiles.in_dir(tls_dir)
        if not all(p.is_file() for p in tls.server_files()):
            raise FedradError(
                f"no TLS certificates in {tls_dir} (ca.crt, server.crt, server.key): run "
                f"`fedrad server init {study_path.parent}`, or pass --tls-dir; or --insecure "
                "to run without TLS on a trusted test network"
            )
        sites = registered_sites(nodes_dir)
        if len(sites) < study.training.min_sites:
            raise FedradError(
                f"study {study.name!r} needs {study.training.min_sites} site(s) but "
                f"{len(sites)} are registered in {nodes_dir}: register each site's node.pub "
                "with `fedrad server register SITE_ID node.pub`"
            )

    sealing = _plan_sealing(args, study, study_path, None if args.insecure else sites)

    with stop_on_termination():
        link = SuperLink.start(
            run_dir / "flower", host=args.address, port=port, tls=tls, insecure=args.insecure
        )
        try:
            if sites:
                link.register_sites(sites)
            mode = (
                "[yellow](INSECURE: no TLS, no node authentication)[/]"
                if args.insecure
                else "(TLS, registered sites only)"
            )
            join = " --insecure" if args.insecure else ""
            console.print(
                f"[bold]fedrad server[/] study {study.name!r}: SuperLink on "
                f"{args.address}:{link.port} {mode}\n"
                + (f"registered sites: {', '.join(s.site_id for s in sites)}\n" if sites else "")
                + _sealing_line(sealing)
                + f"sites join with: fedrad site join SITE.toml --superlink HOST:{link.port}"
                f"{join}\nSuperLink log: {link.process.log_path}",
                highlight=False,
                soft_wrap=True,
            )
            run_study(
                link,
                study_path,
                run_dir,
                app_dir=app_dir,
                node_timeout=args.node_timeout,
                timeout=args.timeout,
                console=console,
                sealing=sealing.run_config,
                expected_sites=len(sites),
            )
        finally:
            link.stop()
    return 0


def _plan_sealing(
    args: argparse.Namespace,
    study: StudyConfig,
    study_path: Path,
    sites: Sequence[RegisteredSite] | None,
) -> SealingPlan:
    """The run's sealing (``--sealing-key``, ``--identities-dir`` or their defaults beside the
    study); warns on stderr when a run without secure aggregation is not sealed."""
    from fedrad.deploy.sealing_setup import IDENTITIES_DIR, plan_sealing, server_sealing_paths

    key = Path(args.sealing_key) if args.sealing_key else server_sealing_paths(study_path.parent)[0]
    identities = (
        Path(args.identities_dir) if args.identities_dir else study_path.parent / IDENTITIES_DIR
    )
    registered = None if sites is None else [s.site_id for s in sites]
    plan = plan_sealing(study, key, identities, registered)
    if plan.warning:
        Console(stderr=True).print(
            f"[bold yellow]WARNING[/] {plan.warning}", highlight=False, soft_wrap=True
        )
    return plan


def _sealing_line(plan: SealingPlan) -> str:
    if plan.enabled:
        return (
            f"updates sealed end to end to sealing key {plan.fingerprint[:16]}... "
            f"(site identities: {', '.join(plan.sites)})\n"
        )
    if plan.note:
        return f"{plan.note}\n"
    return "[yellow]updates NOT sealed end to end[/] (see the warning above)\n"


def run_study(
    link: SuperLink,
    study_path: Path,
    run_dir: Path,
    *,
    app_dir: Path | None = None,
    node_timeout: float = 120.0,
    timeout: float = 24 * 3600.0,
    console: Console | None = None,
    sealing: Mapping[str, str] | None = None,
    expected_sites: int = 0,
) -> dict[str, Any]:
    """Submit the study to a running SuperLink, wait for the run and return its summary.

    The ServerApp waits up to ``node_timeout`` seconds for ``expected_sites`` sites (the
    registered ones; at least ``min_sites``) before round 1.

    ``app_dir`` is the Flower App to run (default: one written under ``run_dir/flower/app``).
    ``sealing`` adds the run config keys ``sealing-key`` and ``site-identities``
    (:attr:`fedrad.deploy.sealing_setup.SealingPlan.run_config`), which make the ServerApp ask
    every site to seal its updates end to end.
    The run is followed through the run directory (checkpoints, ``federation.json``) and
    ``flwr ls``; a run that fails raises :class:`~fedrad.deploy.DeploymentError` with the end
    of its log.
    """
    from fedrad.deploy import DeploymentError
    from fedrad.deploy.flower_app import write_app_dir
    from fedrad.federation.config import StudyConfig

    console = console or Console()
    study_path = Path(study_path).resolve()
    study = StudyConfig.from_file(study_path)
    run_dir = Path(run_dir).resolve()
    if app_dir is None:
        app_dir = write_app_dir(run_dir / "flower" / "app")
    submitted = time.time()
    run_config: dict[str, str | int | float] = {
        "study": str(study_path),
        "run-dir": str(run_dir),
        "node-timeout": float(node_timeout),
        "expected-sites": int(expected_sites),
        **(sealing or {}),
    }
    run_id = link.submit(app_dir, run_config)
    waiting = max(study.training.min_sites, expected_sites)
    console.print(
        f"run {run_id} submitted; waiting up to {node_timeout:.0f} s for {waiting} site(s) "
        f"(at least {study.training.min_sites}); "
        f"run directory: {run_dir}"
    )
    summary_file = run_dir / "federation.json"

    last: dict[str, Any] = {"status": "", "rounds": 0}

    def done() -> bool:
        checkpoints = (run_dir / "checkpoints").glob("round-*.npz")
        rounds = sum(1 for c in checkpoints if c.stat().st_mtime >= submitted)
        if rounds != last["rounds"]:
            last["rounds"] = rounds
            console.print(f"  run {run_id}: round {rounds}/{study.training.rounds} done")
        return summary_file.exists() and summary_file.stat().st_mtime >= submitted

    def report(state: RunState) -> None:
        if state.status != last["status"]:
            last["status"] = state.status
            console.print(f"  run {run_id}: {state.status}")

    with console.status("running the study (Ctrl-C stops it)"):
        state = link.wait_for_run(run_id, timeout, done=done, on_state=report)
    if not state.completed or not done():
        raise DeploymentError(_failure(link, run_id, state.status))

    summary = json.loads(summary_file.read_text())
    pooled = summary.get("final", {}).get("pooled", {})
    key = "auc" if study.task == "binary" else "c_index"
    value = pooled.get(key)
    sites = [str(s.get("site_id")) for s in summary.get("sites", []) if s.get("ok")]
    shown = "-" if value is None else f"{value:.3f}"
    console.print(
        f"[green]run {run_id} completed[/]: {summary.get('rounds')} rounds over sites "
        f"{', '.join(sites)}; held-out {key} {shown}\n"
        f"run directory: {run_dir}  (federation.json, history.json, model.npz, checkpoints/, "
        "plots/)"
    )
    return summary


def _failure(link: SuperLink, run_id: int, status: str) -> str:
    """Why a run failed: the ServerApp's exception (from ``flwr log``) and the log's end."""
    from fedrad.deploy import DeploymentError

    try:
        lines = re.sub(r"\x1b\[[0-9;]*m", "", link.run_log(run_id)).splitlines()
    except DeploymentError as exc:
        return f"run {run_id} ended as {status}; its log is unavailable: {exc}"
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    reason = f": {errors[-1]}" if errors else ""
    tail = "\n".join(lines[-25:])
    return f"run {run_id} ended as {status}{reason}\nend of the run log:\n{tail}"
