"""Load and validate `migration.yaml`, the one declarative file behind every DAG.

Validation runs at DAG-parse time so a typo in a country code or a chunk size breaks the import (and the
DAG integrity test), not a migration at 2 a.m.

`BM_NAMESPACE` (environment) isolates a whole installation: it suffixes the MySQL database, the Cassandra
keyspace and the S3 prefix, so test sessions and side-by-side environments never touch each other's data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

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


@dataclass(frozen=True)
class StageSettings:
    chunk_customers: int = 5000
    max_parallel_chunks: int = 4
    error_budget: int = 0
    rate_limit_rows_per_s: int = 0
    compare_rounds: int = 3
    load_concurrency: int = 64
    freeze_drain_timeout_s: int = 30

    def validate(self, where: str) -> StageSettings:
        limits = {
            "chunk_customers": (1, 1_000_000),
            "max_parallel_chunks": (1, 256),
            "error_budget": (0, 10**12),
            "rate_limit_rows_per_s": (0, 10**9),
            "compare_rounds": (1, 20),
            "load_concurrency": (1, 2048),
            "freeze_drain_timeout_s": (1, 3600),
        }
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ConfigError(f"{where}.{name} must be an integer in [{lo}, {hi}], got {value!r}")
        return self


@dataclass(frozen=True)
class Pool:
    name: str
    slots: int


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
    known = {f.name for f in fields(StageSettings)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return replace(base, **raw).validate(where)


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
    return Config(
        connections={k: str(v) for k, v in conns.items()},
        s3_bucket=os.environ.get("BM_S3_BUCKET") or str(raw.get("s3_bucket", "billing-migration")),
        mysql_database=db,
        cassandra_keyspace=ks,
        defaults=defaults,
        countries=countries,
        pools=pools,
        namespace=namespace,
    )


@lru_cache(maxsize=8)
def _load(path: str, namespace: str) -> Config:
    with open(path, encoding="utf-8") as fh:
        return parse(yaml.safe_load(fh), namespace)


def load_config(path: Path | str | None = None) -> Config:
    """The validated config; cached per (file, namespace) so DAG parsing reads the file once."""
    return _load(str(path or CONFIG_PATH), os.environ.get("BM_NAMESPACE", ""))
