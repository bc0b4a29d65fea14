"""The site's Flower ClientApp: the code that runs at the hospital and decides what leaves it.

Every handler follows the same path (read top to bottom):

1. :func:`admit` — parse the message's study, require that the site **approved** its hash
   (:mod:`fedrad.site.approval`) and that the site's **policy** allows it
   (:mod:`fedrad.site.policy`); nothing the message says can change seeds, splits, features
   or privacy: the approved study fixes them, the site's secret seeds them.
2. :class:`~fedrad.site.release.ReleaseGuard` — the one release path: a retry is answered from
   the cache, a second different release is refused, limits and minimum cell counts apply.
3. the computation, on the site's split (:mod:`fedrad.site.splits`), DP-SGD keyed in the
   ledger by ``(study hash, run, round, input hash)``.

Around the handlers, outermost first (:func:`site_mods`): the egress log (records every byte
that leaves, with its protection), the refusal mod (errors leave as short codes, detail stays
in ``log_dir/site.log``), sealing (end-to-end to the pinned server key; once a key is pinned
every reply outside SecAgg+ must be sealed), the SecAgg+ cohort check and Flower's SecAgg+,
client-level DP.

In deployment the SuperNode's node config names the site (``site-config="sites/a/site.toml"``);
in simulation the harness builds the app with the list of virtual sites and each node takes the
site of its ``partition-id``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrad.federation import protocol
from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.federation.site_data import SiteData, check_site, site_arrays, site_feature_table
from fedrad.site.policy import SitePolicy, check_study
from fedrad.site.refusal import SiteRefusal
from fedrad.site.release import ReleaseGuard, check_cell_counts, input_hash

SiteResolver = Callable[[Context], SiteConfig]


def node_site(context: Context) -> SiteConfig:
    """The site a deployed SuperNode serves, from its node config ``site-config``."""
    path = context.node_config.get("site-config")
    if not path:
        raise RuntimeError(
            "this SuperNode has no 'site-config' in its node config (fedrad site join sets it)"
        )
    return SiteConfig.from_file(str(path))


@dataclass(frozen=True)
class Admitted:
    """A request the site agreed to consider: its approved study and the site's policy."""

    site: SiteConfig
    study: StudyConfig
    study_hash: str
    approval: str
    policy: SitePolicy
    config: Any
    guard: ReleaseGuard


def admit(msg: Message, site: SiteConfig) -> Admitted:
    """Refuse a message whose study the site has not approved or whose policy forbids it."""
    from fedrad.site.approval import approval_hash, require_approved, study_from_message

    if not msg.has_content() or "config" not in msg.content.config_records:
        raise SiteRefusal("malformed", "the message carries no config record")
    config = msg.content["config"]
    if "study" not in config:
        raise SiteRefusal("malformed", "the message's config names no study")
    study = study_from_message(str(config["study"]))
    study_hash = require_approved(site, study)
    policy = site.site_policy
    broken = check_study(policy, study)
    if broken:
        raise SiteRefusal("policy", "; ".join(broken))
    return Admitted(
        site, study, study_hash, approval_hash(study), policy, config, ReleaseGuard(site, policy)
    )


def _config_dict(config: Any) -> dict[str, Any]:
    return {str(k): v for k, v in config.items()}


def _arrays(msg: Message) -> list[np.ndarray] | None:
    if "arrays" not in msg.content.array_records:
        return None
    return msg.content["arrays"].to_numpy_ndarrays()


def _round(msg: Message, config: Any) -> int:
    value = config.get("server-round")
    if value is None:
        group = msg.metadata.group_id
        value = int(group) if str(group).isdigit() else 0
    return int(value)


def _reply(msg: Message, content: RecordDict) -> Message:
    return Message(content=content, reply_to=msg)


def _records(site: SiteConfig, **records) -> RecordDict:
    return RecordDict({**records, "site": ConfigRecord({"site_id": site.site_id})})


def _standardisation(config: Any) -> protocol.Standardisation:
    try:
        return protocol.Standardisation.from_config(config)
    except (KeyError, ValueError, TypeError) as exc:
        raise SiteRefusal(
            "malformed", f"the message's standardisation is unreadable: {exc}"
        ) from None


