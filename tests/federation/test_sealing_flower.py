"""Sealed replies with real Flower objects: a real ClientApp with the sealing mod seals a train
reply built as ``client_app.py`` builds it; the server side opens it for the strategy."""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.serde import recorddict_to_proto

from fedrad.federation.config import StudyConfig
from fedrad.federation.sealing import (
    SEAL_REJECTED_CODE,
    SEALED_RECORD,
    SEALING_PUBLIC_KEY,
    SiteSealing,
    decode_records,
    encode_records,
    load_site_sealing,
    make_sealing_mod,
    open_replies,
    seal_reply,
    simulation_sealing_resolver,
)
from fedrad.learn.models import build_model, get_parameters
from fedrad.secure.identity import (
    IDENTITY_KEY,
    SERVER_SEALING_PUB,
    KeyFileError,
    SiteRegistry,
    create_identity,
    generate_identity,
    generate_sealing_key,
    public_bytes,
    write_public_key,
)
from fedrad.secure.sealing import MalformedUpdateError, ReplayGuard, SealError

RUN = 2**64 - 3
#: An array whose bytes would be easy to spot in anything that carries them in the clear.
DISTINCT = (np.arange(97, dtype=np.float64) * math.pi + 12345.678).reshape(1, 97)
SITES = ("hospital-a", "hospital-b")


@pytest.fixture(scope="module")
def server_key():
    return generate_sealing_key()


@pytest.fixture(scope="module")
def identities():
    return {s: generate_identity() for s in SITES}


@pytest.fixture(scope="module")
def registry(identities) -> SiteRegistry:
    return SiteRegistry({s: k.public_key() for s, k in identities.items()})


def _model_params() -> list[np.ndarray]:
    study = StudyConfig()
    return get_parameters(build_model(study.model_settings(), 5))


def _train_reply_content(site_id: str, params: list[np.ndarray]) -> RecordDict:
    """A train reply's content exactly as ``client_app.py``'s ``_reply`` lays it out."""
    return RecordDict(
        {
            "arrays": ArrayRecord(params),
            "metrics": MetricRecord({"num-examples": 42, "train-loss": 0.6931471805599453}),
            "site": ConfigRecord({"site_id": site_id}),
        }
    )


def _instruction(
    node: int, *, server_round: int = 4, key=None, message_type=MessageType.TRAIN, **records
) -> Message:
    """An instruction as a SuperNode receives it from the SuperLink."""
    config = ConfigRecord({"server-round": server_round, "study": "{}"})
    if key is not None:
        config[SEALING_PUBLIC_KEY] = public_bytes(key)
    content = RecordDict({"arrays": ArrayRecord(_model_params()), "config": config, **records})
    metadata = Metadata(
        run_id=RUN,
        message_id=f"ins-{node}-{server_round}-{time.monotonic_ns()}",
        src_node_id=1,
        dst_node_id=node,
        reply_to_message_id="",
        group_id=str(server_round),
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(metadata=metadata, content=content)


def _client_app(
    sealing: dict[int, SiteSealing], site_of: dict[int, str], calls: list[int] | None = None
) -> ClientApp:
    """A real ClientApp: the sealing mod around a train handler shaped like fedrad's."""

    def resolve(context: Context) -> SiteSealing:
        return sealing[context.node_id]

    app = ClientApp(mods=[make_sealing_mod(resolve)])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if calls is not None:
            calls.append(context.node_id)
        params = [p.copy() for p in msg.content["arrays"].to_numpy_ndarrays()]
        params[0] = params[0] + 1.0
        params.append(DISTINCT.copy())
        return Message(_train_reply_content(site_of[context.node_id], params), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(Error(2, "no test cases"), reply_to=msg)

    return app


def _context(node: int) -> Context:
    return Context(run_id=RUN, node_id=node, node_config={}, state=RecordDict(), run_config={})


@pytest.fixture()
def setup(server_key, identities):
    sealing = {
        7: SiteSealing("hospital-a", identities["hospital-a"], server_key.public_key()),
        8: SiteSealing("hospital-b", identities["hospital-b"], server_key.public_key()),
    }
    app = _client_app(sealing, {7: "hospital-a", 8: "hospital-b"})
    return app, sealing


def _open(replies, server_key, registry, *, server_round=4, guard=None, **kw):
    return open_replies(
        replies,
        server_private=server_key,
        registry=registry,
        run_id=RUN,
        server_round=server_round,
        guard=ReplayGuard() if guard is None else guard,
        **kw,
    )


def _wire_bytes(content: RecordDict) -> bytes:
    """What Flower puts on the wire for a record set (its protobuf serialisation)."""
    return recorddict_to_proto(content).SerializeToString()


# --- payload encoding --------------------------------------------------------------------


def _rich_content() -> RecordDict:
    return RecordDict(
        {
            "arrays": ArrayRecord(
                {
                    "w": Array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)),
                    "b": Array(np.array(3.5)),
                    "i": Array(np.arange(5, dtype=np.int64)),
                    "empty": Array(np.zeros((0, 2))),
                }
            ),
            "metrics": MetricRecord(
                {
                    "n": 10,
                    "loss": 0.1 + 0.2,
                    "nan": float("nan"),
                    "inf": -math.inf,
                    "hist": [0.5, 1e-300, 2.0],
                    "counts": [1, 2, 3],
                    "none": [],
                }
            ),
            "config": ConfigRecord(
                {
                    "s": "héllo",
                    "blob": b"\x00\xff",
                    "flag": True,
                    "names": ["a", ""],
                    "blobs": [b"x", b""],
                    "flags": [False, True],
                    "big": 2**64 - 1,
                }
            ),
        }
    )


