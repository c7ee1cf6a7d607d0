"""The migration against a two-node Cassandra cluster with replication factor 2 (scripts/cassandra-cluster,
`make cassandra-cluster`; not in the default run: a second 1 GB node is too heavy for the 2-core CI host).
Skipped unless the connection reaches two nodes."""

from __future__ import annotations

import os
import time

import pytest

COUNTRY = "NZ"


@pytest.fixture(scope="module")
def cluster_cfg(cfg, cassandra_ks):
    from billing_migration.stores import connections

    with connections.cassandra_session(cfg, keyspace=False) as s:
        peers = list(s.execute("SELECT peer FROM system.peers_v2"))
    if not peers or cfg.cassandra.replication_factor < 2:
        pytest.skip("needs two Cassandra nodes and BM_CASSANDRA_REPLICATION_FACTOR=2 (scripts/cassandra-cluster)")
    return cfg


def _count_on(cfg, address: str, country: str) -> int:
    """Rows of the country's customers read from one node alone at consistency ONE: its own replica."""
    from billing_migration.stores import connections
    from billing_migration.stores.schema import CUSTOMERS_BY_COUNTRY_BUCKETS
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    port = connections.cassandra_cluster(cfg).port
    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([address]),
                               consistency_level=ConsistencyLevel.ONE)
    c = Cluster([address], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile}, protocol_version=5)
    try:
        s = c.connect(cfg.cassandra_keyspace)
        ids = [r.customer_id for b in range(CUSTOMERS_BY_COUNTRY_BUCKETS) for r in s.execute(
            "SELECT customer_id FROM customers_by_country WHERE country=%s AND bucket=%s", (country, b))]
        return sum(len(list(s.execute("SELECT entity_id FROM customer_billing WHERE customer_id=%s", (i,))))
                   for i in ids)
    finally:
        c.shutdown()


def test_migration_on_two_nodes_with_replication_factor_2(cluster_cfg, dags, fresh_countries):
    from billing_migration.country import compare
    from billing_migration.stores import connections, write_gate

    cfg = fresh_countries(int(os.environ.get("BM_CLUSTER_CUSTOMERS", "2000")), {COUNTRY: 1.0}, seed=5)
    with connections.cassandra_session(cfg, keyspace=False) as s:
        repl = s.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name=%s",
                         (cfg.cassandra_keyspace,)).one().replication
        assert repl["replication_factor"] == "2"
        hosts = s.cluster.metadata.all_hosts()
        assert len(hosts) == 2 and all(h.is_up for h in hosts)
        routing = s.cluster.metadata.get_replicas(cfg.cassandra_keyspace, (1).to_bytes(8, "big", signed=True))
        assert len(routing) == 2  # token-aware: the driver knows both replicas of a partition
    assert connections.consistency("write", cfg) == connections.consistency("read", cfg) == 6  # LOCAL_QUORUM

    t0 = time.monotonic()
    run = dags.get_dag(f"migrate_billing_{COUNTRY.lower()}").test(run_conf={
        "country": COUNTRY, "chunk_customers": 500, "parallelism": 2, "mode": "offline", "dry_run": False,
        "reset": "none", "error_budget": 0})
    seconds = time.monotonic() - t0
    assert str(getattr(run.state, "value", run.state)) == "success"
    assert write_gate.status(cfg, COUNTRY).cut_over
    res = compare.compare_range(cfg, COUNTRY, 0, 2**63 - 1)  # reads at LOCAL_QUORUM: both replicas
    assert compare.mismatching_customers(res) == [] and res.counts["customers_compared"] > 0
    on_1, on_2 = _count_on(cfg, "127.0.0.1", COUNTRY), _count_on(cfg, "127.0.0.2", COUNTRY)
    assert on_1 == on_2 > 0  # every row is on both nodes
    print(f"\n[cassandra-cluster] {res.counts['customers_compared']} customers migrated on 2 nodes (RF 2, "
          f"LOCAL_QUORUM) in {seconds:.1f} s; {on_1} rows on each node")
