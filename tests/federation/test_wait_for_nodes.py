"""Before round 1 the ServerApp waits for every registered site, not only the first min_sites."""

from __future__ import annotations

import logging
import time

from fedrad.federation.server_app import wait_for_nodes


class _JoiningGrid:
    """Stands in for Flower's Grid: node ``i`` has connected ``join_after[i]`` seconds in."""

    def __init__(self, join_after: list[float]):
        self.start = time.monotonic()
        self.join_after = join_after

    def get_node_ids(self) -> list[int]:
        elapsed = time.monotonic() - self.start
        return [100 + i for i, t in enumerate(self.join_after) if t <= elapsed]


def test_waits_for_the_registered_sites_beyond_min_sites() -> None:
    grid = _JoiningGrid([0.0, 0.0, 1.2])  # the third site joins a little later
    nodes = wait_for_nodes(grid, minimum=2, timeout=20.0, expected=3)
    assert nodes == [100, 101, 102]


def test_without_an_expected_count_it_starts_at_min_sites() -> None:
    grid = _JoiningGrid([0.0, 0.0, 30.0])
    assert wait_for_nodes(grid, minimum=2, timeout=20.0) == [100, 101]


def test_a_site_that_never_comes_is_waited_for_until_the_timeout(caplog) -> None:
    grid = _JoiningGrid([0.0, 0.0, 3600.0])
    with caplog.at_level(logging.WARNING, logger="fedrad.server"):
        started = time.monotonic()
        nodes = wait_for_nodes(grid, minimum=2, timeout=1.0, expected=3)
    assert nodes == [100, 101]
    assert time.monotonic() - started >= 1.0
    assert "2 of 3 expected site(s) connected" in caplog.text
