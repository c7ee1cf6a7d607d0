"""Canary waves: countries migrated wave by wave, each through its own `migrate_billing_<cc>` DAG run.

The canary wave goes first; a wave starts only once the previous one is cut over and reconciled. Inside a
wave at most `concurrency` countries migrate at once: the wave's countries are dealt into that many lanes
(mapped task instances), each lane running its countries one after the other. The waves halt — nothing more
is triggered, and the message names the country and the reason — on a failed country run, a run that
rejected more records than `max_rejects`, or drift found by the wave's reconciliation.

Every hand-off goes through S3 (`waves/run=<wave run>/`: one outcome per country, the halt record, one
reconciliation per wave) or XCom, never a local file, so lanes may run on any worker. A rerun skips the
countries already served by Cassandra (the routing table says so), so a halted wave resumes where it stopped.

A country run is started by a `Runner`: in the DAG, `airflow_runner` triggers the country's DAG run through
the task SDK (the same message TriggerDagRunOperator sends) and polls its state; tests pass a runner that
runs the same DAG in-process with dag.test(), which cannot run a triggered child run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from billing_migration.config import (
    Config,
    ConfigError,
    WavesSettings,
    _allowed,
    model_errors,
    normalize_country,
)
from billing_migration.stores import connections, s3io, write_gate

log = logging.getLogger(__name__)

# (country, run id wanted, conf) -> (run id actually used, final DAG run state)
Runner = Callable[[str, str, dict[str, Any]], tuple[str, str]]
HIGHEST_ID = 2**63 - 1


class WaveHalted(RuntimeError):
    """The waves stopped: the message names the country and the reason; nothing more is triggered."""


class WaveParams(BaseModel):
    """One run of the wave DAG: which waves and countries, how many at once, and the halt rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    waves: list[str] = Field([], title="Waves", description="Only these waves, in the configured order "
                                                             "(empty: every wave).")
    countries: list[str] = Field([], title="Countries", description="Only these countries of the selected "
                                                                     "waves (empty: all of them).")
    concurrency: int = Field(2, ge=1, le=32, strict=True, title="Countries at once",
                             description="Countries of a wave migrating at the same time.")
    max_rejects: int = Field(0, ge=0, le=10**12, strict=True, title="Rejects per country",
                             description="Halt when a country's run rejected more records than this.")
    halt_on_drift: bool = Field(True, strict=True, title="Halt on drift",
                                description="Reconcile each wave's countries before the next wave; halt on "
                                            "any difference.")
    poke_interval_s: int = Field(10, ge=1, le=600, strict=True, title="Poll interval (s)",
                                 description="How often a lane checks its country run.")
    country_conf: dict[str, Any] = Field({}, title="Country run conf",
                                         description="Params given to every country run (e.g. "
                                                     "{\"mode\": \"offline\", \"chunk_customers\": 2000}).")

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


def _settings(cfg: Config) -> WavesSettings:
    if cfg.waves is None:
        raise ConfigError("migration.yaml has no `waves:` section; declare the waves (canary first)")
    return cfg.waves


def param_specs(cfg: Config) -> dict[str, dict[str, Any]]:
    """Keyword arguments of each DAG `Param`, defaults from migration.yaml's `waves:`."""
    w = _settings(cfg)
    names = [s.name for s in w.plan]
    defaults = {"concurrency": w.concurrency, "max_rejects": w.max_rejects, "halt_on_drift": w.halt_on_drift,
                "poke_interval_s": w.poke_interval_s}
    specs: dict[str, dict[str, Any]] = {}
    for name, info in WaveParams.model_fields.items():
        spec: dict[str, Any] = {"default": defaults.get(name, info.default), "title": info.title,
                                "description": info.description}
        if name == "waves":
            spec.update(type="array", items={"type": "string", "enum": names},
                        description=f"{info.description} Waves: {names}.")
        elif name == "countries":
            spec.update(type="array", items={"type": "string", "pattern": "^[A-Za-z]{2}$"})
        elif name == "country_conf":
            spec["type"] = "object"
        elif info.annotation is bool:
            spec["type"] = "boolean"
        else:
            lo = next(m.ge for m in info.metadata if hasattr(m, "ge"))
            hi = next(m.le for m in info.metadata if hasattr(m, "le"))
            spec.update(type="integer", minimum=lo, maximum=hi,
                        description=f"{info.description} Allowed: {_allowed(name, WaveParams)}.")
        specs[name] = spec
    return specs


