"""The site's Flower ClientApp: answers checks, moments, training, evaluation, Newton steps and
calibration exchanges.

In deployment the SuperNode's node config names the site (``site-config="sites/a/site.toml"``);
in simulation the harness builds the app with the list of virtual sites and each node takes the
site of its ``partition-id``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrad.federation import protocol
from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.federation.site_data import SiteData, check_site, site_arrays, site_feature_table
from fedrad.learn.models import build_model, get_parameters, set_parameters
from fedrad.learn.training import predict, predict_proba, train_local

SiteResolver = Callable[[Context], SiteConfig]


def node_site(context: Context) -> SiteConfig:
    """The site a deployed SuperNode serves, from its node config ``site-config``."""
    path = context.node_config.get("site-config")
    if not path:
        raise RuntimeError(
            "this SuperNode has no 'site-config' in its node config (fedrad site join sets it)"
        )
    return SiteConfig.from_file(str(path))


def _site_seed(study: StudyConfig, site_id: str, server_round: int) -> int:
    digest = hashlib.sha256(f"{study.seed}:{site_id}:{server_round}".encode()).hexdigest()
    return int(digest[:8], 16)


def _load(
    site: SiteConfig, study: StudyConfig, standardisation: protocol.Standardisation
) -> SiteData:
    table = site_feature_table(site, study)
    return site_arrays(table, site, study, standardisation.features)


def _target(study: StudyConfig, y: np.ndarray, time: np.ndarray | None):
    return (time, y) if study.task == "survival" else y


def _reply(msg: Message, site: SiteConfig, **records) -> Message:
    content = RecordDict({**records, "site": ConfigRecord({"site_id": site.site_id})})
    return Message(content=content, reply_to=msg)


def evaluation_metrics(study: StudyConfig, model, data: SiteData) -> dict[str, object]:
    """Aggregate metrics of ``model`` on the site's held-out cases (no per-patient values)."""
    from fedrad.learn.federated_eval import site_binary_eval, site_concordance
    from fedrad.learn.metrics import roc_auc

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
    site (after sealing or SecAgg+ masking); sealing encrypts replies to the ServerApp's key
    when the server asks for it; SecAgg+ wraps the train handler in secure-aggregation rounds."""
    from fedrad.federation.client_dp import client_dp_mods
    from fedrad.federation.egress import egress_plaintext_mod, make_egress_mod
    from fedrad.federation.secagg import secure_aggregation_mods

    mods = [make_egress_mod(resolve_site)]
    if resolve_sealing is not None:  # outside SecAgg+: it leaves SecAgg+ messages alone
        from fedrad.federation.sealing import make_sealing_mod

        mods.append(make_sealing_mod(resolve_sealing))
        mods.append(egress_plaintext_mod)  # the log also records what a sealed reply holds
    mods += secure_aggregation_mods()
    mods += client_dp_mods()  # innermost: clips the update before masking or sealing
    return mods


def build_client_app(
    resolve_site: SiteResolver = node_site, resolve_sealing: Callable | None = None
) -> ClientApp:
    """A ClientApp whose handlers serve the site ``resolve_site(context)`` names.

    ``resolve_sealing(context)`` gives the site's :class:`~fedrad.federation.sealing.SiteSealing`
    (identity key and pinned server key) so that its replies are sealed end to end when the
    server asks for it; without it the site cannot seal.
    """
    app = ClientApp(mods=site_mods(resolve_site, resolve_sealing))

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        site = resolve_site(context)
        config = msg.content["config"]
        study = protocol.study_from_json(str(config["study"]))
        action = str(config["action"])
        table = site_feature_table(site, study)
        if action == protocol.ACTION_CHECK:
            report = check_site(table, site, study)
            return _reply(
                msg,
                site,
                report=ConfigRecord(
                    {
                        "ok": report.ok,
                        "reason": report.reason,
                        "usable-features": list(report.usable_features) or [""],
                    }
                ),
                counts=MetricRecord(
                    {
                        "n-cases": report.n_cases,
                        "n-train": report.n_train,
                        "n-test": report.n_test,
                        "n-positive": report.n_positive,
                        "failed-cases": report.failed_cases,
                    }
                ),
            )
        features = list(config["features"])
        data = site_arrays(table, site, study, features)
        if action == protocol.ACTION_MOMENTS:
            X = data.X_train
            return _reply(
                msg,
                site,
                moments=ArrayRecord(
                    {
                        "n": _arr(np.full(X.shape[1], X.shape[0], dtype=np.float64)),
                        "sum": _arr(X.sum(axis=0)),
                        "sumsq": _arr((X**2).sum(axis=0)),
                    }
                ),
            )
        if action == protocol.ACTION_NEWTON:
            from fedrad.federation.exact import site_newton_stats

            std = protocol.Standardisation.from_config(config)
            beta = msg.content["arrays"].to_numpy_ndarrays()[0]
            grad, hess, loglik = site_newton_stats(
                study, std.apply(data.X_train), data.y_train, data.time_train, beta
            )
            return _reply(
                msg,
                site,
                newton=ArrayRecord({"grad": _arr(grad), "hess": _arr(hess)}),
                stats=MetricRecord({"loglik": float(loglik), "num-examples": data.n_train}),
            )
        if action == protocol.ACTION_CALIBRATION:
            return _reply(
                msg,
                site,
                calibration=ArrayRecord({"stats": _arr(_calibration_stats(msg, study, data))}),
            )
        raise ValueError(f"unknown query action {action!r}")

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        _single_thread()
        site = resolve_site(context)
        config = msg.content["config"]
        study = protocol.study_from_json(str(config["study"]))
        std = protocol.Standardisation.from_config(config)
        data = _load(site, study, std)
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        model = build_model(study.model_settings(), len(std.features))
        set_parameters(model, arrays)
        mu = float(config.get("proximal-mu", 0.0))
        server_round = int(config.get("server-round", 0))
        common = dict(proximal_mu=mu, global_params=arrays if mu > 0 else None)
        X = std.apply(data.X_train)
        target = _target(study, data.y_train, data.time_train)
        privacy: dict[str, float] = {}
        if study.privacy.mode == "sample":
            from fedrad.federation.site_privacy import train_private_round

            result = train_private_round(
                study,
                site,
                model,
                X,
                target,
                run_id=int(msg.metadata.run_id),
                server_round=server_round,
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
                seed=_site_seed(study, site.site_id, server_round),
                **common,
            )
        n_reported = int(result["n"])
        if study.privacy.mode == "client":
            n_reported = min(n_reported, study.privacy.max_examples)
        return _reply(
            msg,
            site,
            arrays=ArrayRecord(get_parameters(model)),
            metrics=MetricRecord(
                {"num-examples": n_reported, "train-loss": float(result["loss"]), **privacy}
            ),
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        _single_thread()
        site = resolve_site(context)
        config = msg.content["config"]
        study = protocol.study_from_json(str(config["study"]))
        std = protocol.Standardisation.from_config(config)
        data = _load(site, study, std)
        model = _message_model(msg, study, std)
        data.X_test = std.apply(data.X_test)
        return _reply(msg, site, metrics=MetricRecord(evaluation_metrics(study, model, data)))

    return app


def _message_model(msg: Message, study: StudyConfig, std: protocol.Standardisation):
    """The study's model holding the parameters the server sent with ``msg``."""
    model = build_model(study.model_settings(), len(std.features))
    set_parameters(model, msg.content["arrays"].to_numpy_ndarrays())
    return model


