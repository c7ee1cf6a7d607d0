"""The one place that defines the legacy MySQL schema and the Cassandra model it migrates to.

Legacy (source of truth before cut-over): relational, one table per entity, every billing row carrying its
customer's id so a country's rows can be read by keyset ranges of `customer_id`. The legacy app never had
unique constraints on natural keys and some columns it always filled are nullable: that is where dirty
data comes from, and the transform has to catch it.

Cassandra (after cut-over), following the Netflix design: one customer = one partition of
`customer_billing`; customer fields are static columns; every subscription, plan change, invoice, payment
and balance transaction is a clustered row keyed by (entity_type, entity_id). One partition can therefore be
written atomically with a single-partition batch and read back in one query.

Timestamps are DATETIME(3) in MySQL and `timestamp` (milliseconds, UTC) in Cassandra: the same precision on
both sides, so nothing is silently truncated. Decimals are DECIMAL on both sides (never float, never text).
"""

from __future__ import annotations

from dataclasses import dataclass

LEGACY_SCHEMA_VERSION = 2  # 2: write_queue_state, write_path_applied (the application's write path)
CASSANDRA_SCHEMA_VERSION = 3  # 2: cdc_checkpoints (online mode's binlog positions); 3: write_path_applied

# Arrow/pandas-level kinds shared by export, transform, load and compare.
KINDS = ("bigint", "int", "tinyint", "text", "decimal", "timestamp", "date")

ENTITY_TYPES = ("subscription", "plan_change", "invoice", "payment", "balance_txn")
SUBSCRIPTION_STATUSES = ("active", "on_hold", "cancelled")
CUSTOMER_STATUSES = ("active", "on_hold", "cancelled", "never_subscribed")
INVOICE_STATUSES = ("pending", "paid", "declined", "refunded", "charged_back")
PAYMENT_METHODS = ("card", "paypal", "gift_card", "direct_debit")
PAYMENT_STATUSES = ("succeeded", "failed", "refunded", "charged_back")
BALANCE_KINDS = ("gift_card_redemption", "promo_credit", "invoice_credit")
PLAN_QUALITIES = ("SD", "HD", "UHD")

# ISO 4217 currencies the business bills in, with their minor units (decimal places).
CURRENCY_MINOR_UNITS = {
    "USD": 2, "BRL": 2, "GBP": 2, "EUR": 2, "JPY": 0, "INR": 2, "MXN": 2, "CAD": 2, "SEK": 2, "NZD": 2,
    "CHF": 2, "AUD": 2, "KRW": 0, "PLN": 2, "NOK": 2, "DKK": 2, "ARS": 2, "COP": 2, "CLP": 0, "ZAR": 2,
}

DECIMAL_PRECISION, DECIMAL_SCALE = 14, 4  # legacy DECIMAL(14,4): the app allowed 4 places


@dataclass(frozen=True)
class Column:
    name: str
    sql: str  # MySQL column type
    kind: str  # one of KINDS
    nullable: bool = True
    max_len: int | None = None  # characters, for VARCHAR/CHAR

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind


@dataclass(frozen=True)
class Table:
    name: str
    key: str  # primary key column
    columns: tuple[Column, ...]
    entity: str | None  # entity_type in customer_billing; None for customers (static) and plans
    parents: tuple[tuple[str, str], ...] = ()  # (fk column, parent table)
    indexes: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _id(name: str, nullable: bool = False) -> Column:
    return Column(name, "BIGINT UNSIGNED", "bigint", nullable)


def _ts(name: str, nullable: bool = False) -> Column:
    return Column(name, "DATETIME(3)", "timestamp", nullable)


def _money(name: str, nullable: bool = False) -> Column:
    return Column(name, f"DECIMAL({DECIMAL_PRECISION},{DECIMAL_SCALE})", "decimal", nullable)


def _str(name: str, n: int, nullable: bool = False, fixed: bool = False) -> Column:
    return Column(name, f"{'CHAR' if fixed else 'VARCHAR'}({n})", "text", nullable, n)


UPDATED_AT = _ts("updated_at")