def validate_params(cfg: Config, conf: dict[str, Any]) -> WaveParams:
    """Refuse a bad wave run before anything is triggered: unknown keys, values out of range, unknown waves
    or countries, and a country conf that any of the countries' own DAGs would refuse."""
    from billing_migration.country import pipeline

    w = _settings(cfg)
    try:
        p = WaveParams.model_validate(conf)
    except ValidationError as exc:
        raise model_errors(exc, "param", WaveParams) from None
    names = [s.name for s in w.plan]
    unknown = [n for n in p.waves if n not in names]
    if unknown:
        raise ConfigError(f"param.waves: unknown wave(s) {unknown}; configured waves: {names}")
    chosen = [s for s in w.plan if not p.waves or s.name in p.waves]
    in_waves = {c for s in chosen for c in s.countries}
    countries = [normalize_country(c) for c in p.countries]
    outside = sorted(set(countries) - in_waves)
    if outside:
        raise ConfigError(f"param.countries: {outside} not in the selected waves {[s.name for s in chosen]}")
    if "country" in p.country_conf:
        raise ConfigError("param.country_conf must not set 'country': each run gets its own")
    for cc in sorted(in_waves):
        pipeline.validate_params(cfg, cc, {**p.country_conf, "country": cc})
    return p.model_copy(update={"countries": countries})


# ------------------------------------------------------------------------------------------ S3 layout
def wave_prefix(cfg: Config, wave_run_id: str) -> str:
    return f"{cfg.s3_prefix}waves/run={s3io.run_key(wave_run_id)}/"


def child_run_id(wave_run_id: str, country: str) -> str:
    return f"wave__{s3io.run_key(wave_run_id)}__{country.lower()}"


def _put(cfg: Config, key: str, obj: Any) -> None:
    s3io.put_json(connections.s3_client(cfg), cfg.s3_bucket, key, obj)


def halt_record(cfg: Config, wave_run_id: str) -> dict[str, Any] | None:
    client, key = connections.s3_client(cfg), wave_prefix(cfg, wave_run_id) + "halt.json"
    return s3io.get_json(client, cfg.s3_bucket, key) if s3io.exists(client, cfg.s3_bucket, key) else None


def halt(cfg: Config, wave_run_id: str, wave: str, country: str, reason: str) -> WaveHalted:
    """Record the halt (the first one wins) and return the exception to raise."""
    first = halt_record(cfg, wave_run_id)
    msg = f"waves halted at {country} (wave {wave}): {reason}; no further country is started"
    if first is None:
        _put(cfg, wave_prefix(cfg, wave_run_id) + "halt.json",
             {"wave": wave, "country": country, "reason": reason, "message": msg,
              "at": datetime.now(UTC).isoformat()})
    log.error(msg)
    return WaveHalted(msg)


def outcomes(cfg: Config, wave_run_id: str) -> dict[str, dict[str, Any]]:
    client = connections.s3_client(cfg)
    keys = s3io.list_keys(client, cfg.s3_bucket, wave_prefix(cfg, wave_run_id) + "outcomes/")
    return {k.rsplit("/", 1)[-1].removesuffix(".json"): s3io.get_json(client, cfg.s3_bucket, k) for k in keys}


# ------------------------------------------------------------------------------------------ plan and lanes
def plan(cfg: Config, p: WaveParams) -> list[dict[str, Any]]:
    """Per selected wave: the countries to run and those skipped because they are already cut over."""
    out = []
    for spec in _settings(cfg).plan:
        if p.waves and spec.name not in p.waves:
            continue
        wanted = [c for c in spec.countries if not p.countries or c in p.countries]
        done = {s.country for s in write_gate.statuses(cfg, wanted) if s.cut_over}
        out.append({"wave": spec.name, "run": [c for c in wanted if c not in done],
                    "already_cut_over": [c for c in wanted if c in done]})
        if done:
            log.info("wave %s: %s already cut over (skipped)", spec.name, sorted(done))
    return out


def lanes(waves_plan: list[dict[str, Any]], wave: str, concurrency: int) -> list[dict[str, Any]]:
    """The wave's countries dealt into at most `concurrency` lanes (lane k: countries k, k+N, ...)."""
    countries = next((w["run"] for w in waves_plan if w["wave"] == wave), [])
    n = min(concurrency, len(countries))
    return [{"wave": wave, "lane": k, "countries": countries[k::n]} for k in range(n)]


# ------------------------------------------------------------------------------------------ one lane
def _rejects(rep: dict[str, Any]) -> int:
    st = rep.get("stages", {})
    counts = st.get("error_budget", {}).get("counts") or st.get("transform", {}).get("counts") or {}
    return int(counts.get("rejects", 0))


