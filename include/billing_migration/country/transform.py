"""Exported Parquet -> Cassandra rows of `customer_billing`, with vectorised validation and rejects.

Every rule is a vectorised mask over a whole table (pyarrow compute / numpy / pandas index lookups): no
Python loop per row on the common path. A record failing any rule goes to the rejects file
(`table, key, customer_id, reason, field, rule`) and never to Cassandra; its children are rejected too
(`parent <table> <key> rejected`), so a partition never holds a payment whose invoice is missing.

Output rows (`transformed/part-N.parquet`, schema `output_schema()`):
- one *static* row per customer: `entity_type` and `entity_id` NULL, the customer columns under their
  Cassandra names (schema.CUSTOMER_STATIC) -> loaded as the partition's static columns;
- one row per entity: `entity_type` (schema.ENTITY_TYPES), `entity_id` (the legacy primary key) and the
  entity's columns (schema.entity_row_columns); other entity columns NULL.
Decimals stay decimal128(14,4); timestamps are UTC milliseconds; dates date32.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from billing_migration.config import Config, normalize_country
from billing_migration.stores import s3io, schema

log = logging.getLogger(__name__)

# Cassandra-side Arrow types: `int` is 32-bit and `tinyint` 8-bit in CQL.
CQL_ARROW = {**s3io.ARROW_TYPES, "int": pa.int32(), "tinyint": pa.int8()}
INT_RANGES = {"int": (-(2**31), 2**31 - 1), "tinyint": (-128, 127)}
ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("customers", "status"): schema.CUSTOMER_STATUSES,
    ("subscriptions", "status"): schema.SUBSCRIPTION_STATUSES,
    ("invoices", "status"): schema.INVOICE_STATUSES,
    ("payments", "method"): schema.PAYMENT_METHODS,
    ("payments", "status"): schema.PAYMENT_STATUSES,
    ("balance_transactions", "kind"): schema.BALANCE_KINDS,
    ("plans", "quality"): schema.PLAN_QUALITIES,
}
# Nullable in the legacy schema (the app never enforced it) but required by the business: reject NULLs.
REQUIRED_NULLABLE = {("invoices", "currency"), ("payments", "currency"), ("balance_transactions", "currency")}
# Business ranges inside the storage type's range: a billing day of 45 fits a TINYINT but bills on no day.
VALUE_RANGES: dict[tuple[str, str], tuple[int, int]] = {("customers", "billing_day"): (1, 31)}
NON_NEGATIVE = {("invoices", "amount"), ("invoices", "tax"), ("payments", "amount"), ("plans", "price")}
REJECT_SCHEMA = pa.schema([("table", pa.string()), ("key", pa.int64()), ("customer_id", pa.int64()),
                           ("reason", pa.string()), ("field", pa.string()), ("rule", pa.string())])


def output_schema() -> pa.Schema:
    """Arrow schema of the transformed rows (the columns of customer_billing, run_id included)."""
    fields = [pa.field("customer_id", pa.int64(), False), pa.field("entity_type", pa.string()),
              pa.field("entity_id", pa.int64())]
    for legacy, cql in schema.CUSTOMER_STATIC.items():
        fields.append(pa.field(cql, CQL_ARROW[schema.CUSTOMERS.column(legacy).kind]))
    seen: set[str] = set()
    for t in schema.ENTITY_TABLES:
        for name in schema.entity_row_columns(t):
            if name not in seen:
                seen.add(name)
                fields.append(pa.field(name, CQL_ARROW[t.column(name).kind]))
    fields.append(pa.field("run_id", pa.string()))
    return pa.schema(fields)


@dataclass
class _Rejects:
    """Accumulates reject rows (vectorised per rule) and the rejected keys per table."""

    parts: list[pa.Table] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, tname: str, t: pa.Table, mask: np.ndarray, rule: str, fld: str | None,
            reason: str | pa.Array | pd.Series) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        idx = np.flatnonzero(mask)
        key = t.column(schema.TABLES_BY_NAME[tname].key).take(idx).cast(pa.int64())
        n = len(idx)
        cust = (t.column("customer_id").take(idx).cast(pa.int64()) if "customer_id" in t.column_names
                else pa.nulls(n, pa.int64()))
        if isinstance(reason, str):
            reasons = pa.array([reason] * n, pa.string())
        else:
            values = reason.to_numpy() if isinstance(reason, pd.Series) else np.asarray(reason, dtype=object)
            reasons = pa.array(values[idx] if len(values) == len(mask) else values, pa.string())
        self.parts.append(pa.table({"table": pa.array([tname] * n), "key": key, "customer_id": cust,
                                    "reason": reasons, "field": pa.array([fld] * n, pa.string()),
                                    "rule": pa.array([rule] * n)}, schema=REJECT_SCHEMA))
        prev = self.masks.get(tname)
        self.masks[tname] = mask if prev is None else (prev | mask)

    def rejected(self, tname: str, n: int) -> np.ndarray:
        return self.masks.get(tname, np.zeros(n, dtype=bool))

    def table(self) -> pa.Table:
        return pa.concat_tables(self.parts) if self.parts else REJECT_SCHEMA.empty_table()


def _np(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Boolean pyarrow array -> numpy bool, nulls as False."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _unscaled(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """decimal128(14,4) -> (unscaled int64 values, valid mask), read straight from the Arrow buffer."""
    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    a = a.cast(pa.decimal128(schema.DECIMAL_PRECISION, schema.DECIMAL_SCALE))
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    words = np.frombuffer(a.buffers()[1], dtype=np.int64)
    # 16-byte little-endian two's complement: |value| < 10^14 fits the low word exactly
    low = words[2 * a.offset: 2 * (a.offset + len(a)): 2].copy()
    return low, _np(pc.is_valid(a))


def _field_rules(t: pa.Table, tdef: schema.Table, rej: _Rejects) -> None:
    tname = tdef.name
    n = t.num_rows
    zero = t.column(s3io.ZERO_DATE_COL) if s3io.ZERO_DATE_COL in t.column_names else None
    for c in tdef.columns:
        col = t.column(c.name)
        isnull = _np(pc.is_null(col))
        if c.kind in ("timestamp", "date") and zero is not None:
            flagged = _np(pc.match_substring_regex(zero, f"(^|,){c.name}(,|$)"))
            rej.add(tname, t, flagged, "zero_date", c.name, f"zero or invalid date in {c.name}")
            isnull = isnull & ~flagged
        if (not c.nullable) or (tname, c.name) in REQUIRED_NULLABLE:
            rej.add(tname, t, isnull, "missing", c.name, f"{c.name} is null")
        if c.kind == "text" and c.max_len is not None:
            too_long = _np(pc.greater(pc.utf8_length(col), c.max_len))  # characters, not bytes
            rej.add(tname, t, too_long, "length", c.name, f"{c.name} longer than {c.max_len} characters")
        if c.kind in INT_RANGES:
            lo, hi = INT_RANGES[c.kind]
            bad = _np(pc.or_(pc.less(col, lo), pc.greater(col, hi)))
            rej.add(tname, t, bad, "range", c.name, f"{c.name} outside the CQL {c.kind} range")
        if (tname, c.name) in VALUE_RANGES:
            lo, hi = VALUE_RANGES[(tname, c.name)]
            bad = _np(pc.or_(pc.less(col, lo), pc.greater(col, hi)))
            values = col.to_pandas().astype("Int64").astype(str)
            rej.add(tname, t, bad, "range", c.name, f"{c.name} " + values + f" outside {lo}..{hi}")
        if (tname, c.name) in ENUMS:
            allowed = ENUMS[(tname, c.name)]
            bad = ~isnull & ~_np(pc.is_in(col, value_set=pa.array(allowed)))
            rej.add(tname, t, bad, "enum", c.name, f"{c.name} not one of {', '.join(allowed)}")
    if "currency" in t.column_names:
        cur = t.column("currency")
        known = _np(pc.is_in(cur, value_set=pa.array(list(schema.CURRENCY_MINOR_UNITS))))
        present = _np(pc.is_valid(cur))
        rej.add(tname, t, present & ~known, "currency", "currency", "unknown currency")
        minor = pd.Series(schema.CURRENCY_MINOR_UNITS)
        units = minor.reindex(pd.Index(cur.to_pandas())).to_numpy(dtype=float, na_value=np.nan)
        factor = np.where(np.isnan(units), 1, 10 ** (schema.DECIMAL_SCALE - np.nan_to_num(units)))
        for c in tdef.columns:
            if c.kind != "decimal":
                continue
            raw, valid = _unscaled(t.column(c.name))
            too_precise = valid & known & (raw % factor.astype(np.int64) != 0)
            rej.add(tname, t, too_precise, "precision", c.name,
                    f"{c.name} has more decimals than the currency's minor units")
            if (tname, c.name) in NON_NEGATIVE:
                rej.add(tname, t, valid & (raw < 0), "negative_amount", c.name, f"{c.name} is negative")
    if tname == "invoices" and n:
        bad = _np(pc.less(t.column("period_end"), t.column("period_start")))
        rej.add(tname, t, bad, "period", "period_end", "period_end before period_start")


def _fk_rules(t: pa.Table, tdef: schema.Table, tables: dict[str, pa.Table], rej: _Rejects,
              country: str) -> None:
    """Parent present (same customer for entity parents), else fk_missing; parent rejected -> cascade."""
    tname = tdef.name
    for col, parent in tdef.parents:
        ptab = tables[parent]
        pdef = schema.TABLES_BY_NAME[parent]
        fk = t.column(col).to_pandas()
        notnull = fk.notna().to_numpy()
        pidx = pd.Index(ptab.column(pdef.key).to_pandas())
        pos = pidx.get_indexer(fk.fillna(-1).astype("int64"))
        found = pos >= 0
        if parent not in ("customers", "plans"):
            pcust = ptab.column("customer_id").to_numpy()
            cust = t.column("customer_id").to_numpy()
            found = found & (pcust[np.where(found, pos, 0)] == cust) if len(pcust) else found & False
        fk_str = fk.astype("Int64").astype(str)
        if parent == "plans":
            reason = "plan " + fk_str + f" not found among {country} plans"
        else:
            reason = f"{col} " + fk_str + f" not found in {parent} of the same customer"
        rej.add(tname, t, notnull & ~found, "fk_missing", col, reason)
        prej = rej.rejected(parent, ptab.num_rows)
        cascaded = notnull & found & prej[np.where(found, pos, 0)] if len(prej) else notnull & False
        rej.add(tname, t, cascaded, "cascade", col, f"parent {parent} " + fk_str + " rejected")


def _duplicate_invoices(t: pa.Table, rej: _Rejects) -> None:
    """Same (subscription_id, period_start): the lowest invoice_id wins, later ones are rejected."""
    if t.num_rows == 0:
        return
    df = pd.DataFrame({"sub": t.column("subscription_id").to_pandas(),
                       "ps": t.column("period_start").to_pandas(),
                       "id": t.column("invoice_id").to_pandas()})
    first = df.groupby(["sub", "ps"], dropna=False)["id"].transform("min")
    dup = (df["id"] != first).to_numpy()
    rej.add("invoices", t, dup, "duplicate", "period_start",
            "duplicate of invoice " + first.astype("int64").astype(str)
            + " (same subscription_id and period_start)")


def validate(tables: dict[str, pa.Table], plans: pa.Table, country: str) -> tuple[
        dict[str, pa.Table], pa.Table, dict[str, Any]]:
    """Validate one chunk (all customer tables + the country's plans).

    Returns (valid rows per table incl. plans, rejects table, counts per table). Pure: no I/O.
    """
    tables = {**tables, "plans": plans}
    rej = _Rejects()
    counts: dict[str, Any] = {}
    for tdef in schema.TABLES:
        t = tables[tdef.name]
        _field_rules(t, tdef, rej)
        if tdef.name == "invoices":
            _duplicate_invoices(t, rej)
        _fk_rules(t, tdef, tables, rej, country)
    valid: dict[str, pa.Table] = {}
    all_rejects = rej.table()
    for tdef in schema.TABLES:
        t = tables[tdef.name]
        bad = rej.rejected(tdef.name, t.num_rows)
        valid[tdef.name] = t.filter(pa.array(~bad)) if bad.any() else t
        mine = all_rejects.filter(pc.equal(all_rejects.column("table"), tdef.name))
        by_rule = Counter(mine.column("rule").to_pylist())
        counts[tdef.name] = {"in": t.num_rows, "out": valid[tdef.name].num_rows, "rejected": int(bad.sum()),
                             "rejects_by_rule": dict(sorted(by_rule.items()))}
    return valid, all_rejects, counts


def to_cassandra_rows(valid: dict[str, pa.Table], run_id: str) -> pa.Table:
    """Valid legacy rows -> customer_billing rows (static row per customer + one row per entity)."""
    out_schema = output_schema()
    parts: list[pa.Table] = []
    cust = valid["customers"]
    cols: dict[str, Any] = {"customer_id": cust.column("customer_id"),
                            "entity_type": pa.nulls(cust.num_rows, pa.string()),
                            "entity_id": pa.nulls(cust.num_rows, pa.int64())}
    for legacy, cql in schema.CUSTOMER_STATIC.items():
        cols[cql] = cust.column(legacy)
    parts.append(_conform(cols, cust.num_rows, out_schema, run_id))
    for tdef in schema.ENTITY_TABLES:
        t = valid[tdef.name]
        cols = {"customer_id": t.column("customer_id"),
                "entity_type": pa.array([tdef.entity] * t.num_rows, pa.string()),
                "entity_id": t.column(tdef.key)}
        for name in schema.entity_row_columns(tdef):
            cols[name] = t.column(name)
        parts.append(_conform(cols, t.num_rows, out_schema, run_id))
    rows = pa.concat_tables(parts)
    # partition order: static row first, then entities, so load can stream one customer at a time
    order = pc.sort_indices(rows, sort_keys=[("customer_id", "ascending", "at_start"),
                                             ("entity_type", "ascending", "at_start"),
                                             ("entity_id", "ascending", "at_start")])
    return rows.take(order)


def _conform(cols: dict[str, Any], n: int, out_schema: pa.Schema, run_id: str) -> pa.Table:
    arrays = []
    for f in out_schema:
        if f.name == "run_id":
            arrays.append(pa.array([run_id] * n, pa.string()))
        elif f.name in cols:
            arrays.append(pc.cast(cols[f.name], f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=out_schema)


def _read(client, cfg: Config, key: str, tdef: schema.Table) -> pa.Table:

    t = s3io.get_parquet(client, cfg.s3_bucket, key)
    want = s3io.arrow_schema(tdef)
    return t.select(want.names).cast(want)


def transform_chunk(cfg: Config, country: str, run_id: str, chunk: int) -> dict[str, Any]:
    """Validate and transform one exported chunk; writes transformed/ and rejects/ (always, even empty).

    Plan rejects are reported once, with chunk 0 (every chunk still refuses subscriptions to bad plans).
    """
    country = normalize_country(country)
    t0 = time.monotonic()
    client = s3io.client(cfg)
    tables = {t.name: _read(client, cfg, s3io.table_key(cfg, country, run_id, t.name, chunk), t)
              for t in schema.CUSTOMER_TABLES}
    plans = _read(client, cfg, s3io.table_key(cfg, country, run_id, "plans", 0), schema.PLANS)
    valid, rejects, counts = validate(tables, plans, country)
    if chunk != 0:
        rejects = rejects.filter(pc.not_equal(rejects.column("table"), "plans"))
        counts.pop("plans", None)
    rows = to_cassandra_rows(valid, run_id)
    s3io.put_parquet(client, cfg.s3_bucket, s3io.stage_key(cfg, country, run_id, "transformed", chunk), rows)
    s3io.put_parquet(client, cfg.s3_bucket, s3io.stage_key(cfg, country, run_id, "rejects", chunk), rejects)
    seconds = time.monotonic() - t0
    rows_in = sum(c["in"] for k, c in counts.items() if k != "plans")
    rejected_records = len(set(zip(rejects.column("table").to_pylist(), rejects.column("key").to_pylist(),
                                       strict=True)))
    result = {
        "chunk": chunk, "tables": counts, "rows_in": rows_in, "rows_out": rows.num_rows,
        "customers_out": valid["customers"].num_rows, "rejects": rejected_records,
        "rejects_by_rule": dict(Counter(rejects.column("rule").to_pylist())), "seconds": round(seconds, 3),
        "rows_per_s": round(rows_in / seconds, 1) if seconds > 0 else 0.0,
    }
    log.info("transform %s chunk %d: %d rows in, %d out, %d rejected (%s) in %.2fs", country, chunk, rows_in,
             rows.num_rows, rejected_records, result["rejects_by_rule"], seconds)
    return result