def _load(a: Admitted, features: list[str]) -> SiteData:
    table = site_feature_table(a.site, a.study)
    try:
        return site_arrays(table, a.site, a.study, features)
    except ValueError as exc:
        raise SiteRefusal("site-data", str(exc)) from None


def _target(study: StudyConfig, y: np.ndarray, time: np.ndarray | None):
    return (time, y) if study.task == "survival" else y


def evaluation_metrics(study: StudyConfig, model, data: SiteData) -> dict[str, object]:
    """Aggregate metrics of ``model`` on the site's held-out cases (no per-patient values)."""
    from fedrad.learn.federated_eval import site_binary_eval, site_concordance
    from fedrad.learn.metrics import roc_auc
    from fedrad.learn.training import predict

    n = int(data.X_test.shape[0])
    out: dict[str, object] = {"num-examples": n}
    if n == 0:
        return out
    eta = predict(model, data.X_test)
    if study.task == "binary":
        p = 0.5 * (1.0 + np.tanh(0.5 * eta))
        stats = site_binary_eval(data.y_test, p, n_bins=protocol.SCORE_BINS)
        out.update(
            {
                "hist-neg": [float(v) for v in stats.hist[0]],
                "hist-pos": [float(v) for v in stats.hist[1]],
                "confusion": [float(v) for v in stats.confusion],
                "sq-error": stats.sq_error,
            }
        )
        if 0 < data.y_test.sum() < n:
            out["auc"] = float(roc_auc(data.y_test, p))
    else:
        score, comparable = site_concordance(data.time_test, data.y_test, eta)
        out.update({"cindex-score": float(score), "cindex-comparable": float(comparable)})
    return out


def _held_out_counts(study: StudyConfig, data: SiteData) -> dict[str, float]:
    n = float(data.X_test.shape[0])
    positives = float(np.sum(data.y_test == 1))
    label = "positive" if study.task == "binary" else "events"
    counts = {"held-out": n, label: positives}
    if study.task == "binary":
        counts["negative"] = n - positives
    return counts


def _released(
    a: Admitted,
    msg: Message,
    kind: str,
    round: int | str,
    request: str,
    compute: Callable[[], RecordDict],
    protection: tuple[str, ...] = (),
) -> Message:
    """The reply to ``msg``: its content through the site's release path."""
    content = a.guard.release(
        study=a.study,
        study_hash=a.study_hash,
        approval=a.approval,
        run_id=int(msg.metadata.run_id),
        kind=kind,
        round=round,
        input=request,
        compute=compute,
        protection=protection,
    )
    return _reply(msg, content)


# --- handlers ----------------------------------------------------------------------------------


def handle_query(msg: Message, site: SiteConfig) -> Message:
    """Site check, moments, Newton statistics and calibration sums, through the release path."""
    a = admit(msg, site)
    action = str(a.config.get("action", ""))
    request = input_hash(_arrays(msg), _config_dict(a.config))
    if action == protocol.ACTION_CHECK:
        return _released(a, msg, "check", 0, request, lambda: _check(a))
    if action == protocol.ACTION_MOMENTS:
        return _released(a, msg, "moments", 0, request, lambda: _moments(a))
    if action == protocol.ACTION_NEWTON:
        if a.study.training.strategy != "exact":
            raise SiteRefusal(
                "policy",
                f"Newton statistics belong to the exact mode; study {a.study.name!r} aggregates "
                f"with {a.study.training.strategy!r}",
            )
        return _released(a, msg, "newton", request[:16], request, lambda: _newton(a, msg))
    if action == protocol.ACTION_CALIBRATION:
        return _released(a, msg, "calibration", request[:16], request, lambda: _calibration(a, msg))
    raise SiteRefusal("malformed", f"unknown query action {action!r}")