def _assert_same(a: RecordDict, b: RecordDict) -> None:
    assert list(a.keys()) == list(b.keys())
    for name in a:
        ra, rb = a[name], b[name]
        assert type(ra) is type(rb)
        assert list(ra.keys()) == list(rb.keys())
        for key in ra:
            va, vb = ra[key], rb[key]
            if isinstance(va, Array):
                assert (va.dtype, tuple(va.shape), va.stype, va.data) == (
                    vb.dtype,
                    tuple(vb.shape),
                    vb.stype,
                    vb.data,
                )
            elif isinstance(va, float) and math.isnan(va):
                assert math.isnan(vb)
            else:
                assert va == vb and type(va) is type(vb), key


def test_encoding_round_trips_every_record_type_exactly() -> None:
    content = _rich_content()
    decoded = decode_records(encode_records(content))
    _assert_same(content, decoded)
    assert decoded["metrics"]["loss"] == 0.1 + 0.2  # bit for bit
    np.testing.assert_array_equal(
        decoded["arrays"]["w"].numpy(), content["arrays"]["w"].numpy(), strict=True
    )


def test_encoding_is_deterministic_and_keeps_order() -> None:
    assert encode_records(_rich_content()) == encode_records(_rich_content())
    a = RecordDict({"x": MetricRecord({"p": 1, "q": 2})})
    b = RecordDict({"x": MetricRecord({"q": 2, "p": 1})})
    assert encode_records(a) != encode_records(b)
    assert list(decode_records(encode_records(b))["x"].keys()) == ["q", "p"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:10],
        lambda d: b"X" + d[1:],
        lambda d: d + b"\x00",
        lambda d: d[:-1],
        lambda d: d.replace(b'"float64"', b'"float32"', 1),
        lambda d: d.replace(b'"metrics"', b'"mystery"', 1),
        lambda d: d.replace(b'"int"', b'"str"', 1),
    ],
)
def test_malformed_payloads_are_refused(mutate) -> None:
    content = RecordDict(
        {
            "update": ArrayRecord([np.ones(3)]),
            "stats": MetricRecord({"num-examples": 3}),
        }
    )
    data = mutate(encode_records(content))
    with pytest.raises(MalformedUpdateError, match=r"hospital-q.*not a record set"):
        decode_records(data, site_id="hospital-q")


# --- a sealed train reply, end to end through a real ClientApp -----------------------------


