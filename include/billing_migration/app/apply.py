"""Apply one described write (`writes.Write`) to legacy MySQL or to Cassandra: the only SQL/CQL of the write path.

Both appliers are idempotent for a queue consumer (`consumer=True`): per customer, the last sequence number
applied to that store is kept (`write_path_applied`, one table in each store); a write whose sequence is not
above it is skipped (a redelivery or a duplicate), so a replayed write applied twice leaves the same state, and
an older write can never overwrite a newer one. In MySQL the mark is written in the same transaction as the
row; in Cassandra right after it (a crash in between re-applies the same absolute values: the same state).
Values are absolute (never `amount = amount + x`), which is what makes a re-application harmless.

Deletes cascade as the legacy application did by hand (children first): a customer takes every row it owns,
a subscription its plan changes and invoices, an invoice its payments and balance transactions.
An update of a row that does not exist is an error in both stores (a Cassandra UPDATE would create it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_migration.stores import schema

_IN_INVOICES = "invoice_id IN (SELECT invoice_id FROM invoices WHERE subscription_id = %s)"
MYSQL_CHILDREN = {  # table -> statements deleting what references one of its rows, children first
    "customers": [f"DELETE FROM {t} WHERE customer_id = %s" for t in
                  ("balance_transactions", "payments", "plan_changes", "invoices", "subscriptions")],
    "subscriptions": [f"DELETE FROM balance_transactions WHERE {_IN_INVOICES}",
                      f"DELETE FROM payments WHERE {_IN_INVOICES}",
                      "DELETE FROM plan_changes WHERE subscription_id = %s",
                      "DELETE FROM invoices WHERE subscription_id = %s"],
    "invoices": ["DELETE FROM balance_transactions WHERE invoice_id = %s",
                 "DELETE FROM payments WHERE invoice_id = %s"],
}
APPLIED, DUPLICATE = "applied", "duplicate"


class ApplyError(RuntimeError):
    """The write cannot be applied to this store (e.g. an update of a row that does not exist)."""


# ------------------------------------------------------------------------------------------ MySQL
def _mysql_seen(cur, w) -> bool:
    cur.execute("SELECT seq FROM write_path_applied WHERE customer_id = %s FOR UPDATE", (w.customer_id,))
    row = cur.fetchone()
    return row is not None and int(row[0]) >= w.seq


def _mysql_mark(cur, w) -> None:
    cur.execute("INSERT INTO write_path_applied (customer_id, seq, idempotency_key) VALUES (%s, %s, %s) "
                "ON DUPLICATE KEY UPDATE seq = VALUES(seq), idempotency_key = VALUES(idempotency_key)",
                (w.customer_id, w.seq, w.idempotency_key))


def _mysql_row(w) -> dict[str, Any]:
    t = schema.TABLES_BY_NAME[w.entity]
    row = {t.key: w.key, **w.values}
    row["country" if t.name == "customers" else "customer_id"] = w.country if t.name == "customers" else w.customer_id
    return row


def apply_mysql(cur, w, consumer: bool = False) -> str:
    """Apply `w` on an open MySQL cursor (the caller commits). `consumer`: check and advance the customer's mark."""
    if consumer and _mysql_seen(cur, w):
        return DUPLICATE
    t = schema.TABLES_BY_NAME[w.entity]
    if w.op == "insert":
        row = _mysql_row(w)
        cols = ", ".join(f"`{c}`" for c in row)
        upd = ", ".join(f"`{c}` = VALUES(`{c}`)" for c in row if c != t.key)
        cur.execute(f"INSERT INTO `{t.name}` ({cols}) VALUES ({', '.join(['%s'] * len(row))}) "
                    f"ON DUPLICATE KEY UPDATE {upd}", tuple(row.values()))
    elif w.op == "update":
        cur.execute(f"SELECT 1 FROM `{t.name}` WHERE `{t.key}` = %s FOR UPDATE", (w.key,))
        if cur.fetchone() is None:
            raise ApplyError(f"update of {t.name} {w.key}: no such row in legacy MySQL")
        sets = ", ".join(f"`{c}` = %s" for c in w.values)
        cur.execute(f"UPDATE `{t.name}` SET {sets} WHERE `{t.key}` = %s", (*w.values.values(), w.key))
    else:
        for stmt in MYSQL_CHILDREN.get(t.name, []):
            cur.execute(stmt, (w.key,))
        cur.execute(f"DELETE FROM `{t.name}` WHERE `{t.key}` = %s", (w.key,))
    if consumer:
        _mysql_mark(cur, w)
    return APPLIED


# ------------------------------------------------------------------------------------------ Cassandra
def _tag(w) -> str:
    return f"app:{w.idempotency_key}"[:250]


