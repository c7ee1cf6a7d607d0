"""Binlog positions, change sets and the reader's error messages (no server needed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from billing_migration.online import changes
from billing_migration.online.changes import BinlogPosition, BinlogPurgedError, ChangeSet


def test_positions_order_by_file_sequence_then_offset():
    a, b, c = BinlogPosition("binlog.000002", 900), BinlogPosition("binlog.000003", 4), BinlogPosition(
        "binlog.000003", 120)
    assert a < b < c and c > a and a <= a and c >= b
    assert sorted([c, a, b]) == [a, b, c]
    # the sequence outgrows its zero padding: compared as numbers, not text
    assert BinlogPosition("binlog.999999", 10) < BinlogPosition("binlog.1000000", 4)
    assert max([a, c, b]) == c and a == BinlogPosition("binlog.000002", 900)


def test_position_round_trips_through_json_dict_and_text():
    p = BinlogPosition("binlog.000042", 1234)
    assert BinlogPosition.from_dict(json.loads(json.dumps(p.as_dict()))) == p
    assert str(p) == "binlog.000042:1234" and BinlogPosition.parse(str(p)) == p
    assert p.seq == 42 and hash(p) == hash(BinlogPosition("binlog.000042", 1234))
    assert changes._pos(p.as_dict()) == changes._pos(str(p)) == p


@pytest.mark.parametrize("bad", [{"log_file": "binlog.000001"}, {"log_file": "binlog", "log_pos": 4},
                                 {"log_file": "binlog.000001", "log_pos": -1},
                                 {"log_file": "binlog.000001", "log_pos": "4"},
                                 {"log_file": "binlog.000001", "log_pos": 4, "x": 1}, ["binlog.000001", 4]])
def test_bad_positions_are_refused(bad):
    with pytest.raises(ValueError):
        BinlogPosition.from_dict(bad)


def test_change_set_round_trips_for_xcom():
    cs = ChangeSet(BinlogPosition("binlog.000001", 4), BinlogPosition("binlog.000002", 77), frozenset({3, 1}),
                   5, 0.5, rows_scanned=9, read_s=0.01, complete=False)
    d = json.loads(json.dumps(cs.as_dict()))
    assert d["customers"] == [1, 3] and ChangeSet.from_dict(d) == cs


def test_purged_error_names_the_position_the_oldest_kept_file_and_what_to_do():
    err = BinlogPurgedError(BinlogPosition("binlog.000003", 4711), "binlog.000009")
    msg = str(err)
    assert "binlog.000003:4711" in msg and "binlog.000009" in msg and "rerun the migration" in msg
    assert isinstance(err, RuntimeError) and err.oldest == "binlog.000009"


def _event(table, rows):
    return SimpleNamespace(table=table, rows=rows)


def test_tally_maps_customer_images_and_keeps_entity_rows_for_lookup(monkeypatch):
    monkeypatch.setattr(changes, "_FAST_DECODE", False)  # these events carry decoded rows only
    t = changes._Tally("PT")
    t.add(_event("customers", [
        {"values": {"customer_id": 1, "country": "PT"}},  # insert in PT
        {"before_values": {"customer_id": 2, "country": "PT"}, "after_values": {"customer_id": 2, "country": "PL"}},
        {"before_values": {"customer_id": 3, "country": "PL"}, "after_values": {"customer_id": 3, "country": "PL"}},
    ]))
    t.add(_event("invoices", [{"values": {"customer_id": 2}}, {"values": {"customer_id": 3}},
                              {"before_values": {"customer_id": 4}, "after_values": {"customer_id": 5}}]))
    assert t.mine == {1, 2} and t.elsewhere == {3} and t.customer_rows == 2 and t.rows == 6
    assert t.unknown() == {4, 5}  # only these need the SELECT
    assert t.child_rows == {(2,): 1, (3,): 1, (4, 5): 1}


def test_reader_ids_are_ours_and_differ_per_reader():
    ids = {changes._server_id() for _ in range(50)}
    assert len(ids) == 50 and all(2**31 <= i < 2**32 for i in ids)


def test_fast_decoder_steps_over_columns_by_their_binary_size():
    from pymysqlreplication.constants import FIELD_TYPE as T

    assert changes._decimal_size(14, 4) == 7  # the legacy DECIMAL(14,4): 5 + 2 bytes
    assert changes._decimal_size(18, 9) == 8 and changes._decimal_size(10, 0) == 5
    col = SimpleNamespace
    assert changes._column_layout(col(type=T.DATETIME2, fsp=3)) == ("fixed", 7)  # DATETIME(3)
    assert changes._column_layout(col(type=T.LONGLONG)) == ("fixed", 8)
    assert changes._column_layout(col(type=T.STRING, max_length=8)) == ("prefixed", 1)  # CHAR(2) utf8mb4
    assert changes._column_layout(col(type=T.VARCHAR, max_length=1020)) == ("prefixed", 2)  # VARCHAR(255)
    assert changes._column_layout(col(type=0xF0)) is None  # unknown: the library decodes that table
