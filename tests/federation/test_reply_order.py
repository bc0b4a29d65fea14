"""Replies are put in site order before the server sums them (arrival order varies per run)."""

from __future__ import annotations

import random
import time

import numpy as np
from flwr.app import ConfigRecord, Error, Message, MessageType, Metadata, RecordDict

from fedrad.federation.server_app import SiteGrid, replies_in_site_order


def _reply(node: int, site: str | None, value: float = 0.0, error: str | None = None) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id=f"reply-{node}-{time.monotonic_ns()}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=MessageType.QUERY,
    )
    if error is not None:
        return Message(metadata=metadata, error=Error(code=0, reason=error))
    records: dict = {"stats": ConfigRecord({"value": value})}
    if site is not None:
        records["site"] = ConfigRecord({"site_id": site})
    return Message(metadata=metadata, content=RecordDict(records))


class _ArrivalOrderGrid:
    """Stands in for Flower's Grid: returns the given replies in a shuffled arrival order."""

    def __init__(self, replies: list[Message], seed: int):
        self.replies = replies
        self.rng = random.Random(seed)

    def send_and_receive(self, messages, *args, **kwargs):
        out = list(self.replies)
        self.rng.shuffle(out)
        return out


def _sites(replies: list[Message]) -> list[tuple[str, int]]:
    return [
        (
            "" if r.has_error() else str(r.content["site"]["site_id"]),
            int(r.metadata.src_node_id),
        )
        for r in replies
    ]


def test_replies_are_ordered_by_site_id_whatever_the_arrival_order() -> None:
    replies = [_reply(n, s) for n, s in ((31, "zurich"), (7, "amsterdam"), (99, "lyon"))]
    for seed in range(5):
        shuffled = random.Random(seed).sample(replies, len(replies))
        ordered = replies_in_site_order(shuffled)
        assert _sites(ordered) == [("amsterdam", 7), ("lyon", 99), ("zurich", 31)]


def test_error_replies_take_their_site_name_from_the_node_map() -> None:
    replies = [_reply(5, "b-site"), _reply(9, None, error="boom"), _reply(2, "c-site")]
    ordered = replies_in_site_order(replies, {9: "a-site"})
    assert [int(r.metadata.src_node_id) for r in ordered] == [9, 5, 2]
    unnamed = replies_in_site_order(replies)  # no name for the failed node: it sorts first
    assert [int(r.metadata.src_node_id) for r in unnamed] == [9, 5, 2]


def test_float_sums_over_a_site_grid_are_bit_identical_across_arrival_orders() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(scale=1e6, size=12) * rng.uniform(1e-9, 1.0, size=12)
    replies = [_reply(100 + i, f"site{i:02d}", float(v)) for i, v in enumerate(values)]
    names = {100 + i: f"site{i:02d}" for i in range(len(values))}
    sums = set()
    for seed in range(8):
        grid = SiteGrid(_ArrivalOrderGrid(replies, seed), names, site_names=names)
        total = 0.0
        for reply in grid.send_and_receive([]):
            total += float(reply.content["stats"]["value"])
        sums.add(total)
    assert len(sums) == 1
    # arrival order alone would have changed the last bits of this sum
    shuffled_sums = {sum(random.Random(s).sample(list(values), len(values))) for s in range(8)}
    assert len(shuffled_sums) > 1