def _static_assignments(w) -> dict[str, Any]:
    vals = dict(w.values)
    if w.op == "insert":
        vals["country"] = w.country
    return {schema.CUSTOMER_STATIC[c]: v for c, v in vals.items()}


def _exists(session, w) -> bool:
    t = schema.TABLES_BY_NAME[w.entity]
    if t.name == "customers":
        rows = session.execute("SELECT customer_id, country FROM customer_billing WHERE customer_id = %s LIMIT 1",
                               (w.customer_id,))
        return any(r[1] is not None for r in rows)
    rows = session.execute("SELECT entity_id FROM customer_billing WHERE customer_id = %s AND entity_type = %s "
                           "AND entity_id = %s", (w.customer_id, t.entity, w.key))
    return bool(list(rows))


def _cascade_keys(session, w) -> list[tuple[str, int]]:
    """(entity_type, entity_id) of the rows a subscription or invoice delete takes with it (same partition)."""
    rows = list(session.execute("SELECT entity_type, entity_id, subscription_id, invoice_id FROM customer_billing "
                                "WHERE customer_id = %s", (w.customer_id,)))
    rows = [r for r in rows if r[0] is not None]
    invoices = {w.key} if w.entity == "invoices" else {
        r[1] for r in rows if r[0] == "invoice" and r[2] == w.key}
    out = [(r[0], r[1]) for r in rows if w.entity == "subscriptions" and r[0] in ("plan_change", "invoice")
           and r[2] == w.key]
    out += [(r[0], r[1]) for r in rows if r[0] in ("payment", "balance_txn") and r[3] in invoices]
    return out


def _cassandra_statements(session, w) -> list[tuple[str, tuple]]:
    t = schema.TABLES_BY_NAME[w.entity]
    cid, tag = w.customer_id, _tag(w)
    if t.name == "customers":
        if w.op == "delete":
            return [("DELETE FROM customer_billing WHERE customer_id = %s", (cid,)),
                    ("DELETE FROM customers_by_country WHERE country = %s AND bucket = %s AND customer_id = %s",
                     (w.country, schema.customer_bucket(cid), cid))]
        a = {**_static_assignments(w), "customer_run_id": tag}
        out = [(f"UPDATE customer_billing SET {', '.join(f'{c} = %s' for c in a)} WHERE customer_id = %s",
                (*a.values(), cid))]
        if w.op == "insert":
            out.append(("INSERT INTO customers_by_country (country, bucket, customer_id, run_id) "
                        "VALUES (%s, %s, %s, %s)", (w.country, schema.customer_bucket(cid), cid, tag)))
        return out
    if w.op == "delete":
        keys = [*_cascade_keys(session, w), (t.entity, w.key)]
        return [("DELETE FROM customer_billing WHERE customer_id = %s AND entity_type = %s AND entity_id = %s",
                 (cid, e, k)) for e, k in keys]
    vals = {c: v for c, v in w.values.items() if not (w.op == "insert" and v is None)}
    if w.op == "insert":
        cols = ["customer_id", "entity_type", "entity_id", *vals, "run_id"]
        return [(f"INSERT INTO customer_billing ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                 (cid, t.entity, w.key, *vals.values(), tag))]
    a = {**vals, "run_id": tag}
    return [(f"UPDATE customer_billing SET {', '.join(f'{c} = %s' for c in a)} WHERE customer_id = %s AND "
             "entity_type = %s AND entity_id = %s", (*a.values(), cid, t.entity, w.key))]


def apply_cassandra(session, w, consumer: bool = False) -> str:
    """Apply `w` to Cassandra (session bound to the keyspace). `consumer`: check and advance the customer's mark."""
    from cassandra.query import BatchStatement, BatchType, SimpleStatement

    if consumer:
        row = session.execute("SELECT seq FROM write_path_applied WHERE customer_id = %s", (w.customer_id,)).one()
        if row is not None and row[0] is not None and int(row[0]) >= w.seq:
            return DUPLICATE
    if w.op == "update" and not _exists(session, w):
        raise ApplyError(f"update of {w.entity} {w.key}: no such row in Cassandra")
    stmts = _cassandra_statements(session, w)
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    partition = [s for s in stmts if "customers_by_country" not in s[0]]
    for cql, args in partition:
        batch.add(SimpleStatement(cql), args)
    session.execute(batch)  # one partition: applied atomically
    for cql, args in stmts:
        if "customers_by_country" in cql:
            session.execute(cql, args)
    if consumer:
        session.execute("INSERT INTO write_path_applied (customer_id, seq, idempotency_key, applied_at) "
                        "VALUES (%s, %s, %s, %s)", (w.customer_id, w.seq, w.idempotency_key, datetime.now(UTC)))
    return APPLIED