def test_sealed_train_reply_round_trip_exact(setup, server_key, registry) -> None:
    app, _ = setup
    instruction = _instruction(7, key=server_key.public_key())
    reply = app(instruction, _context(7))
    assert list(reply.content.keys()) == [SEALED_RECORD]
    sealed = reply.content[SEALED_RECORD]
    assert isinstance(sealed, ConfigRecord)
    assert sealed["site-id"] == "hospital-a" and sealed["server-round"] == 4
    assert sealed["run-id"] == RUN
    assert reply.metadata.reply_to_message_id == instruction.metadata.message_id

    expected = [p.copy() for p in instruction.content["arrays"].to_numpy_ndarrays()]
    expected[0] = expected[0] + 1.0
    expected.append(DISTINCT)
    opened, reasons = _open([reply], server_key, registry)
    assert reasons == []
    (plain,) = opened
    assert not plain.has_error()
    assert plain.metadata.src_node_id == reply.metadata.src_node_id
    arrays = plain.content["arrays"].to_numpy_ndarrays()
    assert len(arrays) == len(expected)
    for got, want in zip(arrays, expected, strict=True):
        np.testing.assert_array_equal(got, want, strict=True)
        assert got.tobytes() == want.tobytes()
    assert dict(plain.content["metrics"]) == {"num-examples": 42, "train-loss": 0.6931471805599453}
    assert plain.content["site"]["site_id"] == "hospital-a"


def test_sealed_content_carries_no_plaintext(setup, server_key) -> None:
    app, _ = setup
    reply = app(_instruction(7, key=server_key.public_key()), _context(7))
    needles = [
        DISTINCT.tobytes(),
        DISTINCT.tobytes()[100:164],
        Array(DISTINCT).data[-200:],
        (0.6931471805599453).hex().encode(),
    ]
    plain_wire = _wire_bytes(_train_reply_content("hospital-a", [DISTINCT]))
    assert all(n in plain_wire for n in needles[:3])  # the search finds arrays in the clear
    wire = _wire_bytes(reply.content)
    for needle in needles:
        assert needle not in wire
    assert b"train-loss" not in wire and b"num-examples" not in wire


def test_unoffered_instruction_passes_through_unsealed(setup) -> None:
    app, _ = setup
    reply = app(_instruction(7), _context(7))
    assert SEALED_RECORD not in reply.content and "arrays" in reply.content


def test_error_reply_is_not_sealed(setup, server_key) -> None:
    app, _ = setup
    instruction = _instruction(7, key=server_key.public_key(), message_type=MessageType.EVALUATE)
    reply = app(instruction, _context(7))
    assert reply.has_error() and reply.error.reason == "no test cases"


def test_site_refuses_a_key_other_than_the_pinned_one(server_key, identities) -> None:
    calls: list[int] = []
    pinned = {7: SiteSealing("hospital-a", identities["hospital-a"], server_key.public_key())}
    app = _client_app(pinned, {7: "hospital-a"}, calls)
    relay_key = generate_sealing_key()
    with pytest.raises(SealError, match=r"hospital-a.*pinned.*refusing to seal"):
        app(_instruction(7, key=relay_key.public_key()), _context(7))
    assert calls == []  # refused before training: no work, no privacy spent
    app(_instruction(7, key=server_key.public_key()), _context(7))
    assert calls == [7]


def test_site_that_requires_sealing_refuses_to_send_in_the_clear(server_key, identities) -> None:
    strict = {7: SiteSealing("hospital-a", identities["hospital-a"], server_key.public_key(), True)}
    calls: list[int] = []
    app = _client_app(strict, {7: "hospital-a"}, calls)
    with pytest.raises(SealError, match=r"pinned the server.s sealing key"):
        app(_instruction(7), _context(7))  # a relay stripped the offer
    assert calls == []
    secagg = _instruction(7, secaggplus_configs=ConfigRecord({"stage": "setup"}))
    assert "arrays" in app(secagg, _context(7)).content  # SecAgg+ protects it instead


def test_trust_on_offer_without_a_pinned_key(server_key, identities, registry) -> None:
    loose = {8: SiteSealing("hospital-b", identities["hospital-b"])}
    app = _client_app(loose, {8: "hospital-b"})
    reply = app(_instruction(8, key=server_key.public_key()), _context(8))
    opened, reasons = _open([reply], server_key, registry)
    assert reasons == [] and opened[0].content["site"]["site_id"] == "hospital-b"


