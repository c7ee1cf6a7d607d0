"""Typed records round-trip through XCom's JSON and label mapped task instances."""

from __future__ import annotations

import json

from billing_migration.records import Chunk, Lane


def _chunks(n: int) -> list[Chunk]:
    return [Chunk(i, 1000 * i + 1, 1000 * (i + 1), 1000) for i in range(n)]


def test_lane_round_trips_through_json():
    lanes = Lane.split(_chunks(10), 4)
    back = [Lane.from_dict(json.loads(json.dumps(lane.as_dict()))) for lane in lanes]
    assert back == lanes
    assert [len(lane.chunks) for lane in lanes] == [3, 3, 2, 2]
    assert [c.chunk for c in lanes[1].chunks] == [1, 5, 9]


def test_lanes_never_outnumber_chunks_and_exist_for_an_empty_country():
    assert len(Lane.split(_chunks(2), 8)) == 2
    (empty,) = Lane.split([], 4)
    assert empty.chunks == () and empty.label == "lane 1/1: no chunks"


def test_lane_labels_name_the_chunks_and_customer_range():
    lanes = Lane.split(_chunks(10), 4)
    assert lanes[0].label == "lane 1/4: chunks 0, 4, 8 (customers 1–9000)"
    (one,) = Lane.split(_chunks(12), 1)
    assert one.label == "lane 1/1: chunks 0, 1, …, 11 (12) (customers 1–12000)"
    open_end = Lane(1, 2, (Chunk(1, 5000, 2**63 - 1, 10),))
    assert open_end.label == "lane 2/2: chunk 1 (customers 5000 and up)"
