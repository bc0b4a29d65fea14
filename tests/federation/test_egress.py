"""The egress mod on real Flower messages, the log reader and ``fedrad site audit``."""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedrad.commands import site_audit
from fedrad.errors import FedradError
from fedrad.federation.config import SiteConfig
from fedrad.federation.egress import (
    EgressLogError,
    append_entry,
    make_egress_mod,
    read_egress,
    summarise,
)


def _site(tmp_path: Path, *, egress: str = "out/egress.jsonl") -> SiteConfig:
    folder = tmp_path / "site-a"
    folder.mkdir(parents=True, exist_ok=True)
    toml = folder / "site.toml"
    toml.write_text(
        f'[site]\nid = "site-a"\nfeature_table = "features.csv"\negress_log = "{egress}"\n'
        '[privacy]\nledger = "ledger.json"\n'
    )
    return SiteConfig.from_file(toml)


def _message(message_type: str, config: dict, *, group: str = "", msg_id: str = "m1") -> Message:
    metadata = Metadata(
        run_id=17,
        message_id=msg_id,
        src_node_id=1,
        dst_node_id=42,
        reply_to_message_id="",
        group_id=group,
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(RecordDict({"config": ConfigRecord(config)}), metadata=metadata)


def _context() -> Context:
    return Context(run_id=17, node_id=42, node_config={}, state=RecordDict(), run_config={})


def _app(site: SiteConfig, *inner) -> ClientApp:
    """A ClientApp with the egress mod outermost and real handlers."""
    app = ClientApp(mods=[make_egress_mod(lambda context: site), *inner])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        params = [np.arange(6.0).reshape(3, 2), np.zeros(2, dtype=np.float32)]
        content = RecordDict(
            {
                "arrays": ArrayRecord(params),
                "metrics": MetricRecord({"num-examples": 12, "train-loss": 0.25}),
            }
        )
        return Message(content, reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        if msg.content["config"]["action"] == "boom":
            raise ValueError("cannot read case secret-case-7")
        content = RecordDict(
            {
                "report": ConfigRecord(
                    {"ok": True, "reason": "", "usable-features": ["stat_mean", "stat_var"]}
                ),
                "counts": MetricRecord({"n-cases": 30, "hist": [1.0, 2.0, 3.0]}),
                "blob": ConfigRecord({"key": b"\x00\x01\x02"}),
            }
        )
        return Message(content, reply_to=msg)

    return app


def test_train_reply_is_logged_with_shapes_size_and_hash(tmp_path: Path) -> None:
    site = _site(tmp_path)
    reply = _app(site)(_message("train", {"server-round": 3}), _context())
    entries = read_egress(site.egress_log_path)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.site, entry.run, entry.round, entry.message_type) == ("site-a", 17, 3, "train")
    assert entry.raw["reply_to"] == "m1" and entry.raw["node"] == 42
    assert entry.time.endswith("Z")
    assert entry.array_shapes() == [(3, 2), (2,)]
    dtypes = [item["dtype"] for _, item in entry.items("arrays")]
    assert dtypes == ["float64", "float32"]
    metrics = {item["key"]: item["value"] for _, item in entry.items("metrics")}
    assert metrics == {"num-examples": 12, "train-loss": 0.25}
    # size and hash are those of Flower's own serialisation of the content that left
    content = reply.content
    assert entry.sha256 == hashlib.sha256(content.deflate()).hexdigest() == content.object_id
    objects = get_all_nested_objects(content)
    assert entry.bytes == sum(len(obj.deflate()) for obj in objects.values())
    assert entry.bytes > 6 * 8 + 2 * 4
    assert entry.epsilon is None and entry.epsilon_source is None


def test_one_line_per_reply_and_values_text_lengths(tmp_path: Path) -> None:
    site = _site(tmp_path)
    app = _app(site)
    app(_message("train", {"server-round": 1}, msg_id="a"), _context())
    app(_message("query", {"action": "check"}, msg_id="b"), _context())
    app(_message("train", {"server-round": 2}, msg_id="c"), _context())
    lines = site.egress_log_path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["v"] == 1 for line in lines)
    entries = read_egress(site.egress_log_path)
    assert [e.kind for e in entries] == ["train", "query/check", "train"]
    assert [e.round for e in entries] == [1, None, 2]
    query = {item["key"]: item for _, item in entries[1].items()}
    assert query["usable-features"]["value"] == ["stat_mean", "stat_var"]  # text in full
    assert query["ok"]["value"] is True and query["n-cases"]["value"] == 30
    hist = query["hist"]  # numeric list: length and hash only
    assert hist["length"] == 3 and "value" not in hist
    assert hist["sha256"] == hashlib.sha256(json.dumps([1.0, 2.0, 3.0]).encode()).hexdigest()
    blob = query["key"]
    assert blob["length"] == 3 and blob["sha256"] == hashlib.sha256(b"\x00\x01\x02").hexdigest()
    summary = summarise(entries)
    assert summary.messages == 3 and summary.runs == (17,)
    assert summary.by_kind["train"][0] == 2 and summary.by_kind["query/check"][0] == 1
    assert summary.bytes == sum(e.bytes for e in entries)


