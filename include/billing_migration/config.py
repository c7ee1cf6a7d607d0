"""Load and validate `migration.yaml`, the one declarative file behind every DAG.

Validation runs at DAG-parse time so a typo in a country code or a chunk size breaks the import (and the
DAG integrity test), not a migration at 2 a.m.

`BM_NAMESPACE` (environment) isolates a whole installation: it suffixes the MySQL database, the Cassandra
keyspace and the S3 prefix, so test sessions and side-by-side environments never touch each other's data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from billing_migration.stores.schema import ENTITY_TABLES

CONFIG_PATH = Path(__file__).with_name("migration.yaml")

# ISO 3166-1 alpha-2 codes officially assigned (2024). Kept here so validation needs no extra package.
ISO_COUNTRIES = frozenset([
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB",
    "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY",
    "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX",
    "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK",
    "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS",
    "GT", "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR",
    "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA",
    "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE",
    "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM",
    "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG",
    "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF",
    "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY",
    "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
])

_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class ConfigError(ValueError):
    """The declarative config (or a run's params) is invalid; nothing has been touched."""


def _int(default: int, lo: int, hi: int, title: str, description: str) -> Any:
    return Field(default, ge=lo, le=hi, strict=True, title=title, description=description)


class StageSettings(BaseModel):
    """Every per-country setting with its limits: the one source for migration.yaml validation, the DAG
    Params (type, range, title, description, default) and the run-param check."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_customers: int = _int(5000, 100, 1_000_000, "Chunk size (customers)",
                                "Customers per export/transform/load chunk (a keyset range of customer_id).")
    max_parallel_chunks: int = _int(4, 1, 64, "Parallel lanes",
                                    "Mapped task instances per stage; each lane takes every N-th chunk.")
    error_budget: int = _int(0, 0, 10**12, "Error budget",
                             "Rejected records allowed before the run stops, before any Cassandra write "
                             "(0: any reject stops it).")
    rate_limit_rows_per_s: int = _int(0, 0, 10**9, "Rate limit (rows/s per lane)",
                                      "Cassandra writes per second per lane; 0 = unthrottled. Protects a "
                                      "production cluster.")
    compare_rounds: int = _int(3, 1, 20, "Compare rounds",
                               "compare → re-migrate mismatching customers → compare again, at most this often.")
    load_concurrency: int = _int(64, 1, 2048, "In-flight writes per lane", "Concurrent Cassandra writes per lane.")
    freeze_drain_timeout_s: int = _int(30, 1, 3600, "Freeze drain timeout (s)",
                                       "How long the freeze waits for in-flight legacy transactions.")
    # ---- online mode (the "online" pipeline's settings; its code reads them from here) ----
    mode: Literal["online", "offline"] = Field(
        "online", title="Mode",
        description="online: copy while the country stays writable, then freeze only for a short catch-up; "
                    "offline: freeze writes for the whole copy.")
    freeze_budget_s: int = _int(30, 1, 3600, "Freeze budget (s)",
                                "Online mode: longest acceptable write freeze for the final catch-up.")
    catchup_max_customers: int = _int(200, 0, 1_000_000, "Catch-up limit (customers)",
                                      "Online mode: customers changed since the copy above which the run "
                                      "catches up again before freezing.")
    catchup_max_rounds: int = _int(10, 1, 100, "Catch-up rounds",
                                   "Online mode: catch-up rounds before the run gives up.")


def _allowed(name: str, model: type[BaseModel] = StageSettings) -> str:
    """The allowed values of a field in words, from the model's own constraints."""
    info = model.model_fields[name]
    if get_origin(info.annotation) is Literal:
        return f"one of {list(get_args(info.annotation))}"
    if info.annotation is bool:
        return "true or false"
    lo = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    hi = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    return f"an integer in [{lo}, {hi}]" if info.annotation is int else str(info.annotation)


def model_errors(exc: ValidationError, where: str, model: type[BaseModel]) -> ConfigError:
    """One readable ConfigError for a pydantic error: each bad value with its allowed range."""
    known = sorted(model.model_fields)
    msgs = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            msgs.append(f"{where}: unknown setting {name!r}; known: {known}")
        elif name in model.model_fields:
            msgs.append(f"{where}.{name} must be {_allowed(name, model)}, got {err.get('input')!r}")
        else:
            msgs.append(f"{where}: {err['msg']}")
    return ConfigError("; ".join(msgs))


RESET_CHOICES: tuple[str, ...] = ("none", "country", *(t.name for t in ENTITY_TABLES))
# Run params keep their established names where they differ from the setting they override.
PARAM_NAMES = {"max_parallel_chunks": "parallelism"}


class RunParams(StageSettings):
    """One run's params: every setting (defaults from the country's) plus what only a run decides."""

    country: str = Field(title="Country")
    reset: Literal[RESET_CHOICES] = Field(  # type: ignore[valid-type]
        "none", title="Reset target",
        description="Delete this country's target data (or one table's) before loading. Ignored on a dry run.")
    dry_run: bool = Field(
        False, strict=True, title="Dry run",
        description="Export and validate only. Writes nothing but this run's S3 prefix and its own ledger "
                    "rows: no freeze, no reset, no target data written or deleted, no routing flip.")

    @property
    def parallelism(self) -> int:
        return self.max_parallel_chunks

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


def param_names() -> list[str]:
    """The keys a run's conf may carry (sorted)."""
    return sorted(PARAM_NAMES.get(n, n) for n in RunParams.model_fields)


def run_params(country: str, settings: StageSettings, conf: dict[str, Any]) -> RunParams:
    """Validate a run's conf against the model: unknown keys refused (naming the valid ones), every value
    typed and in range, defaults from the country's settings."""
    unknown = sorted(set(conf) - set(param_names()))
    if unknown:
        raise ConfigError(f"unknown param(s) {unknown}; valid params: {param_names()}")
    by_field = {n: conf[PARAM_NAMES.get(n, n)] for n in RunParams.model_fields
                if conf.get(PARAM_NAMES.get(n, n)) is not None}
    try:
        return RunParams.model_validate({**settings.model_dump(), **by_field, "country": country})
    except ValidationError as exc:
        err = model_errors(exc, "param", RunParams)
        for field_name, param in PARAM_NAMES.items():
            err = ConfigError(str(err).replace(f"param.{field_name} ", f"param.{param} "))
        raise err from None


def _warning(name: str, country: str) -> str:
    """What a param means for the country's production writes, shown first in the trigger form."""
    return {
        "country": f"The country this DAG migrates (fixed). Triggering it FREEZES production billing writes for "
                   f"{country}: the application's writes to {country} are refused (it retries) while frozen; a "
                   f"successful run leaves {country} served by Cassandra with legacy frozen as the rollback copy, "
                   f"a failed one unfreezes {country} on legacy. Other countries are never affected. Dry run: no "
                   "freeze.",
        "mode": f"Expected freeze of {country}'s writes: online, a few seconds at the end (only the changes of "
                "the last seconds are migrated while frozen, within freeze_budget_s); offline, the WHOLE copy "
                "(from begin to cutover, minutes to hours with the country's size).",
        "freeze_budget_s": f"Online mode: the longest {country} may stay frozen. The run estimates the freeze "
                           "before freezing and refuses if it would exceed this; frozen, it unfreezes and fails "
                           "past it. Offline mode ignores it (frozen for the whole copy).",
        "catchup_max_customers": "Sets the backlog migrated while frozen (online mode): higher freezes sooner "
                                 "but longer.",
        "freeze_drain_timeout_s": "Counts toward the freeze: writes are already refused while it waits.",
        "reset": f"DELETES {country}'s data (or one table's) in Cassandra before loading.",
    }.get(name, "")


def param_specs(country: str, settings: StageSettings) -> dict[str, dict[str, Any]]:
    """Keyword arguments of each DAG `Param`, generated from the model (no Airflow import here)."""
    defaults = {**settings.model_dump(), "country": country, "reset": "none", "dry_run": False}
    specs: dict[str, dict[str, Any]] = {}
    for name, info in RunParams.model_fields.items():
        spec: dict[str, Any] = {"default": defaults[name], "title": info.title}
        allowed = _allowed(name, RunParams)
        if name == "country":
            spec.update(type="string", enum=[country])
        elif get_origin(info.annotation) is Literal:
            spec.update(type="string", enum=list(get_args(info.annotation)))
        elif info.annotation is bool:
            spec.update(type="boolean")
        else:
            spec["type"] = "integer"
            for m in info.metadata:
                if hasattr(m, "ge"):
                    spec["minimum"] = m.ge
                if hasattr(m, "le"):
                    spec["maximum"] = m.le
        parts = [_warning(name, country), info.description or "",
                 "" if name == "country" else f"Allowed: {allowed}."]
        spec["description"] = " ".join(p for p in parts if p)
        specs[PARAM_NAMES.get(name, name)] = spec
    return specs


# ---- canary waves (the migration_waves DAG; its logic is billing_migration.waves) ----
CANARY_MAX_COUNTRIES = 2


class WaveSpec(BaseModel):
    """One wave: a name and the countries migrated in it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")
    countries: list[str] = Field(min_length=1)


class WavesSettings(BaseModel):
    """`waves:` of migration.yaml: the order countries move in, and the defaults of the wave DAG's params."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = _int(2, 1, 32, "Countries at once", "Countries of a wave migrating at the same time.")
    max_rejects: int = _int(0, 0, 10**12, "Rejects per country",
                            "Halt the waves when a country's run rejected more records than this.")
    halt_on_drift: bool = Field(True, strict=True, title="Halt on drift",
                                description="Reconcile the countries a wave cut over (whole-country compare of "
                                            "the frozen legacy copy and Cassandra) and halt on any difference.")
    poke_interval_s: int = _int(10, 1, 600, "Poll interval (s)", "How often a wave checks its country runs.")
    plan: list[WaveSpec] = Field(min_length=1)


def _waves(raw: Any, countries: dict[str, StageSettings]) -> WavesSettings | None:
    """Validate `waves:`: a canary first (at most CANARY_MAX_COUNTRIES), configured countries, each once."""
    if raw is None:
        return None
    try:
        w = WavesSettings.model_validate(raw)
    except ValidationError as exc:
        raise model_errors(exc, "waves", WavesSettings) from None
    if w.plan[0].name != "canary" or len(w.plan[0].countries) > CANARY_MAX_COUNTRIES:
        raise ConfigError(f"waves.plan: the first wave must be named 'canary' and hold at most "
                          f"{CANARY_MAX_COUNTRIES} countries, got {w.plan[0].name!r} with {w.plan[0].countries}")
    seen: dict[str, str] = {}
    for spec in w.plan:
        for code in spec.countries:
            if code not in countries:
                raise ConfigError(f"waves.plan.{spec.name}: {code!r} is not a configured country "
                                  f"(countries: {sorted(countries)})")
            if code in seen:
                raise ConfigError(f"waves.plan: {code} is in wave {seen[code]!r} and in {spec.name!r}")
            seen[code] = spec.name
    if len({s.name for s in w.plan}) != len(w.plan):
        raise ConfigError(f"waves.plan: wave names must be unique, got {[s.name for s in w.plan]}")
    return w


# ---- Cassandra cluster settings (`cassandra:` of migration.yaml) ----
CONSISTENCY_LEVELS = ("ONE", "TWO", "QUORUM", "LOCAL_QUORUM", "LOCAL_ONE", "EACH_QUORUM", "ALL")


class CassandraSettings(BaseModel):
    """Consistency of the migration's writes and reads, and the keyspace's replication factor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    write_consistency: Literal[CONSISTENCY_LEVELS] = Field(  # type: ignore[valid-type]
        "LOCAL_QUORUM", title="Write consistency", description="Load and re-migration writes.")
    read_consistency: Literal[CONSISTENCY_LEVELS] = Field(  # type: ignore[valid-type]
        "LOCAL_QUORUM", title="Read consistency", description="Compare, snapshot and every other read.")
    replication_factor: int = _int(1, 1, 9, "Replication factor",
                                   "SimpleStrategy replication of a keyspace the migration creates "
                                   "(BM_CASSANDRA_REPLICATION_FACTOR overrides it).")

    @property
    def replication(self) -> str:
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {self.replication_factor}}}"


def _cassandra(raw: Any) -> CassandraSettings:
    raw = dict(raw or {})
    if os.environ.get("BM_CASSANDRA_REPLICATION_FACTOR"):
        raw["replication_factor"] = int(os.environ["BM_CASSANDRA_REPLICATION_FACTOR"])
    try:
        return CassandraSettings.model_validate(raw)
    except ValidationError as exc:
        raise model_errors(exc, "cassandra", CassandraSettings) from None


@dataclass(frozen=True)
class Pool:
    name: str
    slots: int


@dataclass(frozen=True)
class QueueSettings:
    """The write path's queues (migration.yaml `queues`): redrive and receive timings."""

    max_receive_count: int = 3
    visibility_timeout_s: int = 30
    retry_delay_s: int = 1
    receive_wait_s: int = 1


def _queue_settings(raw: Any) -> QueueSettings:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("queues must be a mapping")
    limits = {"max_receive_count": (1, 1000), "visibility_timeout_s": (1, 43200), "retry_delay_s": (0, 900),
              "receive_wait_s": (0, 20)}
    unknown = sorted(set(raw) - set(limits))
    if unknown:
        raise ConfigError(f"queues: unknown setting(s) {unknown}; known: {sorted(limits)}")
    for name, value in raw.items():
        lo, hi = limits[name]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ConfigError(f"queues.{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return QueueSettings(**raw)


@dataclass(frozen=True)
class Config:
    connections: dict[str, str]
    s3_bucket: str
    mysql_database: str
    cassandra_keyspace: str
    defaults: StageSettings
    countries: dict[str, StageSettings]
    pools: dict[str, Pool] = field(default_factory=dict)
    namespace: str = ""
    queues: QueueSettings = field(default_factory=QueueSettings)
    waves: WavesSettings | None = None
    cassandra: CassandraSettings = field(default_factory=CassandraSettings)
    progress_interval_s: float = 5.0  # seconds between progress lines of long work (billing_migration.progress)

    @property
    def s3_prefix(self) -> str:
        """Key prefix of everything this installation writes to S3."""
        return f"ns={self.namespace}/" if self.namespace else ""

    def country(self, code: str) -> StageSettings:
        code = normalize_country(code)
        if code not in self.countries:
            raise ConfigError(f"country {code!r} is not configured in {CONFIG_PATH.name}")
        return self.countries[code]


def normalize_country(code: Any) -> str:
    if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z]{2}", code.strip()):
        raise ConfigError(f"country must be an ISO 3166-1 alpha-2 code such as 'US', got {code!r}")
    up = code.strip().upper()
    if up not in ISO_COUNTRIES:
        raise ConfigError(f"{up!r} is not an ISO 3166-1 alpha-2 country code")
    return up


def _settings(raw: Any, base: StageSettings, where: str) -> StageSettings:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    try:
        return StageSettings.model_validate({**base.model_dump(), **raw})
    except ValidationError as exc:
        raise model_errors(exc, where, StageSettings) from None


def parse(raw: dict[str, Any], namespace: str = "") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("config must be a mapping")
    required_conns = {"mysql_export", "mysql_gate", "mysql_admin", "cassandra", "s3"}
    conns = raw.get("connections") or {}
    missing = required_conns - set(conns)
    if missing:
        raise ConfigError(f"connections: missing {sorted(missing)}")
    if namespace and not re.fullmatch(r"[a-z0-9_]{1,24}", namespace):
        raise ConfigError(f"BM_NAMESPACE must match [a-z0-9_]{{1,24}}, got {namespace!r}")
    suffix = f"_{namespace}" if namespace else ""
    db = str(raw.get("mysql_database", "billing")) + suffix
    ks = str(raw.get("cassandra_keyspace", "billing")) + suffix
    for name, value in (("mysql_database", db), ("cassandra_keyspace", ks)):
        if not _IDENT.match(value):
            raise ConfigError(f"{name} {value!r} is not a valid identifier")
    defaults = _settings(raw.get("defaults"), StageSettings(), "defaults")
    countries_raw = raw.get("countries") or {}
    if not countries_raw:
        raise ConfigError("countries: at least one country is required")
    countries: dict[str, StageSettings] = {}
    for code, overrides in countries_raw.items():
        cc = normalize_country(code)
        if cc != code:
            raise ConfigError(f"countries: write {code!r} as {cc!r}")
        countries[cc] = _settings(overrides, defaults, f"countries.{cc}")
    pools = {k: Pool(str(v["name"]), int(v["slots"])) for k, v in (raw.get("pools") or {}).items()}
    interval = raw.get("progress_interval_s", 5.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval <= 3600:
        raise ConfigError(f"progress_interval_s must be a number of seconds in (0, 3600], got {interval!r}")
    return Config(
        connections={k: str(v) for k, v in conns.items()},
        s3_bucket=os.environ.get("BM_S3_BUCKET") or str(raw.get("s3_bucket", "billing-migration")),
        mysql_database=db,
        cassandra_keyspace=ks,
        defaults=defaults,
        countries=countries,
        pools=pools,
        namespace=namespace,
        queues=_queue_settings(raw.get("queues")),
        waves=_waves(raw.get("waves"), countries),
        cassandra=_cassandra(raw.get("cassandra")),
        progress_interval_s=float(interval),
    )


@lru_cache(maxsize=8)
def _load(path: str, namespace: str) -> Config:
    with open(path, encoding="utf-8") as fh:
        return parse(yaml.safe_load(fh), namespace)


def load_config(path: Path | str | None = None) -> Config:
    """The validated config; cached per (file, namespace) so DAG parsing reads the file once."""
    return _load(str(path or CONFIG_PATH), os.environ.get("BM_NAMESPACE", ""))
