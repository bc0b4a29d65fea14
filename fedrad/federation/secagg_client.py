"""The site's side of secure aggregation: Flower's SecAgg+ around fedrad's train handler.

Flower 1.41 runs SecAgg+ only on legacy fit messages: the server's ``SecAggPlusWorkflow`` sends
TRAIN messages that carry a ``secaggplus_configs`` ConfigRecord (the protocol stage) and, in the
stage that collects the masked vectors, a legacy FitIns (``fitins.parameters``,
``fitins.config``). :func:`secure_aggregation_mod` is one ClientApp mod that

1. passes every other message (queries, evaluation, plain TRAIN) straight through;
2. hands SecAgg+ messages to Flower's ``secaggplus_mod``, which answers the key-agreement and
   unmask stages itself and, in the masking stage, calls the adapter below;
3. the adapter turns the FitIns into fedrad's train message (``arrays`` + ``config``), calls the
   rest of the ClientApp, checks that the update fits the quantisation range
   (:func:`check_update_range`) and turns the reply into a legacy FitRes (parameters,
   ``num_examples`` and every scalar metric) that ``secaggplus_mod`` quantises and masks.

Only masked integer vectors leave the site for the model update; the FitRes metrics
(``num_examples``, ``train-loss``, ...) travel in the clear, as in any fedrad round.

An update outside ``[-clipping_range, clipping_range]`` is refused with
:class:`UpdateOutOfRangeError`, never clipped: the site's reply is an error, the server records it
as that site dropping out of the round and unmasks the others (if enough remain).
"""

from __future__ import annotations

import contextvars
import copy
import hashlib
from collections.abc import Sequence

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import (
    Code,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
)
from flwr.compat.common import recorddict_compat as compat

from fedrad.errors import FedradError

#: Legacy record names of Flower's FitIns / FitRes.
FITINS_PARAMETERS = "fitins.parameters"
FITINS_CONFIG = "fitins.config"


class SecureAggregationError(FedradError):
    """A site cannot take part in a secure-aggregation round as asked."""


class UpdateOutOfRangeError(SecureAggregationError):
    """A site's update does not fit SecAgg+'s quantisation range (it is refused, not clipped)."""


#: True while the site's own SecAgg+ mod runs its train handler: only then is the update masked.
#: Set by this process alone, so no message can claim it.
_INSIDE_SECAGG: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "fedrad_inside_secagg", default=False
)


def inside_secure_aggregation() -> bool:
    """Whether the train handler now running was called by the site's SecAgg+ mod (its reply
    leaves masked), as opposed to a plain TRAIN message (its reply leaves whole)."""
    return _INSIDE_SECAGG.get()


def is_secure_aggregation_message(msg: Message) -> bool:
    """True for a TRAIN message of Flower's SecAgg+ protocol (it carries the stage record)."""
    return (
        msg.metadata.message_type == MessageType.TRAIN
        and msg.has_content()
        and RECORD_KEY_CONFIGS in msg.content.config_records
    )


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod: SecAgg+ for the server's SecAgg+ rounds, a pass-through for all else.

    Place it after (inside) any mod that must see the bytes that leave the site, e.g. an
    egress log: ``ClientApp(mods=[egress_log_mod, secure_aggregation_mod])``. Mods listed after
    it see fedrad's usual train message and reply.
    """
    if not is_secure_aggregation_message(msg):
        return call_next(msg, context)

    def fedrad_train(inner: Message, ctx: Context) -> Message:
        token = _INSIDE_SECAGG.set(True)
        try:
            return _train_through_fedrad(inner, ctx, call_next)
        finally:
            _INSIDE_SECAGG.reset(token)

    return secaggplus_mod(msg, context, fedrad_train)


def secure_aggregation_mods() -> list[Mod]:
    """The mods to append to a site's ClientApp for secure aggregation (order as listed)."""
    return [secure_aggregation_mod]


