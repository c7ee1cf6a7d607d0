"""docker-compose.yaml cannot run here (no Docker engine); check it is valid and equivalent to the stack."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from billing_migration.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
STACK = (ROOT / "scripts" / "stack").read_text()


def test_has_the_celery_airflow_and_the_three_stores():
    services = set(COMPOSE["services"])
    assert {"postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "airflow-worker", "mysql", "cassandra", "seaweedfs"} <= services
    env = COMPOSE["services"]["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert COMPOSE["services"]["cassandra"]["image"].startswith("cassandra:5.0")


def test_depends_on_and_volumes_refer_to_defined_names():
    services = COMPOSE["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if not src.startswith("."):
                assert src in COMPOSE["volumes"], f"{name} mounts undeclared volume {src}"
            else:
                assert (ROOT / src).exists(), f"{name} mounts missing path {src}"


def test_same_connection_ids_as_the_config_and_the_local_stack():
    cfg = load_config()
    env = COMPOSE["services"]["airflow-scheduler"]["environment"]
    for conn_id in cfg.connections.values():
        var = f"AIRFLOW_CONN_{conn_id.upper()}"
        assert var in env, f"compose lacks {var}"
        assert f"export {var}=" in STACK, f"scripts/stack lacks {var}"
    for var in ("AIRFLOW_CONN_BILLING_S3", "AIRFLOW_CONN_BILLING_CASSANDRA"):
        json.loads(re.sub(r"\$\{[^}]*:-([^}]*)\}", r"\1", env[var]))


def test_images_are_pinned():
    for name, svc in COMPOSE["services"].items():
        image = svc.get("image", "")
        assert not image.endswith(":latest"), name
        assert ":" in image or "build" in svc, f"{name} image is not pinned"


def test_mysql_writes_the_row_binlog_the_change_reader_needs():
    flags = COMPOSE["services"]["mysql"]["command"]
    for flag in ("--server-id=1", "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL",
                 "--log-bin-trust-function-creators=1"):
        assert flag in flags, f"mysql lacks {flag}"
    assert any(f.startswith("--log-bin") for f in flags)
    assert "BM_MYSQL_CDC_PASSWORD" in COMPOSE["services"]["mysql"]["environment"]
    env = COMPOSE["services"]["airflow-worker"]["environment"]
    assert env["AIRFLOW_CONN_BILLING_MYSQL_CDC"].startswith("mysql://bm_cdc:")


def test_cdc_account_has_replication_and_select_only():
    init = (ROOT / "stack" / "compose" / "mysql-init.sh").read_text()
    grants = [line for line in init.splitlines() if line.startswith("GRANT") and "'bm_cdc'" in line]
    assert "CREATE USER IF NOT EXISTS 'bm_cdc'@'%' IDENTIFIED BY '${BM_MYSQL_CDC_PASSWORD}';" in init
    assert grants == ["GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'bm_cdc'@'%';",
                      "GRANT SELECT ON \\`billing%\\`.* TO 'bm_cdc'@'%';"]


def test_elasticmq_service_and_sqs_connection_match_the_stack():
    svc = COMPOSE["services"]["elasticmq"]
    assert svc["image"] == "softwaremill/elasticmq-native:1.6.11"
    assert "./stack/compose/elasticmq.conf:/opt/elasticmq.conf:ro" in svc["volumes"]
    assert COMPOSE["x-airflow-common"]["depends_on"]["elasticmq"] == {"condition": "service_healthy"}
    conn = json.loads(COMPOSE["services"]["airflow-worker"]["environment"]["AIRFLOW_CONN_BILLING_SQS"])
    assert conn["conn_type"] == "aws" and conn["extra"]["endpoint_url"] == "http://elasticmq:9324"
    conf = (ROOT / "stack" / "compose" / "elasticmq.conf").read_text()
    for setting in ("messages-storage { enabled = true", "queues-storage { enabled = true"):
        assert setting in conf and setting in STACK, f"queued writes must survive a restart: {setting}"
    assert 'SQS_PORT="${BM_SQS_PORT:-9324}"' in STACK and "org.elasticmq" in (
        ROOT / "stack" / "elasticmq" / "pom.xml").read_text()


def test_two_celery_workers_and_a_two_node_cassandra_like_the_local_scale_out():
    services = COMPOSE["services"]
    workers = [n for n, s in services.items() if "celery worker" in str(s.get("command", ""))]
    assert len(workers) == 2
    names = {services[w]["command"].split("--celery-hostname ")[1].split()[0] for w in workers}
    assert names == {"worker-a@%h", "worker-b@%h"}
    assert services["cassandra-2"]["environment"]["CASSANDRA_SEEDS"] == "cassandra"
    env = services["airflow-worker"]["environment"]
    assert json.loads(re.sub(r"\$\{[^}]*:-([^}]*)\}", r"\1", env["AIRFLOW_CONN_BILLING_CASSANDRA"]))["host"] == \
        "cassandra,cassandra-2"
    assert env["BM_CASSANDRA_REPLICATION_FACTOR"] == "2"
    assert "--celery" in STACK and "--cassandra-nodes" in STACK and "BM_REDIS_PORT" in STACK


def test_every_stack_service_port_comes_from_an_env_variable():
    for var in ("BM_MYSQL_PORT", "BM_CASSANDRA_PORT", "BM_S3_PORT", "BM_SQS_PORT", "BM_REDIS_PORT"):
        assert f"${{{var}:-" in STACK, var
