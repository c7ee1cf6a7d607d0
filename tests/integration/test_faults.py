"""The fault matrix's CI subset (`scripts/faults --fast`) on the real stack, in a namespace of its own (created
and dropped by the matrix: the session's namespace holds other tests' rows, and a case must neither see them nor
leave its country's state to the tests after it):
kill -9 of the load task while the country is frozen (offline mode), the documented recovery and an independent
check of every row; the drift matrix on the country's snapshots; the security checks. The whole matrix, with
server faults that stop and restart services, is `scripts/faults` on a stack of one's own (RELIABILITY.md)."""

from __future__ import annotations


def test_fast_fault_matrix(cfg, legacy_db, cassandra_ks, s3, reset_routing):
    from billing_migration.devtools import faults

    try:
        results = faults.run_fast()
    finally:
        reset_routing("fault matrix done")
    table = faults.render(results, "scripts/faults --fast")
    by_case = {r.case: r for r in results}
    kill = by_case[faults.FAST_CASE]
    assert kill.outcome.startswith("frozen by a dead run"), table  # never stuck without the way out
    assert (kill.final, kill.lost, kill.duplicated, kill.altered, kill.extra, kill.money_match) == \
        ("cut_over", 0, 0, 0, 0, True), table
    drift = by_case["drift_matrix"].extra_figures
    assert all(k["detected"] == k["named"] == k["trials"] > 0 for k in drift["kinds"].values()), drift
    assert len(drift["kinds"]) >= 8 and drift["clean"]["alarms"] == 0
    checks = by_case["security"].extra_figures["checks"]
    assert [k for k, ok in checks.items() if not ok] == [], checks
    assert all(r.ok for r in results), table