def _check(a: Admitted) -> RecordDict:
    table = site_feature_table(a.site, a.study)
    report = check_site(table, a.site, a.study)
    counts = {
        "n-cases": report.n_cases,
        "n-train": report.n_train,
        "n-test": report.n_test,
        "n-positive": report.n_positive,
        "failed-cases": report.failed_cases,
    }
    for key in ("n-cases", "n-train", "n-test", "n-positive"):
        if 0 < counts[key] < a.policy.min_cell_count:
            counts[key] = -1  # withheld: fewer than the site's min_cell_count
    return _records(
        a.site,
        report=ConfigRecord(
            {
                "ok": report.ok,
                "reason": report.reason,
                "usable-features": list(report.usable_features) or [""],
            }
        ),
        counts=MetricRecord(counts),
    )


def _moments(a: Admitted) -> RecordDict:
    features = [str(f) for f in a.config.get("features", [])]
    data = _load(a, features)
    X = data.X_train
    check_cell_counts({"n-train": X.shape[0]}, a.policy, "moments")
    return _records(
        a.site,
        moments=ArrayRecord(
            {
                "n": _arr(np.full(X.shape[1], X.shape[0], dtype=np.float64)),
                "sum": _arr(X.sum(axis=0)),
                "sumsq": _arr((X**2).sum(axis=0)),
            }
        ),
    )


def _newton(a: Admitted, msg: Message) -> RecordDict:
    from fedrad.federation.exact import site_newton_stats

    std = _standardisation(a.config)
    data = _load(a, std.features)
    check_cell_counts({"n-train": data.n_train}, a.policy, "newton")
    arrays = _arrays(msg)
    if not arrays:
        raise SiteRefusal("malformed", "a Newton query carries no coefficients")
    grad, hess, loglik = site_newton_stats(
        a.study, std.apply(data.X_train), data.y_train, data.time_train, arrays[0]
    )
    return _records(
        a.site,
        newton=ArrayRecord({"grad": _arr(grad), "hess": _arr(hess)}),
        stats=MetricRecord({"loglik": float(loglik), "num-examples": data.n_train}),
    )


def _calibration(a: Admitted, msg: Message) -> RecordDict:
    from fedrad.learn.federated_calibration import N_STATISTICS, calibration_statistics
    from fedrad.learn.training import predict_proba

    _single_thread()
    std = _standardisation(a.config)
    data = _load(a, std.features)
    if data.X_test.shape[0] == 0:
        stats = np.zeros(N_STATISTICS)
    else:
        check_cell_counts(_held_out_counts(a.study, data), a.policy, "calibration")
        model = _message_model(msg, a.study, std)
        p = predict_proba(model, std.apply(data.X_test))
        coefficients = np.asarray(a.config[protocol.CALIBRATION_COEFFICIENTS], dtype=np.float64)
        stats = calibration_statistics(data.y_test, p, coefficients)
    return _records(a.site, calibration=ArrayRecord({"stats": _arr(stats)}))


def handle_train(msg: Message, site: SiteConfig) -> Message:
    """One round of local training (DP-SGD when the study asks), through the release path."""
    _single_thread()
    a = admit(msg, site)
    server_round = _round(msg, a.config)
    arrays = _arrays(msg)
    if arrays is None:
        raise SiteRefusal("malformed", "a training message carries no global model")
    from fedrad.federation.secagg_client import inside_secure_aggregation

    if a.study.secure_aggregation.enabled and not inside_secure_aggregation():
        raise SiteRefusal(
            "policy",
            "the approved study aggregates updates with SecAgg+, but this training message "
            "came outside SecAgg+: its update would leave unmasked",
        )
    request = input_hash(arrays, _config_dict(a.config))
    protection = ("dp",) if a.study.privacy.mode == "sample" else ()
    compute = lambda: _train(a, msg, arrays, server_round, request)  # noqa: E731
    return _released(a, msg, "train", server_round, request, compute, protection)