PLANS = Table(
    "plans", "plan_id",
    (
        Column("plan_id", "INT UNSIGNED", "int", False),
        _str("country", 2, fixed=True),
        _str("currency", 3, fixed=True),
        _str("name", 64),
        _money("price"),
        Column("screens", "TINYINT UNSIGNED", "tinyint", False),
        _str("quality", 8),
        UPDATED_AT,
    ),
    entity=None,
    indexes=("KEY ix_plans_country (country, plan_id)",),
)

CUSTOMERS = Table(
    "customers", "customer_id",
    (
        _id("customer_id"),
        _str("country", 2, fixed=True),
        _str("email", 254, nullable=True),
        _str("full_name", 255, nullable=True),
        _str("status", 16),
        _ts("signup_at"),
        Column("billing_day", "TINYINT UNSIGNED", "tinyint", False),
        UPDATED_AT,
    ),
    entity=None,
    indexes=("KEY ix_customers_country (country, customer_id)",),
)

SUBSCRIPTIONS = Table(
    "subscriptions", "subscription_id",
    (
        _id("subscription_id"),
        _id("customer_id"),
        Column("plan_id", "INT UNSIGNED", "int", False),
        _str("status", 16),
        _ts("started_at"),
        _ts("cancelled_at", nullable=True),
        Column("next_billing_date", "DATE", "date", True),
        UPDATED_AT,
    ),
    entity="subscription",
    parents=(("customer_id", "customers"), ("plan_id", "plans")),
    indexes=("KEY ix_subscriptions_customer (customer_id)",),
)

PLAN_CHANGES = Table(
    "plan_changes", "change_id",
    (
        _id("change_id"),
        _id("customer_id"),
        _id("subscription_id"),
        Column("from_plan_id", "INT UNSIGNED", "int", False),
        Column("to_plan_id", "INT UNSIGNED", "int", False),
        _ts("changed_at"),
        UPDATED_AT,
    ),
    entity="plan_change",
    parents=(("customer_id", "customers"), ("subscription_id", "subscriptions")),
    indexes=("KEY ix_plan_changes_customer (customer_id)",),
)

INVOICES = Table(
    "invoices", "invoice_id",
    (
        _id("invoice_id"),
        _id("customer_id"),
        _id("subscription_id"),
        Column("period_start", "DATE", "date", False),
        Column("period_end", "DATE", "date", False),
        _money("amount"),
        _money("tax"),
        _str("currency", 3, nullable=True, fixed=True),
        _str("status", 16),
        _ts("created_at"),
        UPDATED_AT,
    ),
    entity="invoice",
    parents=(("customer_id", "customers"), ("subscription_id", "subscriptions")),
    indexes=("KEY ix_invoices_customer (customer_id)", "KEY ix_invoices_natural (subscription_id, period_start)"),
)

PAYMENTS = Table(
    "payments", "payment_id",
    (
        _id("payment_id"),
        _id("customer_id"),
        _id("invoice_id"),
        _str("method", 16),
        _str("payment_token", 64, nullable=True),
        _money("amount"),
        _str("currency", 3, nullable=True, fixed=True),
        _str("status", 16),
        _ts("processed_at"),
        UPDATED_AT,
    ),
    entity="payment",
    parents=(("customer_id", "customers"), ("invoice_id", "invoices")),
    indexes=("KEY ix_payments_customer (customer_id)", "KEY ix_payments_invoice (invoice_id)"),
)

BALANCE_TRANSACTIONS = Table(
    "balance_transactions", "txn_id",
    (
        _id("txn_id"),
        _id("customer_id"),
        _str("kind", 24),
        _money("amount"),  # signed: credits added > 0, credits applied to an invoice < 0
        _str("currency", 3, nullable=True, fixed=True),
        _id("invoice_id", nullable=True),
        _str("reference", 64, nullable=True),
        _ts("created_at"),
        UPDATED_AT,
    ),
    entity="balance_txn",
    parents=(("customer_id", "customers"), ("invoice_id", "invoices")),
    indexes=("KEY ix_balance_customer (customer_id)",),
)

# Parent before child: the order DDL is applied, data is seeded and partitions are assembled.
TABLES: tuple[Table, ...] = (PLANS, CUSTOMERS, SUBSCRIPTIONS, PLAN_CHANGES, INVOICES, PAYMENTS, BALANCE_TRANSACTIONS)
TABLES_BY_NAME = {t.name: t for t in TABLES}
ENTITY_TABLES: tuple[Table, ...] = tuple(t for t in TABLES if t.entity)
TABLE_BY_ENTITY = {t.entity: t for t in ENTITY_TABLES}
# Tables read per customer-id range (every one but plans, which is reference data read per country).
CUSTOMER_TABLES: tuple[Table, ...] = tuple(t for t in TABLES if t.name != "plans")


