#!/usr/bin/env python3
"""Migrating a populated database to time partitions, measured: loads
PARTITION_ROWS events and as many metrics (default 5 million each, 30 days,
a third of the events with an event_id) into the schema as it was before
partitions, then runs `platform-server migrate up` while pgbench inserts
into both tables at a steady rate. Reports the migration's time, the
longest any insert waited (the longest lock writers felt) and whether every
row and id survived. Not part of CI: run `.ci/partition_migration.sh`."""

import glob
import os
import re
import subprocess
import sys
import tempfile
import time

BIN = "target/release/platform-server"
ADMIN_URL = os.environ["BENCH_DATABASE_URL"]
ROWS = int(os.environ.get("PARTITION_ROWS", "5000000"))
MIGRATIONS_BEFORE = 11


def psql(url, sql):
    out = subprocess.run(["psql", "-qAt", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {out.stderr}")
    return out.stdout.strip()


def digest(url, table):
    """Count, id sum and a hash over every row but pgbench's."""
    return psql(url, f"SELECT COUNT(*), SUM(id), SUM(hashtext(t::text)::int8) FROM {table} t "
                     f"WHERE NOT (t::text LIKE '%during-migration%')")


def main():
    base = ADMIN_URL.rsplit("/", 1)[0]
    psql(ADMIN_URL, "DROP DATABASE IF EXISTS partition_migration")
    psql(ADMIN_URL, "CREATE DATABASE partition_migration")
    url = f"{base}/partition_migration"
    env = dict(os.environ, DATABASE_URL=url, LOG_FORMAT="text", RUST_LOG="info")
    subprocess.run([BIN, "migrate", "up", "--steps", str(MIGRATIONS_BEFORE)], env=env, check=True,
                   capture_output=True)
    t0 = time.perf_counter()
    psql(url, f"""
      INSERT INTO platform_analytics_events (user_id, event_type, event_data, "timestamp", session_id, event_id)
      SELECT 1 + g % 1000, 'type_' || (g % 20), '{{"k": 1}}'::json,
             timezone('UTC', now()) - ((g * 0.5183 % (30 * 86400)) || ' seconds')::interval,
             's' || (g % 10000), CASE WHEN g % 3 = 0 THEN 'evt-' || g END
      FROM generate_series(1, {ROWS}) g;
      INSERT INTO platform_analytics_metrics (metric_name, metric_value, metric_type, user_id, service_name, endpoint, labels, "timestamp")
      SELECT 'api_calls', 1 + g % 100, 'counter', 1 + g % 1000, 'svc', '/e/' || (g % 50), '{{}}'::json,
             timezone('UTC', now()) - ((g * 0.5183 % (30 * 86400)) || ' seconds')::interval
      FROM generate_series(1, {ROWS}) g;""")
    psql(url, "VACUUM ANALYZE")
    psql(url, "CHECKPOINT")
    print(f"loaded {ROWS} events and {ROWS} metrics in {time.perf_counter() - t0:.0f} s", flush=True)
    before = {t: digest(url, t) for t in ("platform_analytics_events", "platform_analytics_metrics")}

    # Writers during the migration: 2 clients, 100 transactions/s in all,
    # each one event and one metric. -M simple resolves the table name per
    # statement, as the server does after the swap.
    work = tempfile.mkdtemp(prefix="partition-migration-")
    script = os.path.join(work, "insert.sql")
    with open(script, "w") as f:
        f.write("INSERT INTO platform_analytics_events (event_type, event_data, \"timestamp\") "
                "VALUES ('during-migration', '{}', timezone('UTC', now()));\n"
                "INSERT INTO platform_analytics_metrics (metric_name, metric_value, metric_type, labels, \"timestamp\") "
                "VALUES ('during-migration', 1, 'counter', '{}', timezone('UTC', now()));\n")
    pgbench = os.path.join(os.path.dirname(subprocess.run(
        ["bash", "-c", "ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1"],
        capture_output=True, text=True).stdout.strip() + "/"), "pgbench")
    bench = subprocess.Popen([pgbench, "-n", "-M", "simple", "-c", "2", "-R", "100", "-T", "3600",
                              "-f", script, "--log", f"--log-prefix={work}/tx", url],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    t0 = time.perf_counter()
    out = subprocess.run([BIN, "migrate", "up"], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    time.sleep(3)
    bench.terminate()
    bench.wait()
    if out.returncode != 0:
        sys.exit(out.stdout + out.stderr)
    logs = out.stdout + out.stderr
    progress = [l for l in logs.splitlines() if "partitioning" in l or "key generations" in l]
    print("\n".join(re.sub(r"\x1b\[[0-9;]*m", "", l) for l in progress))
    locked = [int(m) for m in re.findall(r"locked_ms\D*(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", logs))]

    latencies = []
    for path in glob.glob(f"{work}/tx*"):
        with open(path) as f:
            # A line cut short (the log is read as pgbench stops) is skipped.
            fields = (line.split() for line in f)
            latencies += [int(x[2]) for x in fields if len(x) > 2 and x[2].isdigit()]
    during = int(psql(url, "SELECT COUNT(*) FROM platform_analytics_events WHERE event_type = 'during-migration'"))
    after = {t: digest(url, t) for t in before}
    kept = before == after
    parted = psql(url, "SELECT string_agg(relkind::text, ',') FROM pg_class WHERE relname IN "
                       "('platform_analytics_events', 'platform_analytics_metrics', "
                       "'platform_analytics_event_keys')")
    keys = int(psql(url, "SELECT COUNT(*) FROM platform_analytics_event_keys"))
    print(f"migration: {took:.1f} s for {ROWS} events and {ROWS} metrics")
    print(f"swap transactions held their lock for {locked} ms")
    print(f"inserts during the migration: {len(latencies)} transactions ({during} events stored), "
          f"longest {max(latencies) / 1000:.1f} ms, "
          f"p99 {sorted(latencies)[int(len(latencies) * 0.99)] / 1000:.1f} ms")
    print(f"every row and id kept: {kept}; tables partitioned: {parted}; event_id keys: {keys}")
    if not kept or parted != "p,p,p" or keys != ROWS // 3 or during < len(latencies):
        sys.exit("FAILED: rows or ids changed")


if __name__ == "__main__":
    main()