def _train(
    a: Admitted, msg: Message, arrays: list[np.ndarray], server_round: int, request: str
) -> RecordDict:
    from fedrad.learn.models import build_model, get_parameters, set_parameters
    from fedrad.learn.training import train_local
    from fedrad.site.secret import derive_seed

    study, site = a.study, a.site
    std = _standardisation(a.config)
    data = _load(a, std.features)
    check_cell_counts({"n-train": data.n_train}, a.policy, "training")
    model = build_model(study.model_settings(), len(std.features))
    try:
        set_parameters(model, arrays)
    except (RuntimeError, ValueError) as exc:
        raise SiteRefusal("malformed", f"the global model does not fit the study: {exc}") from None
    mu = float(a.config.get("proximal-mu", 0.0))
    common = dict(proximal_mu=mu, global_params=arrays if mu > 0 else None)
    X = std.apply(data.X_train)
    target = _target(study, data.y_train, data.time_train)
    run_id = int(msg.metadata.run_id)
    ordinal = a.guard.run_ordinal(study, a.approval, run_id)
    # The noise is bound to the study (what it computes: its SecAgg+ settings change only how
    # the update leaves), the site's run, the round and the input model. The model
    # enters at float32 precision: the aggregate of one round can differ in its last float64 bit
    # from run to run (summation order), which must not turn into different noise for a repeated
    # simulation. A second, different release of the round is refused anyway (ReleaseGuard).
    model_digest = input_hash([np.asarray(x, dtype=np.float32) for x in arrays], {})
    from fedrad.site.approval import computation_hash

    # without DP the seed only shuffles batches: it is bound to the round, not to the model, so
    # the same study under SecAgg+ (whose rounding moves the model's last digits) trains alike
    bound = model_digest if study.privacy.mode == "sample" else "-"
    seed = derive_seed(site, f"train:{computation_hash(study)}:{ordinal}:{server_round}:{bound}")
    privacy: dict[str, float] = {}
    if study.privacy.mode == "sample":
        from fedrad.federation.site_privacy import train_private_round

        result = train_private_round(
            study,
            site,
            model,
            X,
            target,
            run_id=run_id,
            server_round=server_round,
            study_hash=a.study_hash,
            input_hash=request,
            seed=seed,
            min_noise_multiplier=a.policy.min_noise_multiplier,
            max_study_epsilon=a.policy.max_study_epsilon,
            **common,
        )
        privacy = {k: float(result[k]) for k in protocol.PRIVACY_METRICS}
    else:
        result = train_local(
            model,
            X,
            target,
            epochs=study.training.local_epochs,
            lr=study.training.learning_rate,
            batch_size=study.training.batch_size,
            optimizer=study.training.optimizer,
            l2=study.model.l2,
            seed=seed % (2**31),
            **common,
        )
    n_reported = int(result["n"])
    if study.privacy.mode == "client":
        n_reported = min(n_reported, study.privacy.max_examples)
    metrics: dict[str, float] = {"num-examples": n_reported, **privacy}
    if not study.secure_aggregation.enabled:
        # under SecAgg+ only the masked update is protected: the loss would leave in the clear
        metrics["train-loss"] = float(result["loss"])
    return _records(site, arrays=ArrayRecord(get_parameters(model)), metrics=MetricRecord(metrics))


def handle_evaluate(msg: Message, site: SiteConfig) -> Message:
    """Aggregate metrics of the message's model on the site's held-out cases."""
    _single_thread()
    a = admit(msg, site)
    server_round = _round(msg, a.config)
    request = input_hash(_arrays(msg), _config_dict(a.config))

    def compute() -> RecordDict:
        std = _standardisation(a.config)
        data = _load(a, std.features)
        if data.X_test.shape[0]:
            check_cell_counts(_held_out_counts(a.study, data), a.policy, "evaluation")
        model = _message_model(msg, a.study, std)
        data.X_test = std.apply(data.X_test)
        return _records(a.site, metrics=MetricRecord(evaluation_metrics(a.study, model, data)))

    return _released(a, msg, "evaluate", server_round, request, compute)


def _message_model(msg: Message, study: StudyConfig, std: protocol.Standardisation):
    """The study's model holding the parameters the server sent with ``msg``."""
    from fedrad.learn.models import build_model, set_parameters

    arrays = _arrays(msg)
    if arrays is None:
        raise SiteRefusal("malformed", "the message carries no model")
    model = build_model(study.model_settings(), len(std.features))
    try:
        set_parameters(model, arrays)
    except (RuntimeError, ValueError) as exc:
        raise SiteRefusal("malformed", f"the model does not fit the study: {exc}") from None
    return model