def _calibration_stats(msg: Message, study: StudyConfig, data: SiteData) -> np.ndarray:
    """The nine calibration sums of the message's model on the site's held-out cases."""
    from fedrad.learn.federated_calibration import N_STATISTICS, calibration_statistics

    _single_thread()
    config = msg.content["config"]
    if data.X_test.shape[0] == 0:
        return np.zeros(N_STATISTICS)
    std = protocol.Standardisation.from_config(config)
    p = predict_proba(_message_model(msg, study, std), std.apply(data.X_test))
    coefficients = np.asarray(config[protocol.CALIBRATION_COEFFICIENTS], dtype=np.float64)
    return calibration_statistics(data.y_test, p, coefficients)


def _single_thread() -> None:
    """One torch thread: tiny models gain nothing from more, and a fixed reduction order makes
    the same inputs give the same bits whichever worker process serves the site."""
    import torch

    torch.set_num_threads(1)


def _arr(values: np.ndarray):
    from flwr.app import Array

    return Array(np.ascontiguousarray(values, dtype=np.float64))


def simulation_resolver(sites: Sequence[SiteConfig]) -> SiteResolver:
    """Virtual node ``partition-id`` i serves ``sites[i]``."""
    sites = list(sites)

    def resolve(context: Context) -> SiteConfig:
        return sites[int(context.node_config["partition-id"])]

    return resolve


#: The ClientApp of a deployed SuperNode (``fedrad site join``).
app = build_client_app(node_site, node_sealing)