def _seal(msg: Message, context: Context, call_next) -> Message:
    """An inner mod like SecAgg+: reads (and pops) its stage, replaces the arrays by bytes."""
    msg.content["config"].pop("stage")
    reply = call_next(msg, context)
    reply.content["arrays"].clear()
    reply.content["sealed"] = ConfigRecord({"masked": [b"\x07" * 40, b"\x08" * 40]})
    return reply


def test_the_mod_sees_what_inner_mods_send(tmp_path: Path) -> None:
    site = _site(tmp_path)
    reply = _app(site, _seal)(
        _message("train", {"stage": "collect_masked_vectors"}, group="4"), _context()
    )
    entry = read_egress(site.egress_log_path)[0]
    assert entry.round == 4  # from the group id, as SecAgg+ workflows set it
    assert entry.array_shapes() == []
    sealed = dict(entry.items("config"))["sealed"]
    assert sealed["length"] == 2 and sealed["bytes"] == 80
    assert entry.sha256 == reply.content.object_id


def test_a_handler_exception_is_logged_and_still_raised(tmp_path: Path) -> None:
    site = _site(tmp_path)
    with pytest.raises(ValueError, match="secret-case-7"):
        _app(site)(_message("query", {"action": "boom"}), _context())
    entry = read_egress(site.egress_log_path)[0]
    assert entry.kind == "query/boom"
    assert "secret-case-7" in entry.error["reason"]  # Flower sends this text: the log shows it
    assert "error:" in entry.what()


def test_unwritable_log_refuses_to_send(tmp_path: Path) -> None:
    (tmp_path / "site-a").mkdir()
    (tmp_path / "site-a" / "blocker").write_text("a file where the log folder should be")
    site = _site(tmp_path, egress="blocker/egress.jsonl")
    with pytest.raises(EgressLogError, match=r"blocker.*not sent"):
        _app(site)(_message("train", {"server-round": 1}), _context())


def test_epsilon_from_ledger_and_from_reply(tmp_path: Path) -> None:
    from fedrad.privacy.accountant import Mechanism
    from fedrad.privacy.ledger import PrivacyLedger

    site = _site(tmp_path)
    app = _app(site)
    app(_message("train", {"server-round": 1}), _context())  # no ledger yet: no epsilon
    ledger = PrivacyLedger(site.ledger_path, budget=None, delta=1e-5, accountant="rdp")
    spent = ledger.record(Mechanism(1.1, 0.1, 20), "study", run_id=17, round=1).epsilon_after
    app(_message("train", {"server-round": 1}), _context())

    def with_epsilon(msg: Message, context: Context, call_next) -> Message:
        reply = call_next(msg, context)
        reply.content["metrics"]["epsilon"] = 2.25
        return reply

    _app(site, with_epsilon)(_message("train", {"server-round": 2}), _context())
    site.ledger_path.write_text("{not json")  # a ledger being rewritten: no epsilon, no failure
    app(_message("train", {"server-round": 3}), _context())
    entries = read_egress(site.egress_log_path)
    assert spent > 0
    assert [(e.epsilon, e.epsilon_source) for e in entries] == [
        (None, None),
        (pytest.approx(spent), "ledger"),
        (2.25, "reply"),
        (None, None),
    ]
    assert summarise(entries).max_epsilon == pytest.approx(max(spent, 2.25))


def _append_many(path: str, worker: int) -> None:
    for i in range(40):
        append_entry(
            Path(path),
            {
                "time": "t",
                "message_type": "train",
                "bytes": i,
                "records": [],
                "run": worker,
                "pad": "x" * 20_000,
            },
        )


def test_several_processes_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "egress.jsonl"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    entries = read_egress(path)
    assert len(entries) == 160
    assert sorted(e.run for e in entries) == sorted(w for w in range(4) for _ in range(40))


def test_reader_names_missing_file_and_corrupt_line(tmp_path: Path) -> None:
    with pytest.raises(EgressLogError, match="no egress log"):
        read_egress(tmp_path / "absent.jsonl")
    path = tmp_path / "egress.jsonl"
    good = json.dumps({"time": "t", "message_type": "train", "bytes": 1, "records": []})
    path.write_text(good + "\n" + good[:20] + "\n")
    with pytest.raises(EgressLogError, match="line 2"):
        read_egress(path)
    path.write_text(good + "\n" + json.dumps({"time": "t"}) + "\n")
    with pytest.raises(EgressLogError, match=r"line 2 .*missing field\(s\) message_type"):
        read_egress(path)


