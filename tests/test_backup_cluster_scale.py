"""Issue 19's "Must show" for several processes, small enough for CI: two ``p2psync backup
run`` processes on one PostgreSQL database, 20 devices in 5 spaces (each space with devices
on both processes) pushing at once; then the first process is SIGKILLed mid-burst.
``scripts/bench_cluster.py`` runs the same scenario (tests/cluster_scenario.py) and reports
the figures (docs/backup-cluster.md)."""

from __future__ import annotations

from pathlib import Path

from tests.cluster_scenario import run_scenario, start_cluster
from tests.netns import JsonLinesProcess
from tests.pg import fresh_schema, pg_server  # noqa: F401  (a fixture)


async def test_two_processes_twenty_devices_concurrent_pushes_and_a_sigkill(
        tmp_path: Path, procs: list[JsonLinesProcess], pg_server: str) -> None:  # noqa: F811
    cl = await start_cluster(tmp_path, fresh_schema(pg_server), 2, procs)
    res = await run_scenario(tmp_path, cl, devices=20, per_space=4, edits=5, samples=3,
                             timeout=60)
    assert res["receipt_signers"] == 1 and res["receipts"] == 20
    assert res["burst_new_changes"] == 20 * 5
    assert res["changes_stored_total"] > res["burst_new_changes"]