def _report(cfg: Config, country: str, run_id: str) -> dict[str, Any] | None:
    client, key = connections.s3_client(cfg), s3io.run_prefix(cfg, country, run_id) + "report.json"
    return s3io.get_json(client, cfg.s3_bucket, key) if s3io.exists(client, cfg.s3_bucket, key) else None


def judge(cfg: Config, p: WaveParams, country: str, run_id: str, state: str) -> dict[str, Any]:
    """The outcome of one country run, with `halt_reason` set when the waves must stop."""
    rep = _report(cfg, country, run_id) or {}
    gate = write_gate.status(cfg, country)
    out = {"country": country, "run_id": run_id, "state": state, "outcome": rep.get("outcome"),
           "rejects": _rejects(rep), "serving_store": gate.serving_store, "halt_reason": None,
           "report": rep.get("artifacts", "")}
    if state != "success" or not gate.cut_over:
        where = rep.get("failed_tasks") or rep.get("failed_steps") or ["?"]
        errors = [e for s in rep.get("stages", {}).values() for e in s.get("errors", [])]
        out["halt_reason"] = (f"run {run_id} of migrate_billing_{country.lower()} ended {state} at {where[0]}"
                              f"{': ' + str(errors[0])[:300] if errors else ''}; {country} is served by "
                              f"{gate.serving_store} (report: {out['report'] or 'none'})")
    elif out["rejects"] > p.max_rejects:
        out["halt_reason"] = (f"run {run_id} rejected {out['rejects']} record(s), over the waves' limit of "
                              f"{p.max_rejects} per country (rejects under {out['report']}rejects/)")
    return out


def run_lane(cfg: Config, p: WaveParams, wave_run_id: str, lane: dict[str, Any], runner: Runner) -> dict:
    """Run the lane's countries one after the other; stop before each one if the waves are halted."""
    done: list[str] = []
    for country in lane["countries"]:
        if halt_record(cfg, wave_run_id):
            log.info("wave %s lane %s: halted; %s not started", lane["wave"], lane["lane"], country)
            break
        if write_gate.status(cfg, country).cut_over:  # cut over meanwhile (a cleared lane, or by hand)
            done.append(country)
            continue
        t0 = time.monotonic()
        try:
            run_id, state = runner(country, child_run_id(wave_run_id, country),
                                   {**p.country_conf, "country": country})
        except WaveHalted as exc:
            raise halt(cfg, wave_run_id, lane["wave"], country, str(exc)) from None
        except Exception as exc:  # could not start or follow the run: halt too, so no other lane goes on
            raise halt(cfg, wave_run_id, lane["wave"], country,
                       f"could not run migrate_billing_{country.lower()}: {type(exc).__name__}: {exc}") from exc
        out = {**judge(cfg, p, country, run_id, state), "wave": lane["wave"],
               "seconds": round(time.monotonic() - t0, 1)}
        _put(cfg, wave_prefix(cfg, wave_run_id) + f"outcomes/{country}.json", out)
        if out["halt_reason"]:
            raise halt(cfg, wave_run_id, lane["wave"], country, out["halt_reason"])
        log.info("wave %s: %s cut over by %s in %.1f s", lane["wave"], country, run_id, out["seconds"])
        done.append(country)
    return {"wave": lane["wave"], "lane": lane["lane"], "cut_over": done}


# ------------------------------------------------------------------------------------------ wave gate
def reconcile_country(cfg: Config, country: str, run_id: str) -> dict[str, Any]:
    """Whole-country compare of the frozen legacy copy and Cassandra (records the run rejected excluded)."""
    from billing_migration.country import compare, pipeline

    res = compare.compare_range(cfg, country, 0, HIGHEST_ID,
                                quarantined=pipeline.quarantined_keys(cfg, country, run_id))
    bad = compare.mismatching_customers(res)
    key = ""
    if bad:
        key = compare.write_mismatches(cfg, country, f"{run_id}__wave_reconcile", 0, res)
    return {"country": country, "customers_compared": res.counts.get("customers_compared", 0),
            "mismatching_customers": len(bad), "examples": bad[:5], "mismatches": key}