def _audit(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fedrad site")
    site_audit.add_parser(parser.add_subparsers(dest="site_command"))
    args = parser.parse_args(argv)
    return args.run(args)


def test_audit_prints_the_log_readably(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    site = _site(tmp_path)
    app = _app(site)
    app(_message("query", {"action": "check"}), _context())
    app(_message("train", {"server-round": 1}), _context())
    toml = site.root / "site.toml"
    assert _audit(["audit", str(toml)]) == 0
    out = capsys.readouterr().out
    sha = read_egress(site.egress_log_path)[1].sha256
    assert "egress log of site site-a" in out
    assert "query/check" in out and "usable-features[2]" in out
    assert "0 [3x2] float64" in out and "num-examples=12" in out
    assert sha[:12] in out and "2 message(s) in run(s) 17" in out

    assert _audit(["audit", str(site.egress_log_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["messages"] == 2 and data["entries"][1]["sha256"] == sha
    assert data["summary"]["by_kind"]["train"]["messages"] == 1

    assert _audit(["audit", str(toml), "--json", "--run", "17"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["messages"] == 2
    with pytest.raises(FedradError, match="no message of run 99"):
        _audit(["audit", str(toml), "--run", "99"])


def test_audit_command_is_registered_with_fedrad_site(tmp_path: Path, capsys) -> None:
    from fedrad.cli import main

    site = _site(tmp_path)
    _app(site)(_message("train", {"server-round": 1}), _context())
    assert main(["site", "audit", str(site.egress_log_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["messages"] == 1
    site.egress_log_path.write_text("garbage\n")
    assert main(["site", "audit", str(site.root / "site.toml")]) == 2
    assert "line 1" in capsys.readouterr().err


def test_arrays_record_of_named_arrays(tmp_path: Path) -> None:
    """Arrays under their own names (as in the moments and Newton replies) keep their names."""
    site = _site(tmp_path)
    app = ClientApp(mods=[make_egress_mod(lambda context: site)])

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        moments = ArrayRecord({"n": Array(np.ones(5)), "sum": Array(np.zeros(5))})
        return Message(RecordDict({"moments": moments}), reply_to=msg)

    app(_message("query", {"action": "moments"}), _context())
    entry = read_egress(site.egress_log_path)[0]
    assert [(item["key"], item["shape"]) for _, item in entry.items("arrays")] == [
        ("n", [5]),
        ("sum", [5]),
    ]


def test_sealed_reply_logs_ciphertext_and_what_it_holds(tmp_path: Path) -> None:
    """With fedrad's real sealing mod inside: the log shows the envelope that left and the
    plaintext the server opens (same hash), so the hospital can audit a sealed update."""
    from fedrad.federation.egress import egress_plaintext_mod
    from fedrad.federation.sealing import (
        SEALING_PUBLIC_KEY,
        SiteSealing,
        make_sealing_mod,
        open_reply_content,
    )
    from fedrad.secure.identity import (
        SiteRegistry,
        generate_identity,
        generate_sealing_key,
        public_bytes,
    )
    from fedrad.secure.sealing import ReplayGuard

    site = _site(tmp_path)
    server_key, identity = generate_sealing_key(), generate_identity()
    sealing = SiteSealing("site-a", identity, server_key.public_key(), True)
    app = ClientApp(
        mods=[
            make_egress_mod(lambda context: site),
            make_sealing_mod(lambda context: sealing),
            egress_plaintext_mod,
        ]
    )

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        content = RecordDict(
            {
                "arrays": ArrayRecord([np.ones((1, 4)), np.zeros(1)]),
                "metrics": MetricRecord({"num-examples": 9, "epsilon": 0.75}),
            }
        )
        return Message(content, reply_to=msg)

    offer = {"server-round": 2, SEALING_PUBLIC_KEY: public_bytes(server_key.public_key())}
    reply = app(_message("train", offer), _context())
    entry = read_egress(site.egress_log_path)[0]
    assert entry.sealed and entry.sha256 == reply.content.object_id
    sent = {item["key"]: item for _, item in entry.items(as_sent=True)}
    assert sent["ciphertext"]["type"] == "bytes" and "value" not in sent["ciphertext"]
    assert entry.array_shapes(as_sent=True) == []
    assert entry.array_shapes() == [(1, 4), (1,)]  # what the ciphertext holds
    assert (entry.epsilon, entry.epsilon_source) == (0.75, "reply")
    assert entry.what().startswith("sealed") and "num-examples=9" in entry.what()
    site_id, opened = open_reply_content(
        reply.content,
        server_private=server_key,
        registry=SiteRegistry({"site-a": identity.public_key()}),
        run_id=17,
        server_round=2,
        guard=ReplayGuard(),
    )
    assert site_id == "site-a"
    assert entry.plaintext["sha256"] == opened.object_id  # the server opens what the log says