def _train_through_fedrad(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Legacy FitIns -> fedrad train message -> app -> range check -> legacy FitRes."""
    content = msg.content
    if FITINS_PARAMETERS not in content.array_records or FITINS_CONFIG not in content:
        raise SecureAggregationError(
            "the server's secure-aggregation message carries no FitIns (global model and "
            "config); the server and this site run incompatible fedrad versions"
        )
    arrays = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(content.array_records[FITINS_PARAMETERS], True)
    )
    inner = Message(
        content=RecordDict(
            {"arrays": ArrayRecord(arrays), "config": content.config_records[FITINS_CONFIG]}
        ),
        metadata=copy.deepcopy(msg.metadata),
    )
    reply = call_next(inner, context)
    if reply.has_error():
        raise SecureAggregationError(f"local training failed: {reply.error.reason}")
    out = reply.content
    site = (
        str(out["site"]["site_id"])
        if "site" in out.config_records
        else f"node {msg.metadata.dst_node_id}"
    )
    update = out["arrays"].to_numpy_ndarrays()
    metrics = out["metrics"]
    num_examples = int(metrics["num-examples"])
    clipping_range, max_weight = _protocol_ranges(context)
    check_update_range(
        update, num_examples, clipping_range=clipping_range, max_weight=max_weight, site=site
    )
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters(update),
        num_examples=num_examples,
        metrics={
            **{
                key: value
                for key, value in metrics.items()
                if isinstance(value, int | float) and key != "num-examples"
            },
            "site-id": site,
        },
    )
    legacy = compat.fitres_to_recorddict(fitres, keep_input=False)
    if "site" in out.config_records:
        legacy["site"] = out["site"]
    _seed_stochastic_rounding(site, content.config_records[FITINS_CONFIG])
    return Message(content=legacy, reply_to=msg)


def _seed_stochastic_rounding(site: str, config) -> None:
    """Seed numpy's global generator, which Flower's SecAgg+ quantisation draws its stochastic
    rounding from right after this adapter returns, from (study, site, round): the same study
    then gives the same aggregate bit for bit. The rounding is not a privacy mechanism (the
    masks, drawn from Flower's own secret seeds, are), so a public seed costs nothing."""
    text = f"{config.get('study', '')}:{site}:{config.get('server-round', 0)}"
    digest = hashlib.sha256(text.encode()).digest()
    np.random.seed(int.from_bytes(digest[:4], "big"))


def _protocol_ranges(context: Context) -> tuple[float, float]:
    """``clipping_range`` and ``max_weight`` of this round, as SecAgg+ stored them at setup."""
    state = context.state.config_records.get(RECORD_KEY_STATE)
    if state is None or "clipping_range" not in state or "max_weight" not in state:
        raise SecureAggregationError(
            "the masking stage of secure aggregation came before its setup stage; "
            "the round cannot proceed at this site"
        )
    return float(state["clipping_range"]), float(state["max_weight"])


def check_update_range(
    arrays: Sequence[np.ndarray],
    num_examples: int,
    *,
    clipping_range: float,
    max_weight: float,
    site: str,
) -> None:
    """Refuse an update that SecAgg+ could only send clipped.

    SecAgg+ sends ``r * x`` quantised on ``[-c, c]`` (``c = clipping_range``) with weight
    ``r = round(n / W * Q) / Q`` (``W = max_weight``). With ``n <= W`` (so ``r <= 1``) and every
    ``|x| <= c`` nothing is clipped; otherwise this raises :class:`UpdateOutOfRangeError` naming
    the site, the value and the setting to change. Non-finite values are refused too.
    """
    if num_examples < 0 or num_examples > max_weight:
        raise UpdateOutOfRangeError(
            f"site {site}: secure aggregation refuses this update: it weighs {num_examples} "
            f"training examples but the round's max_weight is {max_weight:g}, so its weight "
            "could not be encoded exactly; the server must set max_weight to at least the "
            "largest site's number of training cases"
        )
    largest = 0.0
    where = ""
    for index, array in enumerate(arrays):
        values = np.asarray(array, dtype=np.float64)
        if values.size == 0:
            continue
        if not np.all(np.isfinite(values)):
            raise UpdateOutOfRangeError(
                f"site {site}: secure aggregation refuses this update: array {index} holds "
                "NaN or infinite values (local training diverged); lower [training] "
                "learning_rate in study.toml"
            )
        flat = int(np.argmax(np.abs(values)))
        value = float(values.reshape(-1)[flat])
        if abs(value) > largest:
            largest = abs(value)
            entry = tuple(int(i) for i in np.unravel_index(flat, values.shape))
            where = f"array {index}, entry {entry}: {value:.6g}"
    if largest > clipping_range:
        raise UpdateOutOfRangeError(
            f"site {site}: secure aggregation refuses this update: a value lies outside the "
            f"quantisation range [-{clipping_range:g}, {clipping_range:g}] ({where}); fedrad "
            "never clips silently. Raise [secure_aggregation] clipping_range in study.toml "
            f"above {largest:.4g} (each doubling halves the aggregate's precision)"
        )
