"""The generator against the real MariaDB: counts, every dirty kind really in the data, exact round-trips,
same seed -> same checksums, append mode and clear errors that change nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from billing_migration.devtools import generator
from billing_migration.stores import connections, schema

N, SEED, RATE = 2000, 11, 0.01
AS_OF = date(2026, 11, 1)


def _query(cfg, sql: str, args=None) -> list[tuple]:
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def _scalar(cfg, sql: str, args=None):
    return _query(cfg, sql, args)[0][0]


@pytest.fixture(scope="module")
def seeded(cfg, reset_routing, set_routing):
    reset_routing()
    # Seed must leave routing alone (checked below). A country the generator does not write: once the write
    # gate is installed (any earlier DAG run in the session), its guards refuse seeding a frozen country.
    set_routing("ZZ", "cassandra", 1)
    res = generator.seed(cfg, N, seed=SEED, dirty_rate=RATE, as_of=AS_OF)
    mem = generator.generate(N, seed=SEED, dirty_rate=RATE, as_of=AS_OF, cfg=cfg)
    yield res, mem, generator.legacy_checksums(cfg)
    reset_routing("test_generator_mysql leaves no country cut over")


def _labelled(cfg, kind: str, table: str) -> int:
    return _scalar(cfg, "SELECT COUNT(*) FROM seed_dirty_rows WHERE kind = %s AND table_name = %s", (kind, table))


def test_counts_match_seed_result(cfg, seeded):
    res, mem, _ = seeded
    print(json.dumps(res.as_dict()))
    for table in generator.BILLING_TABLES:
        assert _scalar(cfg, f"SELECT COUNT(*) FROM `{table}`") == res.counts[table], table
    assert res.counts["customers"] == N and res.counts["plans"] == 42
    assert res.counts["invoices"] > 10 * N and res.rows == sum(res.counts.values())
    by_kind = dict(_query(cfg, "SELECT kind, COUNT(*) FROM seed_dirty_rows GROUP BY kind"))
    assert by_kind == res.dirty
    assert set(by_kind) == set(generator.DIRTY_KINDS) and min(by_kind.values()) > 0
    assert res.counts["invoices"] == len(mem.tables["invoices"])
    # routing is never emptied by replace=True
    assert _query(cfg, "SELECT serving_store, writes_frozen FROM country_routing WHERE country = 'ZZ'") == \
        [("cassandra", 1)]


def test_invalid_kinds_are_really_in_the_data_and_only_where_labelled(cfg, seeded):
    # orphan payments: the invoice really is absent; no unlabelled orphans
    orphans = _scalar(cfg, "SELECT COUNT(*) FROM payments p LEFT JOIN invoices i USING (invoice_id) "
                           "WHERE i.invoice_id IS NULL")
    assert orphans == _labelled(cfg, "orphan_payment", "payments") > 0
    assert _scalar(cfg, "SELECT COUNT(*) FROM payments p JOIN seed_dirty_rows d ON d.kind = 'orphan_payment' "
                        "AND d.row_key = p.payment_id JOIN invoices i ON i.invoice_id = p.invoice_id") == 0
    for table, key in (("invoices", "invoice_id"), ("payments", "payment_id")):
        assert _scalar(cfg, f"SELECT COUNT(*) FROM {table} WHERE currency IS NULL") == \
            _labelled(cfg, "null_required", table)
        assert _scalar(cfg, f"SELECT COUNT(*) FROM {table} WHERE amount < 0") == \
            _labelled(cfg, "negative_amount", table)
        assert _scalar(cfg, f"SELECT COUNT(*) FROM {table} WHERE currency = 'XXQ'") == \
            _labelled(cfg, "unknown_currency", table)
        minor = "CASE currency " + " ".join(
            f"WHEN '{c}' THEN {m}" for c, m in schema.CURRENCY_MINOR_UNITS.items()) + " END"
        assert _scalar(cfg, f"SELECT COUNT(*) FROM {table} WHERE amount <> ROUND(amount, {minor})") == \
            _labelled(cfg, "over_precise_amount", table)
        ts = "created_at" if table == "invoices" else "processed_at"
        zero = _query(cfg, f"SELECT CAST(t.{ts} AS CHAR) FROM {table} t JOIN seed_dirty_rows d ON "
                           f"d.kind = 'zero_date' AND d.table_name = %s AND d.row_key = t.{key}", (table,))
        assert zero and {z for (z,) in zero} == {"0000-00-00 00:00:00.000"}
        assert _scalar(cfg, f"SELECT COUNT(*) FROM {table} WHERE CAST({ts} AS CHAR) LIKE '0000%%'") == len(zero)
    dups = _scalar(cfg, "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) n FROM invoices "
                        "GROUP BY subscription_id, period_start HAVING n > 1) x")
    assert dups == _labelled(cfg, "duplicate_natural_key", "invoices") > 0


def test_valid_tricky_strings_round_trip_exactly(cfg, seeded):
    _, mem, _ = seeded
    cust = mem.tables["customers"].set_index("customer_id")
    rows = _query(cfg, "SELECT c.customer_id, c.full_name, c.email, d.kind FROM customers c JOIN seed_dirty_rows d "
                       "ON d.row_key = c.customer_id AND d.table_name = 'customers'")
    kinds = {k for *_, k in rows}
    assert kinds == {"max_length_string", "non_bmp_unicode"}
    for cid, name, email, kind in rows:
        assert name == cust.at[cid, "full_name"] and email == cust.at[cid, "email"]
        if kind == "non_bmp_unicode":
            assert any(ord(ch) > 0xFFFF for ch in name)
        else:
            assert (name is not None and len(name) == 255) or (email is not None and len(email) == 254)
    assert _scalar(cfg, "SELECT MAX(CHAR_LENGTH(full_name)) FROM customers") == 255
    assert _scalar(cfg, "SELECT MAX(CHAR_LENGTH(email)) FROM customers") == 254


def test_whole_tables_read_back_equal_to_the_generated_frames(cfg, seeded):
    _, mem, _ = seeded
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def ms(v) -> int:
        return generator.NULL_INT if v is None else (v.replace(tzinfo=UTC) - epoch) // timedelta(milliseconds=1)

    rows = _query(cfg, "SELECT customer_id, country, email, full_name, status, signup_at, billing_day, updated_at "
                       "FROM customers ORDER BY customer_id")
    got = pd.DataFrame(rows, columns=schema.CUSTOMERS.column_names)
    exp = mem.tables["customers"]
    for col in ("signup_at", "updated_at"):
        got[col] = [ms(v) for v in got[col]]
    for i, col in ((2, "email"), (3, "full_name")):
        assert [None if pd.isna(v) else v for v in exp[col]] == [r[i] for r in rows], col
    for col in ("customer_id", "signup_at", "billing_day", "updated_at"):
        assert (got[col].to_numpy() == exp[col].to_numpy()).all(), col
    assert list(got["country"]) == list(exp["country"]) and list(got["status"]) == list(exp["status"])
    # money is exact DECIMAL, dates and ms timestamps survive
    inv = _query(cfg, "SELECT invoice_id, amount, tax, period_start, created_at FROM invoices "
                      "WHERE created_at > '1000-01-01' ORDER BY invoice_id LIMIT 5000")
    e = mem.tables["invoices"].set_index("invoice_id")
    for iid, amount, tax, start, created in inv:
        assert int(amount * generator.E4) == e.at[iid, "amount"] and int(tax * generator.E4) == e.at[iid, "tax"]
        assert (start - date(1970, 1, 1)).days == e.at[iid, "period_start"]
        assert ms(created) == e.at[iid, "created_at"]
    assert any(int(a * 100) != a * 100 for _, a, *_ in inv)  # an over-precise amount kept its 4 places


def test_same_seed_same_checksums_different_seed_differs(cfg, seeded):
    _, _, first = seeded
    generator.seed(cfg, N, seed=SEED, dirty_rate=RATE, as_of=AS_OF)
    assert generator.legacy_checksums(cfg) == first
    generator.seed(cfg, N, seed=SEED + 1, dirty_rate=RATE, as_of=AS_OF)
    other = generator.legacy_checksums(cfg)
    assert other["invoices"] != first["invoices"] and other["customers"] != first["customers"]
    assert other["plans"] == first["plans"]


def test_append_continues_ids_and_collisions_are_refused(cfg, legacy_db):
    generator.seed(cfg, 300, seed=5, dirty_rate=0.0, as_of=AS_OF)
    before = generator.legacy_checksums(cfg)
    with pytest.raises(ValueError, match="collides"):
        generator.seed(cfg, 10, seed=6, first_customer_id=1, replace=False)
    with pytest.raises(ValueError, match="customers must be"):
        generator.seed(cfg, 0, seed=6)  # replace=True, but refused before truncating
    with pytest.raises(ValueError, match="dirty_rate"):
        generator.seed(cfg, 10, dirty_rate=2.0)
    assert generator.legacy_checksums(cfg) == before  # refused before touching anything
    res = generator.seed(cfg, 200, seed=6, first_customer_id=301, replace=False, countries={"JP": 1, "SE": 1})
    assert res.counts["customers"] == 200
    for t in schema.TABLES[1:]:
        n, lo, hi = _query(cfg, f"SELECT COUNT(*), MIN(`{t.key}`), MAX(`{t.key}`) FROM `{t.name}`")[0]
        assert (lo, hi) == (1, n), t.name  # still dense
    assert _query(cfg, "SELECT DISTINCT country FROM customers WHERE customer_id > 300 ORDER BY 1") == \
        [("JP",), ("SE",)]


def test_tsv_escaping_against_the_server(cfg, legacy_db):
    names = ["tab\there", "new\nline\r\n", "back\\slash \\N \\t", r"\N", "emoji 😀🎬𝄞 👩‍💻", None, "", "quote \" '"]
    ids = np.arange(9_000_001, 9_000_001 + len(names), dtype=np.int64)
    df = pd.DataFrame({"customer_id": ids, "country": "US", "email": [f"e{i}@example.com" for i in ids],
                       "full_name": pd.Series(names, dtype=object), "status": "active",
                       "signup_at": 1_700_000_000_123, "billing_day": 31, "updated_at": generator.ZERO_TS})
    with connections.mysql_conn("mysql_admin", cfg) as conn:
        assert generator.load_frame(conn, "customers", df) == len(names)
    try:
        got = _query(cfg, "SELECT full_name, CAST(signup_at AS CHAR), CAST(updated_at AS CHAR) FROM customers "
                          "WHERE customer_id >= 9000001 ORDER BY customer_id")
        assert [g[0] for g in got] == names
        assert {g[1] for g in got} == {"2023-11-14 22:13:20.123"}
        assert {g[2] for g in got} == {"0000-00-00 00:00:00.000"}
    finally:
        with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM customers WHERE customer_id >= 9000001")
            conn.commit()


def test_cli_prints_seed_result_and_rejects_bad_input(cfg, legacy_db):
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "billing_migration.devtools.generator", "--customers", "150", "--seed", "3",
           "--countries", "US=0.5,BR=0.3,GB=0.2", "--dirty-rate", "0.01", "--checksums"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True)
    # Airflow's own log lines may precede the result on stdout: the result is the JSON object at the end.
    res = json.loads(out.stdout[re.search(r"^\{$", out.stdout, re.M).start():])
    assert res["counts"]["customers"] == 150 and res["database"] == cfg.mysql_database
    assert set(res["dirty"]) == set(generator.DIRTY_KINDS) and min(res["dirty"].values()) > 0
    assert res["checksums"] == generator.legacy_checksums(cfg)
    assert {c for (c,) in _query(cfg, "SELECT DISTINCT country FROM customers")} == {"US", "BR", "GB"}
    bad = subprocess.run([*cmd[:5], "--countries", "US=1,ZZ=2"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode == 2 and "ZZ" in bad.stderr
    assert generator.legacy_checksums(cfg) == res["checksums"]  # nothing touched