# --- what the server refuses ---------------------------------------------------------------


def test_server_refuses_stripped_replayed_and_duplicated_replies(
    setup, server_key, registry
) -> None:
    app, _ = setup
    a = app(_instruction(7, key=server_key.public_key()), _context(7))
    b = app(_instruction(8, key=server_key.public_key()), _context(8))
    in_clear = app(_instruction(7), _context(7))  # what a relay that strips the offer gets
    guard = ReplayGuard()
    opened, reasons = _open([a, b, in_clear, a], server_key, registry, guard=guard)
    assert [m.has_error() for m in opened] == [False, False, True, True]
    assert "not sealed" in reasons[0] and "node 7" in reasons[0]
    assert "hospital-a" in reasons[1] and "accepted before" in reasons[1]
    for refused in opened[2:]:
        assert refused.error.code == SEAL_REJECTED_CODE
        assert refused.metadata.src_node_id == 7
    # the same sealed replies presented again in round 5: a replay from round 4
    opened, reasons = _open([a, b], server_key, registry, guard=guard, server_round=5)
    assert all(m.has_error() for m in opened)
    assert all("made for round 4, but round 5" in r for r in reasons)


def test_second_distinct_update_from_one_site_is_a_duplicate(setup, server_key, registry) -> None:
    app, _ = setup
    first = app(_instruction(7, key=server_key.public_key()), _context(7))
    second = app(_instruction(7, key=server_key.public_key()), _context(7))
    opened, reasons = _open([first, second], server_key, registry)
    assert not opened[0].has_error() and opened[1].has_error()
    assert "a second update in round 4" in reasons[0]


def test_server_refuses_unknown_site_and_extra_records(server_key, identities, registry) -> None:
    stranger = {9: SiteSealing("hospital-z", generate_identity(), server_key.public_key())}
    reply = _client_app(stranger, {9: "hospital-z"})(
        _instruction(9, key=server_key.public_key()), _context(9)
    )
    opened, reasons = _open([reply], server_key, registry)
    assert opened[0].has_error() and "'hospital-z' is not registered" in reasons[0]

    app = _client_app(
        {7: SiteSealing("hospital-a", identities["hospital-a"], server_key.public_key())},
        {7: "hospital-a"},
    )
    reply = app(_instruction(7, key=server_key.public_key()), _context(7))
    reply.content["metrics"] = MetricRecord({"num-examples": 10**6})  # the relay adds a record
    opened, reasons = _open([reply], server_key, registry)
    assert opened[0].has_error() and "outside its signature" in reasons[0]


def test_server_refuses_a_flipped_ciphertext_byte(setup, server_key, registry) -> None:
    app, _ = setup
    reply = app(_instruction(7, key=server_key.public_key()), _context(7))
    record = reply.content[SEALED_RECORD]
    ct = record["ciphertext"]
    record["ciphertext"] = ct[:50] + bytes([ct[50] ^ 0x80]) + ct[51:]
    opened, reasons = _open([reply], server_key, registry)
    assert opened[0].has_error() and "signature does not verify" in reasons[0]


def test_inner_site_record_must_match_the_signer(server_key, identities, registry) -> None:
    content = _train_reply_content("hospital-b", [np.ones(2)])
    sealed = seal_reply(
        content,
        site_id="hospital-a",
        identity=identities["hospital-a"],
        server_public=server_key.public_key(),
        run_id=RUN,
        server_round=4,
    )
    reply = Message(sealed, reply_to=_instruction(7))
    opened, reasons = _open([reply], server_key, registry)
    assert opened[0].has_error() and "says it comes from site 'hospital-b'" in reasons[0]


# --- keys for the ClientApp ----------------------------------------------------------------