def close_wave(cfg: Config, p: WaveParams, wave_run_id: str, wave: str) -> dict[str, Any]:
    """Before the next wave: every country this wave ran must be cut over and, with halt_on_drift, reconcile
    clean. Records the result on S3; raises WaveHalted naming the country otherwise."""
    if (h := halt_record(cfg, wave_run_id)) is not None:
        raise WaveHalted(h["message"])
    ran = {c: o for c, o in outcomes(cfg, wave_run_id).items() if o.get("wave") == wave}
    results = []
    for country, o in sorted(ran.items()):
        if not p.halt_on_drift:
            break
        r = reconcile_country(cfg, country, o["run_id"])
        results.append(r)
        if r["mismatching_customers"]:
            _put(cfg, wave_prefix(cfg, wave_run_id) + f"reconcile/{wave}.json", results)
            raise halt(cfg, wave_run_id, wave, country,
                       f"drift after cut-over: {r['mismatching_customers']} customer(s) differ between the "
                       f"legacy copy and Cassandra, e.g. {r['examples']} (mismatches: s3://{cfg.s3_bucket}/"
                       f"{r['mismatches']})")
    _put(cfg, wave_prefix(cfg, wave_run_id) + f"reconcile/{wave}.json", results)
    log.info("wave %s closed: %s cut over%s", wave, sorted(ran) or "no country",
             ", reconciled clean" if p.halt_on_drift and ran else "")
    return {"wave": wave, "countries": sorted(ran), "reconciled": results}


def summary(cfg: Config, wave_run_id: str, waves_plan: list[dict[str, Any]] | None,
            task_states: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's outcome per country; fails with the halt message if the waves halted (or, without one,
    naming the tasks that failed)."""
    outs = outcomes(cfg, wave_run_id)
    if (h := halt_record(cfg, wave_run_id)) is not None:
        raise WaveHalted(h["message"])
    failed = sorted(t for t, st in (task_states or {}).items() if st in ("failed", "upstream_failed"))
    if failed:
        raise WaveHalted(f"waves stopped: task(s) {failed} did not succeed (see their logs)")
    lines = [f"{w['wave']}: ran {w['run'] or '-'}, already cut over {w['already_cut_over'] or '-'}"
             for w in waves_plan or []]
    log.info("waves done:\n%s", "\n".join(lines))
    return {"plan": waves_plan, "outcomes": outs}


# ------------------------------------------------------------------------------------------ Airflow runner
def _state(value: Any) -> str:
    """A DAG run state as its plain value (the task SDK returns an Enum whose str() is 'DagRunState.X')."""
    return str(getattr(value, "value", value))


def airflow_runner(ti: Any, poke_interval_s: int) -> Runner:
    """Trigger the country's DAG run through the task SDK and wait for it (what TriggerDagRunOperator with
    wait_for_completion does, once per country of the lane); the run keeps its own history and UI."""
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import ErrorResponse, TriggerDagRun

    def run(country: str, run_id: str, conf: dict[str, Any]) -> tuple[str, str]:
        dag_id = f"migrate_billing_{country.lower()}"
        if ti.get_dag(dag_id).is_paused:
            raise WaveHalted(f"{dag_id} is paused: its run would never start; unpause it and rerun")
        run_id = f"{run_id}__try{ti.try_number}"  # a cleared lane starts a fresh country run
        now = datetime.now(UTC)
        msg = task_runner.SUPERVISOR_COMMS.send(TriggerDagRun(dag_id=dag_id, run_id=run_id, conf=conf,
                                                              logical_date=now, run_after=now))
        if isinstance(msg, ErrorResponse) and msg.error != ErrorType.DAGRUN_ALREADY_EXISTS:
            raise RuntimeError(f"could not trigger {dag_id}: {msg.error} {msg.detail}")
        log.info("triggered %s run %s", dag_id, run_id)
        while (state := _state(ti.get_dagrun_state(dag_id, run_id))) not in ("success", "failed"):
            time.sleep(poke_interval_s)
        return run_id, state

    return run


def run_inline(cfg: Config, conf: dict[str, Any], wave_run_id: str, runner: Runner) -> dict[str, Any]:
    """The DAG's task sequence without a scheduler (tests, drills), the lanes of a wave one after the other:
    validate → plan → per wave: lanes → run_lane → close_wave → summary. Raises WaveHalted like the DAG."""
    p = validate_params(cfg, conf)
    waves_plan = plan(cfg, p)
    try:
        for w in waves_plan:
            for lane in lanes(waves_plan, w["wave"], p.concurrency):
                run_lane(cfg, p, wave_run_id, lane, runner)
            close_wave(cfg, p, wave_run_id, w["wave"])
    except WaveHalted:
        pass  # summary raises the recorded halt, as the DAG's summary task does
    return summary(cfg, wave_run_id, waves_plan)