def _create_table_sql(t: Table) -> str:
    cols = [f"  `{c.name}` {c.sql} {'NULL' if c.nullable else 'NOT NULL'}" for c in t.columns]
    cols.append(f"  PRIMARY KEY (`{t.key}`)")
    cols += [f"  {ix}" for ix in t.indexes]
    cols += [
        f"  CONSTRAINT fk_{t.name}_{col} FOREIGN KEY (`{col}`) REFERENCES `{parent}` "
        f"(`{TABLES_BY_NAME[parent].key}`)"
        for col, parent in t.parents
    ]
    body = ",\n".join(cols)
    return (f"CREATE TABLE IF NOT EXISTS `{t.name}` (\n{body}\n) ENGINE=InnoDB "
            "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")


# The write gate and routing live in the legacy database: the legacy application reads them.
ROUTING_DDL = (
    """CREATE TABLE IF NOT EXISTS country_routing (
  country CHAR(2) NOT NULL PRIMARY KEY,
  serving_store ENUM('legacy','cassandra') NOT NULL DEFAULT 'legacy',
  writes_frozen TINYINT(1) NOT NULL DEFAULT 0,
  frozen_by VARCHAR(128) NULL,
  frozen_at DATETIME(3) NULL,
  freeze_run_id VARCHAR(250) NULL,
  cutover_at DATETIME(3) NULL,
  cutover_run_id VARCHAR(250) NULL,
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS write_gate_events (
  event_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  country CHAR(2) NOT NULL,
  action VARCHAR(16) NOT NULL,
  actor VARCHAR(128) NOT NULL,
  run_id VARCHAR(250) NULL,
  detail VARCHAR(1024) NULL,
  at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY ix_gate_country (country, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
)

# The application's write path (billing_migration.app): whether a country's writes are held on its queue
# (frozen, or queued writes not yet replayed), and per customer the last write sequence applied to this store
# by a queue consumer (replay, reverse sync), updated in the same transaction as the write itself.
WRITE_PATH_DDL = (
    """CREATE TABLE IF NOT EXISTS write_queue_state (
  country CHAR(2) NOT NULL PRIMARY KEY,
  holding TINYINT(1) NOT NULL DEFAULT 0,
  held_since DATETIME(3) NULL,
  held_by VARCHAR(250) NULL,
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS write_path_applied (
  customer_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  seq BIGINT UNSIGNED NOT NULL,
  idempotency_key VARCHAR(128) NOT NULL,
  applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
)

SCHEMA_VERSION_DDL = """CREATE TABLE IF NOT EXISTS schema_migrations (
  version INT NOT NULL PRIMARY KEY,
  applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB"""


def legacy_ddl() -> list[str]:
    """Every statement of the legacy schema, idempotent (IF NOT EXISTS), parents first."""
    return [SCHEMA_VERSION_DDL, *(_create_table_sql(t) for t in TABLES), *ROUTING_DDL, *WRITE_PATH_DDL]


def apply_legacy_schema(conn) -> int:
    """Apply the legacy DDL on a MySQLdb connection; records the version. Returns the version."""
    with conn.cursor() as cur:
        for stmt in legacy_ddl():
            cur.execute(stmt)
        cur.execute("INSERT IGNORE INTO schema_migrations (version) VALUES (%s)", (LEGACY_SCHEMA_VERSION,))
    conn.commit()
    return LEGACY_SCHEMA_VERSION


# ------------------------------------------------------------------------------------------ Cassandra
CQL_TYPES = {"bigint": "bigint", "int": "int", "tinyint": "tinyint", "text": "text", "decimal": "decimal",
             "timestamp": "timestamp", "date": "date"}

# Customer columns become static columns; their Cassandra names (status would clash with entity status).
CUSTOMER_STATIC = {
    "country": "country",
    "email": "email",
    "full_name": "full_name",
    "status": "customer_status",
    "signup_at": "signup_at",
    "billing_day": "billing_day",
    "updated_at": "customer_updated_at",
}


def entity_columns() -> dict[str, str]:
    """Union of every entity table's non-key columns -> CQL type (same name, same meaning in each table)."""
    out: dict[str, str] = {}
    for t in ENTITY_TABLES:
        for c in t.columns:
            if c.name in (t.key, "customer_id"):
                continue
            cql = CQL_TYPES[c.kind]
            assert out.setdefault(c.name, cql) == cql, f"{c.name} has two types"
    return out


def entity_row_columns(t: Table) -> list[str]:
    """Cassandra columns one entity table fills (besides customer_id, entity_type, entity_id, run_id)."""
    return [c.name for c in t.columns if c.name not in (t.key, "customer_id")]


CUSTOMERS_BY_COUNTRY_BUCKETS = 64  # spreads a country's customer index over 64 partitions


def cassandra_ddl(keyspace: str, replication: str | None = None) -> list[str]:
    """The Cassandra model, idempotent.

    - customer_billing: the migrated data (one customer = one partition).
    - plans: the country's plan catalogue, read by the renewal crawl for prices.
    - customers_by_country: index of a country's customers, so compare can find "extra" customers in the
      target and a reset can delete one country without scanning the whole table.
    - migration_ledger: per country, run and step (and chunk): state, counts, timings. What resume, the run
      report and operators read.
    - cdc_checkpoints: per country and run, the binlog positions the online mode's change reader has fully
      handled, furthest first, so a killed reader resumes from the furthest one (an older write arriving late
      cannot move it back).
    - write_path_applied: per customer, the last write sequence a queue consumer applied here (replay).
    Provenance: every row and every partition's static part carry the run id that wrote it (`run_id`,
    `customer_run_id`), so a bad run's writes can be found.
    """
    repl = replication or "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    static_cols = []
    for legacy_name, cql_name in CUSTOMER_STATIC.items():
        static_cols.append(f"  {cql_name} {CQL_TYPES[CUSTOMERS.column(legacy_name).kind]} static")
    static_cols.append("  customer_run_id text static")
    row_cols = [f"  {n} {t}" for n, t in entity_columns().items() if n != "updated_at"]
    row_cols += ["  updated_at timestamp", "  run_id text"]
    cols = ",\n".join(["  customer_id bigint", "  entity_type text", "  entity_id bigint",
                       *static_cols, *row_cols, "  PRIMARY KEY ((customer_id), entity_type, entity_id)"])
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {repl}",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.customer_billing (\n{cols}\n)",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.plans (
  country text, plan_id int, currency text, name text, price decimal, screens tinyint, quality text,
  updated_at timestamp, run_id text,
  PRIMARY KEY ((country), plan_id))""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.customers_by_country (
  country text, bucket int, customer_id bigint, run_id text,
  PRIMARY KEY ((country, bucket), customer_id))""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.migration_ledger (
  country text, run_id text, step text, part int,
  state text, started_at timestamp, ended_at timestamp, counts map<text, bigint>, detail text,
  PRIMARY KEY ((country), run_id, step, part))""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.cdc_checkpoints (
  country text, run_id text, log_seq bigint, log_pos bigint, log_file text, saved_at timestamp,
  counts map<text, bigint>,
  PRIMARY KEY ((country, run_id), log_seq, log_pos)) WITH CLUSTERING ORDER BY (log_seq DESC, log_pos DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.write_path_applied (
  customer_id bigint PRIMARY KEY, seq bigint, idempotency_key text, applied_at timestamp)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations (
  version int PRIMARY KEY, applied_at timestamp)""",
    ]


def apply_cassandra_schema(session, keyspace: str, replication: str | None = None) -> int:
    """Apply the Cassandra DDL (session need not be bound to the keyspace). Returns the version."""
    for stmt in cassandra_ddl(keyspace, replication):
        session.execute(stmt, timeout=60)
    session.execute(
        f"INSERT INTO {keyspace}.schema_migrations (version, applied_at) VALUES (%s, toTimestamp(now()))",
        (CASSANDRA_SCHEMA_VERSION,),
    )
    return CASSANDRA_SCHEMA_VERSION


def customer_bucket(customer_id: int) -> int:
    return customer_id % CUSTOMERS_BY_COUNTRY_BUCKETS