def _single_thread() -> None:
    """One torch thread: tiny models gain nothing from more, and a fixed reduction order makes
    the same inputs give the same bits whichever worker process serves the site."""
    import torch

    torch.set_num_threads(1)


def _arr(values: np.ndarray):
    from flwr.app import Array

    return Array(np.ascontiguousarray(values, dtype=np.float64))


# --- the app -----------------------------------------------------------------------------------


def node_sealing(context: Context):
    """A deployed site's sealing keys (``keys_dir`` of its site.toml; ``fedrad site init``)."""
    from fedrad.federation.sealing import SiteSealing, load_site_sealing
    from fedrad.secure.identity import IDENTITY_KEY, generate_identity

    site = node_site(context)
    key = (site.site_id, str(site.keys_dir))
    if key not in _SEALING_CACHE:
        if (site.keys_dir / IDENTITY_KEY).exists():
            _SEALING_CACHE[key] = load_site_sealing(site.site_id, site.keys_dir)
        else:  # not initialised: it cannot sign, so a server asking for sealing will refuse it
            logging.getLogger("fedrad.site").warning(
                "site %s has no identity key in %s (run `fedrad site init`): its updates "
                "cannot be sealed and signed, and a server that requires sealing refuses them",
                site.site_id,
                site.keys_dir,
            )
            _SEALING_CACHE[key] = SiteSealing(site.site_id, generate_identity())
    return _SEALING_CACHE[key]


_SEALING_CACHE: dict[tuple[str, str], object] = {}


def site_mods(resolve_site: SiteResolver, resolve_sealing: Callable | None) -> list:
    """The site's mods, outermost first: the egress log sees the exact bytes that leave the
    site (after sealing or SecAgg+ masking); the refusal mod turns every failure into a coded,
    generic error; sealing encrypts replies to the ServerApp's key; the SecAgg+ cohort check
    refuses rounds below the site's policy; SecAgg+ wraps the train handler."""
    from fedrad.federation.client_dp import client_dp_mods
    from fedrad.federation.egress import egress_plaintext_mod, make_egress_mod
    from fedrad.federation.secagg import secure_aggregation_mods
    from fedrad.site.cohort import make_cohort_mod
    from fedrad.site.refusal import make_refusal_mod

    mods = [
        make_egress_mod(resolve_site),
        make_refusal_mod(lambda context: resolve_site(context).log_dir),
    ]
    if resolve_sealing is not None:  # outside SecAgg+: it leaves SecAgg+ messages alone
        from fedrad.federation.sealing import make_sealing_mod

        mods.append(make_sealing_mod(resolve_sealing))
        mods.append(egress_plaintext_mod)  # the log also records what a sealed reply holds
    mods.append(make_cohort_mod(lambda context: resolve_site(context).site_policy))
    mods += secure_aggregation_mods()
    mods += client_dp_mods()  # innermost: clips the update before masking or sealing
    return mods


def build_client_app(
    resolve_site: SiteResolver = node_site, resolve_sealing: Callable | None = None
) -> ClientApp:
    """A ClientApp whose handlers serve the site ``resolve_site(context)`` names.

    ``resolve_sealing(context)`` gives the site's :class:`~fedrad.federation.sealing.SiteSealing`
    (identity key and pinned server key) so that its replies are sealed end to end; without it
    the site cannot seal.
    """
    app = ClientApp(mods=site_mods(resolve_site, resolve_sealing))

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return handle_query(msg, resolve_site(context))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return handle_train(msg, resolve_site(context))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(msg, resolve_site(context))

    return app


def simulation_resolver(sites: Sequence[SiteConfig]) -> SiteResolver:
    """Virtual node ``partition-id`` i serves ``sites[i]``."""
    sites = list(sites)

    def resolve(context: Context) -> SiteConfig:
        return sites[int(context.node_config["partition-id"])]

    return resolve


#: The ClientApp of a deployed SuperNode (``fedrad site join``).
app = build_client_app(node_site, node_sealing)
