"""Transform + load against the real MariaDB, S3 and Cassandra: values equal, idempotent reruns, stale rows
removed, re-migration rewrites whole partitions, delete_country touches only its country.

The equality check here is this file's own (MySQL rows read with the driver's native types vs the Cassandra
partition), independent of compare.py.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from billing_migration.country import export, load, remigrate, transform
from billing_migration.stores import connections, s3io, schema

from tests.integration import fixture_data

RUN = "scheduled__2026-11-23T01:00:00+00:00"
AR_BASE, ZA_BASE = fixture_data.BASE + 20000, fixture_data.BASE + 30000
N_AR, N_ZA = 24, 6
BAD_PAYMENT = (AR_BASE + 2) * 100 + 1  # made negative in the source: must be rejected, never loaded


def _migrate(cfg, country: str, chunk_customers: int, run: str = RUN) -> list[dict]:
    export.export_plans(cfg, country, run)
    load.load_plans(cfg, country, run)
    out = []
    for ch in export.plan_chunks(cfg, country, chunk_customers):
        export.export_chunk(cfg, country, run, ch)
        out.append({"chunk": ch, "transform": transform.transform_chunk(cfg, country, run, ch["chunk"]),
                    "load": load.load_chunk(cfg, country, run, ch["chunk"], concurrency=8)})
    return out


@pytest.fixture(scope="module")
def migrated(cfg, legacy_db, cassandra_ks, s3, reset_routing, seed_customers):
    reset_routing("transform/load tests seed AR and ZA")
    seed_customers("AR", N_AR, AR_BASE)
    seed_customers("ZA", N_ZA, ZA_BASE)
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as c:
        c.execute("UPDATE payments SET amount = -1 WHERE payment_id = %s", (BAD_PAYMENT,))
        conn.commit()
    de = _migrate(cfg, "AR", 10)
    _migrate(cfg, "ZA", 10)
    return de


@pytest.fixture(scope="module")
def session(cfg, cassandra_ks):
    with connections.cassandra_session(cfg) as s:
        yield s


# ------------------------------------------------------------------------------ own source/target check
def _source(cfg, country: str, customer_ids: list[int] | None = None) -> dict[tuple, dict]:
    """(customer_id, entity_type, entity_id) -> {cassandra column: value}; entity_type None = static."""
    out: dict[tuple, dict] = {}
    ids = ""
    if customer_ids:
        ids = f" AND c.customer_id IN ({', '.join(str(int(i)) for i in customer_ids)})"
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT c.* FROM customers c WHERE c.country = %s{ids}", (country,))
        names = [d[0] for d in cur.description]
        for row in cur.fetchall():
            r = dict(zip(names, row, strict=True))
            out[(r["customer_id"], None, None)] = {schema.CUSTOMER_STATIC[k]: v for k, v in r.items()
                                                   if k in schema.CUSTOMER_STATIC}
        for t in schema.ENTITY_TABLES:
            cur.execute(f"SELECT t.* FROM `{t.name}` t JOIN customers c ON c.customer_id = t.customer_id "
                        f"WHERE c.country = %s{ids}", (country,))
            names = [d[0] for d in cur.description]
            for row in cur.fetchall():
                r = dict(zip(names, row, strict=True))
                out[(r["customer_id"], t.entity, r[t.key])] = {c: r[c] for c in schema.entity_row_columns(t)}
    return out


def _target(session, customer_ids) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    q = session.prepare("SELECT * FROM customer_billing WHERE customer_id = ?")
    for cid in customer_ids:
        for row in session.execute(q, (cid,)):
            r = row._asdict()
            out[(cid, None, None)] = {c: r[c] for c in schema.CUSTOMER_STATIC.values()} | {
                "customer_run_id": r["customer_run_id"]}
            if r["entity_type"] is not None:
                t = schema.TABLE_BY_ENTITY[r["entity_type"]]
                out[(cid, r["entity_type"], r["entity_id"])] = {c: r[c] for c in schema.entity_row_columns(t)} | {
                    "run_id": r["run_id"]}
    return out


def _norm(v):
    if isinstance(v, dt.datetime):
        return v.replace(tzinfo=None, microsecond=v.microsecond // 1000 * 1000)
    if hasattr(v, "date") and type(v).__name__ == "Date":  # cassandra.util.Date
        return v.date()
    if isinstance(v, Decimal):
        return v.normalize()
    return v


def _diff(src: dict, tgt: dict, skip: set[tuple[str, int]] = frozenset()) -> list:
    problems = []
    for key, fields in src.items():
        cid, et, eid = key
        table, key_ = ("customers", cid) if et is None else (schema.TABLE_BY_ENTITY[et].name, eid)
        if (table, key_) in skip or ("customers", cid) in skip:
            continue
        if key not in tgt:
            problems.append(("missing", key))
            continue
        for name, value in fields.items():
            if _norm(value) != _norm(tgt[key][name]):
                problems.append(("value", key, name, value, tgt[key][name]))
    problems += [("extra", k) for k in tgt if k not in src]
    return problems


def _rejected(cfg, s3, country: str, run: str = RUN) -> set[tuple[str, int]]:
    out = set()
    for key in s3io.list_keys(s3, cfg.s3_bucket, s3io.run_prefix(cfg, country, run) + "rejects/"):
        t = s3io.get_parquet(s3, cfg.s3_bucket, key)
        out |= set(zip(t.column("table").to_pylist(), t.column("key").to_pylist(), strict=True))
    return out


# ---------------------------------------------------------------------------------------------- tests
def test_every_source_row_is_in_cassandra_with_equal_values(cfg, migrated, session, s3):
    rejected = _rejected(cfg, s3, "AR")
    assert rejected == {("payments", BAD_PAYMENT)}
    src = _source(cfg, "AR")
    tgt = _target(session, range(AR_BASE, AR_BASE + N_AR))
    assert _diff(src, tgt, skip=rejected) == []
    assert (AR_BASE + 2, "payment", BAD_PAYMENT) not in tgt
    assert len(tgt) == len(src) - 1
    assert {v.get("run_id", v.get("customer_run_id")) for v in tgt.values()} == {RUN}  # provenance
    assert tgt[(AR_BASE, None, None)]["full_name"] == "😀" * 255  # non-BMP at max length intact
    counts = [m["transform"] for m in migrated]
    assert sum(c["rejects"] for c in counts) == 1
    assert sum(m["load"]["customers"] for m in migrated) == N_AR
    assert sum(m["load"]["rows"] for m in migrated) == len(tgt)


def test_index_and_plans_are_written(cfg, migrated, session):
    ids = set()
    for b in range(schema.CUSTOMERS_BY_COUNTRY_BUCKETS):
        ids |= {r.customer_id for r in session.execute(
            "SELECT customer_id FROM customers_by_country WHERE country = %s AND bucket = %s", ("AR", b))}
    assert ids == set(range(AR_BASE, AR_BASE + N_AR))
    plans = list(session.execute("SELECT plan_id, price, currency, run_id FROM plans WHERE country = 'AR'"))
    assert [(p.plan_id, p.price, p.currency, p.run_id) for p in plans] == [(9003, Decimal("9.9900"), "ARS", RUN)]


def test_index_entries_go_in_one_batch_per_bucket_partition(cfg, session, monkeypatch):
    """customers_by_country entries are batched per (country, bucket) partition, never across two, and a
    bucket with more entries than INDEX_BATCH_ROWS is split."""
    monkeypatch.setattr(load, "INDEX_BATCH_ROWS", 2)
    insert = session.prepare("INSERT INTO customers_by_country (country, bucket, customer_id, run_id) "
                             "VALUES (?, ?, ?, ?)")
    customers = list(range(1, 301))
    got = list(load.index_batches(insert, "AR", customers, "r"))
    assert sum(n for _label, _b, n in got) == 300 and max(n for _label, _b, n in got) == 2
    assert len(got) == sum(-(-len([c for c in customers if schema.customer_bucket(c) == b]) // 2)
                           for b in range(schema.CUSTOMERS_BY_COUNTRY_BUCKETS))
    for label, batch, n in got:
        bucket, first, last = (int(x) for x in
                               label.replace("bucket ", "").replace(" customers ", " ").replace("..", " ").split())
        assert schema.customer_bucket(first) == schema.customer_bucket(last) == bucket
        assert len(batch._statements_and_parameters) == n


def test_rerun_of_the_same_load_leaves_an_identical_partition(cfg, migrated, session):
    ids = range(AR_BASE, AR_BASE + 10)
    before = _target(session, ids)
    again = load.load_chunk(cfg, "AR", RUN, 0, concurrency=4)
    assert again["customers"] == 10
    after = _target(session, ids)
    assert after == before
    n = session.execute("SELECT COUNT(*) FROM customer_billing WHERE customer_id = %s", (AR_BASE,)).one()[0]
    assert n == 1 + 1 + 3 + 3 + 1  # subscription, plan change, 3 invoices, 3 payments, 1 credit: no duplicates


def test_reload_removes_a_stale_row_and_restores_static_columns(cfg, migrated, session):
    cid = AR_BASE + 1
    session.execute("INSERT INTO customer_billing (customer_id, entity_type, entity_id, amount, run_id) "
                    "VALUES (%s, 'invoice', 999999, 1.00, 'stale')", (cid,))
    session.execute("UPDATE customer_billing SET email = 'wrong@example.com' WHERE customer_id = %s", (cid,))
    assert (cid, "invoice", 999999) in _target(session, [cid])
    load.load_chunk(cfg, "AR", RUN, 0)
    tgt = _target(session, [cid])
    assert (cid, "invoice", 999999) not in tgt
    assert tgt[(cid, None, None)]["email"] == f"user{cid}@example.com"
    assert _diff(_source(cfg, "AR", [cid]), tgt) == []


def test_oversized_partition_split_into_batches_still_replaces_exactly(cfg, migrated, session, monkeypatch):
    ids = range(AR_BASE, AR_BASE + 10)
    before = _target(session, ids)
    session.execute("INSERT INTO customer_billing (customer_id, entity_type, entity_id, run_id) "
                    "VALUES (%s, 'payment', 424242, 'stale')", (AR_BASE + 3,))
    monkeypatch.setattr(load, "MAX_BATCH_ROWS", 3)
    res = load.load_chunk(cfg, "AR", RUN, 0)
    assert res["batches"] > res["customers"] * 3  # 9-10 rows per customer -> 4 batches each
    assert _target(session, ids) == before  # stale row gone, nothing duplicated


@pytest.mark.parametrize("limit", [2000, 3])
def test_column_wise_batches_are_byte_identical_to_binding_row_by_row(cfg, migrated, session, s3, monkeypatch,
                                                                      limit):
    """The fast batch builder (pre-serialized values) sends exactly what BatchStatement.add would."""
    import itertools

    rows = s3io.get_parquet(s3, cfg.s3_bucket, s3io.stage_key(cfg, "AR", RUN, "transformed", 0))
    prepared = load._prepare(session)
    monkeypatch.setattr(load, "MAX_BATCH_ROWS", limit)

    def dump(build):
        clock = itertools.count(1_700_000_000_000_000, 7)
        monkeypatch.setattr(load, "_now_us", lambda: next(clock))
        return [(cid, n, b.routing_key, b.keyspace, b.batch_type, b.consistency_level,
                 [(p, q, list(v)) for p, q, v in b._statements_and_parameters])
                for cid, b, n in build(rows, prepared, RUN)]

    fast, bound = dump(load.customer_batches), dump(load._customer_batches_bound)
    assert fast == bound
    assert sum(n for _, n, *_ in fast) == rows.num_rows
    assert len(fast) > 10 if limit == 3 else len(fast) == 10
    assert all(rk is not None for _, _, rk, *_ in fast)  # token-aware routing still gets the partition key


def test_unknown_entity_type_fails_the_batch_build_with_a_clear_error(cfg, migrated, session, s3):
    import pyarrow as pa

    rows = s3io.get_parquet(s3, cfg.s3_bucket, s3io.stage_key(cfg, "AR", RUN, "transformed", 0))
    et = rows.column("entity_type").to_pylist()
    et[-1] = "refund"
    bad = rows.set_column(rows.schema.get_field_index("entity_type"), "entity_type", pa.array(et, pa.string()))
    with pytest.raises(ValueError, match=r"unknown entity_type \['refund'\]"):
        next(load.customer_batches(bad, load._prepare(session), RUN))


def test_rate_limit_slows_the_load(cfg, migrated):
    rows = sum(m["load"]["rows"] for m in migrated if m["chunk"]["chunk"] == 1)
    res = load.load_chunk(cfg, "AR", RUN, 1, rate_limit_rows_per_s=rows // 2)
    assert res["rows"] == rows
    assert res["seconds"] >= 0.8  # half the rows pass at once (bucket), the other half wait ~1 s


def test_write_failures_fail_loudly_and_a_rerun_repairs(cfg, migrated, session, s3, monkeypatch):
    rows = s3io.get_parquet(s3, cfg.s3_bucket, s3io.stage_key(cfg, "AR", RUN, "transformed", 2))
    monkeypatch.setattr(load, "REQUEST_TIMEOUT_S", 0.000001)  # every request times out client-side
    monkeypatch.setattr(load, "MAX_RETRIES", 1)
    with pytest.raises(load.LoadError, match="could not be written"):
        load.load_rows(session, "AR", rows, RUN, concurrency=4)
    monkeypatch.undo()
    res = load.load_rows(session, "AR", rows, RUN, concurrency=4)
    assert res["customers"] == N_AR - 20 and res["timeouts_retried"] == 0


def test_remigrate_rewrites_whole_partitions(cfg, migrated, session):
    changed, deleted_row, gone = AR_BASE + 5, AR_BASE + 6, AR_BASE + 23
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as c:
        c.execute("UPDATE invoices SET amount = 12.34 WHERE invoice_id = %s", (changed * 100,))
        c.execute("UPDATE customers SET full_name = 'Renamed 🚀' WHERE customer_id = %s", (changed,))
        c.execute("DELETE FROM payments WHERE payment_id = %s", (deleted_row * 100 + 2,))
        for t in reversed(schema.CUSTOMER_TABLES):
            c.execute(f"DELETE FROM `{t.name}` WHERE customer_id = %s", (gone,))
        conn.commit()
    res = remigrate.remigrate_customers(cfg, "AR", RUN, [changed, deleted_row, gone], round_no=1)
    assert res["chunk"] == remigrate.REMIGRATE_CHUNK_BASE + 100_000
    assert res["loaded_customers"] == 2 and res["deleted_absent"] == 1
    ids = [changed, deleted_row, gone]
    tgt = _target(session, ids)
    assert _diff(_source(cfg, "AR", ids), tgt) == []
    assert tgt[(changed, "invoice", changed * 100)]["amount"] == Decimal("12.34")
    assert (deleted_row, "payment", deleted_row * 100 + 2) not in tgt
    assert not [k for k in tgt if k[0] == gone]
    entry = session.execute("SELECT * FROM customers_by_country WHERE country='AR' AND bucket=%s AND "
                            "customer_id=%s", (schema.customer_bucket(gone), gone)).one()
    assert entry is None


def test_remigrate_honours_the_runs_rate_limit_and_concurrency(cfg, migrated, session):
    ids = list(range(AR_BASE + 10, AR_BASE + 20))
    before = _target(session, ids)
    rows = len(before)  # ~100 rows: at 40 rows/s the first 40 pass at once, the rest wait ~1.5 s
    res = remigrate.remigrate_customers(cfg, "AR", RUN, ids, round_no=2, concurrency=2, rate_limit_rows_per_s=40)
    assert res["rows"] == rows and res["concurrency"] == 2 and res["rate_limit_rows_per_s"] == 40
    assert res["load_seconds"] >= (rows - 40) / 40 * 0.9
    assert res["rows_per_s"] <= 40 * 2  # bucket burst included, never unthrottled
    assert _target(session, ids) == {k: v | ({"run_id": RUN} if "run_id" in v else {"customer_run_id": RUN})
                                     for k, v in before.items()}
    with pytest.raises(ValueError, match="concurrency"):
        remigrate.remigrate_customers(cfg, "AR", RUN, ids, round_no=3, concurrency=0)


def test_delete_country_entity_then_all_touches_only_that_country(cfg, migrated, session):
    za_before = _target(session, range(ZA_BASE, ZA_BASE + N_ZA))
    res = load.delete_country(cfg, "AR", "payments")
    assert res["entity_type"] == "payment"
    de = _target(session, range(AR_BASE, AR_BASE + N_AR))
    assert de and not [k for k in de if k[1] == "payment"]
    assert any(k[1] == "invoice" for k in de)
    load.delete_country(cfg, "AR")
    assert _target(session, range(AR_BASE, AR_BASE + N_AR)) == {}
    assert list(session.execute("SELECT * FROM plans WHERE country = 'AR'")) == []
    assert _target(session, range(ZA_BASE, ZA_BASE + N_ZA)) == za_before  # ZA untouched
    assert len(za_before) == N_ZA * 10
    with pytest.raises(ValueError):
        load.delete_country(cfg, "AR", "customers")


def test_generated_dirty_rows_are_all_rejected_and_tricky_rows_load_intact(cfg, legacy_db, session, s3, reseed):
    """generator.seed's labelled dirty rows: every invalid one rejected, every valid-tricky one loaded."""
    from billing_migration.devtools import generator

    # IN: a configured country (the generator prices it) that no DAG test freezes; appended above every id
    cc, n = "IN", 300
    first = max(4 * 10**9, fixture_data.count(cfg, "SELECT COALESCE(MAX(customer_id), 0) + 1 FROM customers", ()))
    reseed(n, seed=7, countries={cc: 1.0}, dirty_rate=0.05, replace=False, first_customer_id=first)
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as c:
        c.execute("SELECT kind, table_name, row_key FROM seed_dirty_rows WHERE customer_id >= %s", (first,))
        dirty = c.fetchall()
    assert {k for k, _, _ in dirty} >= {"orphan_payment", "zero_date", "duplicate_natural_key", "non_bmp_unicode"}
    run = "gen"
    export.export_plans(cfg, cc, run)
    load.load_plans(cfg, cc, run)
    ch = {"chunk": 0, "lo": first, "hi": first + n - 1}
    manifest = export.export_chunk(cfg, cc, run, ch)
    assert manifest["customers"] == n
    counts = transform.transform_chunk(cfg, cc, run, 0)
    rejected = _rejected(cfg, s3, cc, run)
    invalid = {(t, k) for kind, t, k in dirty if kind in generator.INVALID_KINDS}
    tricky = {(t, k) for kind, t, k in dirty if kind in generator.VALID_TRICKY_KINDS}
    assert invalid and invalid <= rejected
    assert not tricky & rejected
    rej = s3io.get_parquet(s3, cfg.s3_bucket, s3io.stage_key(cfg, cc, run, "rejects", 0)).to_pylist()
    direct = {(r["table"], r["key"]) for r in rej if r["rule"] != "cascade"}
    assert direct <= invalid  # no clean row rejected by a rule (only labelled ones, plus their children)
    assert counts["rejects"] == len(rejected)
    load.load_chunk(cfg, cc, run, 0)
    ids = [first + i for i in range(n)]
    src = _source(cfg, cc, ids)
    assert _diff(src, _target(session, ids), skip=rejected) == []


def test_clean_chunk_writes_an_empty_rejects_file(cfg, migrated, s3):
    """Always written, so a rerun that fixed the data replaces the old rejects instead of leaving them."""
    key = s3io.stage_key(cfg, "ZA", RUN, "rejects", 0)
    rejects = s3io.get_parquet(s3, cfg.s3_bucket, key)
    assert rejects.num_rows == 0
    assert rejects.schema.names == ["table", "key", "customer_id", "reason", "field", "rule"]