def test_site_sealing_pickles_for_simulation_workers(server_key, identities, registry) -> None:
    sealing = SiteSealing("hospital-a", identities["hospital-a"], server_key.public_key(), True)
    again = pickle.loads(pickle.dumps(sealing))
    assert public_bytes(again.identity) == public_bytes(sealing.identity)
    assert public_bytes(again.server_public) == public_bytes(server_key) and again.required
    resolve = simulation_sealing_resolver([sealing])
    mod = cloudpickle.loads(cloudpickle.dumps(make_sealing_mod(resolve)))
    context = Context(
        run_id=RUN, node_id=3, node_config={"partition-id": 0}, state=RecordDict(), run_config={}
    )
    instruction = _instruction(3, key=server_key.public_key())
    reply = mod(
        instruction,
        context,
        lambda msg, ctx: Message(_train_reply_content("hospital-a", [DISTINCT]), reply_to=msg),
    )
    opened, reasons = _open([reply], server_key, registry)
    assert reasons == []
    np.testing.assert_array_equal(opened[0].content["arrays"].to_numpy_ndarrays()[0], DISTINCT)


def test_load_site_sealing_from_the_keys_folder(tmp_path: Path, server_key) -> None:
    keys = tmp_path / "keys"
    identity = create_identity(keys)
    loose = load_site_sealing("hospital-a", keys)
    assert loose.server_public is None and not loose.required
    assert public_bytes(loose.identity) == public_bytes(identity)
    write_public_key(server_key, keys / SERVER_SEALING_PUB)
    pinned = load_site_sealing("hospital-a", keys)
    assert pinned.required and public_bytes(pinned.server_public) == public_bytes(server_key)
    assert not load_site_sealing("hospital-a", keys, required=False).required
    (keys / IDENTITY_KEY).unlink()
    with pytest.raises(KeyFileError, match=r"identity\.key"):
        load_site_sealing("hospital-a", keys)


# --- a real Flower simulation: SealingGrid around the grid, the mod in every ClientApp -------


@pytest.mark.slow
def test_sealing_grid_in_a_flower_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two registered sites and an intruder; FedAvg aggregates exactly the registered two."""
    import logging

    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedrad.federation.sealing import SealingGrid

    server_key = generate_sealing_key()
    names = ["hospital-a", "hospital-b", "intruder"]
    keys = [generate_identity() for _ in names]
    registry = SiteRegistry({n: k.public_key() for n, k in zip(names[:2], keys[:2], strict=True)})
    sealings = [
        SiteSealing(n, k, server_key.public_key(), True) for n, k in zip(names, keys, strict=True)
    ]
    values = [1.0, 2.0, 100.0]

    client = ClientApp(mods=[make_sealing_mod(simulation_sealing_resolver(sealings))])

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        i = int(context.node_config["partition-id"])
        content = RecordDict(
            {
                "arrays": ArrayRecord([np.full(3, values[i]), DISTINCT.copy()]),
                "metrics": MetricRecord({"num-examples": 1}),
                "site": ConfigRecord({"site_id": names[i]}),
            }
        )
        return Message(content, reply_to=msg)

    out: dict = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        sealed = SealingGrid(grid, server_private=server_key, registry=registry)
        strategy = FedAvg(
            fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=3, min_train_nodes=3
        )
        result = strategy.start(
            grid=sealed,
            initial_arrays=ArrayRecord([np.zeros(3), np.zeros_like(DISTINCT)]),
            num_rounds=2,
            timeout=120,
        )
        out["arrays"] = result.arrays.to_numpy_ndarrays()
        out["rejections"] = list(sealed.rejections)
        out["accepted"] = sealed.guard.accepted

    try:
        run_simulation(
            server_app=server,
            client_app=client,
            num_supernodes=3,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False},
            },
        )
    finally:
        flwr_logger.setLevel(level)
    assert "arrays" in out, "the ServerApp did not finish"
    np.testing.assert_array_equal(out["arrays"][0], np.full(3, 1.5))  # mean of a and b only
    np.testing.assert_array_equal(out["arrays"][1], DISTINCT)
    assert out["accepted"] == 4  # two sites x two rounds
    assert [r for r, _ in out["rejections"]] == [1, 2]
    assert all("'intruder' is not registered" in reason for _, reason in out["rejections"])
