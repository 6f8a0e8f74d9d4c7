#!/usr/bin/env python3
"""Postgres at scale, in the production configuration (logs on, fsync on):
SCALE_ROWS events and as many metrics loaded into their time partitions
(30 days), ingest with them stored alternated with ingest into an empty
database of the same instance (SCALE_ROUNDS rounds), dashboard
and usage latency, unique users checked against COUNT(DISTINCT) and a
funnel timed, an export of every event (exact count, flat memory), and
retention dropping a day. With BENCH_REPLICA_URL (a
streaming replica, `BENCH_REPLICA=1 .ci/scale.sh`), the dashboard is read
from the replica while ingest runs at full rate. Run through .ci/scale.sh."""

import os
import signal
import sys
import threading
import time
import urllib.request

import bench as B

ROWS = int(os.environ.get("SCALE_ROWS", "50000000"))
SECS = int(os.environ.get("SCALE_SECONDS", "20"))
# Fewer days give the per-hour density of a bigger load at less cost:
# 4.5 million rows over 3 days are 90% of 50 million over 30 days per hour.
# Retention runs at DAYS - 1 and DAYS - 2 days, so 3 is the fewest.
DAYS = int(os.environ.get("SCALE_DAYS", "30"))
if DAYS < 3:
    sys.exit("SCALE_DAYS must be at least 3 (retention runs at SCALE_DAYS - 2 days)")
ROUNDS = int(os.environ.get("SCALE_ROUNDS", "3"))
failed = []


psql = B.psql


def register():
    """A new account's user id."""
    return B.register("scale")["user"]["id"]


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)


# The loader's metric names; its users are 1 to 1000.
NAMES = ("api_calls", "tokens_used", "cost_usd", "latency_ms")


def ingest(uid, label):
    ev = B.wrk("/analytics/events", B.lua("POST", B.event_body(uid)), SECS, conns=64)
    mb = B.wrk("/analytics/metrics/batch", B.batch_script(uid), SECS, conns=4)
    # One name and one user put every insert into an empty table on its
    # indexes' rightmost leaves, and into the stored one mid-tree (README,
    # fifth 50M run); batches that mix names and users like the loaded rows
    # descend the trees in both.
    mixed = {"metrics": [{"metric_name": NAMES[i % 4], "metric_value": 1, "user_id": 1 + i * 7 % 1000,
                          "endpoint": "/x"} for i in range(1000)]}
    mm = B.wrk("/analytics/metrics/batch", B.lua("POST", mixed), SECS, conns=4)
    if ev["errors"] or mb["errors"] or mm["errors"]:
        failed.append(label)
    print(f"  {label}: events {ev['rps']:.0f}/s (p99 {ev['p99_ms']} ms, errors {ev['errors']}), "
          f"batched metrics {mb['rps'] * 1000:.0f}/s (p99 {mb['p99_ms']} ms, errors {mb['errors']}), "
          f"mixed {mm['rps'] * 1000:.0f}/s (p99 {mm['p99_ms']} ms, errors {mm['errors']})", flush=True)
    return ev["rps"], mb["rps"] * 1000, mm["rps"] * 1000


def ingest_on(url, backends, label):
    """Single events and batches against a server on `url`, after a
    CHECKPOINT, so that no round starts with another's dirty pages."""
    psql(url, "CHECKPOINT")
    proc = B.start_server({**backends, "DATABASE_URL": url})
    try:
        return ingest(register(), label)
    finally:
        stop(proc)


def stored_vs_empty(db_url, backends):
    """Ingest with the rows stored against ingest into an empty database of
    the same Postgres instance, alternated for ROUNDS rounds: this disk's
    checkpoint stalls swing one 20-second run by half, so a single pair
    taken an hour apart measured the weather (29% in one such run)."""
    pairs = []
    for r in range(ROUNDS):
        full = ingest_on(db_url, backends, f"round {r + 1}, {ROWS} rows stored")
        empty_url = B.fresh_database(db_url, "scale_empty")
        pairs.append((full, ingest_on(empty_url, backends, f"round {r + 1}, empty tables")))
    psql(db_url, "DROP DATABASE IF EXISTS scale_empty")
    ratio = lambda k: sum(p[0][k] for p in pairs) / sum(p[1][k] for p in pairs)
    print(f"  with the rows stored, over {ROUNDS} alternated rounds: events {ratio(0):.0%}, batched metrics "
          f"{ratio(1):.0%} (one name and user), {ratio(2):.0%} (mixed like the loaded rows) of the "
          f"empty-table rates (goal: at least 90%; per round, events/batches/mixed: "
          f"{', '.join('/'.join(f'{f[k] / e[k]:.0%}' for k in range(3)) for f, e in pairs)})", flush=True)


def reads(label):
    out = {}
    for name, path in (("dashboard", "/analytics/dashboard?hours=24"), ("usage", "/analytics/usage/7?days=30")):
        r = B.wrk(path, B.lua("GET"), SECS, conns=2)
        out[name] = r
        if r["errors"]:
            failed.append(f"{label} {name}")
        print(f"  {label} GET {path}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, "
              f"p95 {r['p95_ms']} ms (goal < 50), p99 {r['p99_ms']} ms, errors {r['errors']}", flush=True)
    return out


def metrics_text():
    with urllib.request.urlopen(f"http://127.0.0.1:{B.METRICS_PORT}/metrics", timeout=10) as r:
        return r.read().decode()


def sizes(db_url):
    parts = psql(db_url, "SELECT string_agg(pg_size_pretty(s) || ' ' || t, ', ') FROM ("
                         "SELECT i.inhparent::regclass::text AS t, SUM(pg_total_relation_size(i.inhrelid)) AS s "
                         "FROM pg_inherits i WHERE i.inhparent IN ('platform_analytics_events'::regclass, "
                         "'platform_analytics_metrics'::regclass) GROUP BY 1) x")
    return f"{parts}; database {psql(db_url, 'SELECT pg_size_pretty(pg_database_size(current_database()))')}"


def partition_bytes(db_url):
    return int(psql(db_url, "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i "
                            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent IN "
                            "('platform_analytics_events'::regclass, 'platform_analytics_metrics'::regclass)"))


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def export_all(db_url, pid):
    """Every stored event through GET /analytics/events/export, read as it
    streams, while the server's RSS is sampled: the count must be exact and
    the memory flat (growth under 64 MiB whatever the row count)."""
    expected = int(psql(db_url, "SELECT count(*) FROM platform_analytics_events"))
    samples, done = [rss_mib(pid)], threading.Event()

    def sample():
        while not done.wait(0.2):
            samples.append(rss_mib(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    req = urllib.request.Request(f"{B.BASE}/analytics/events/export", headers={"X-API-Key": B.API_KEY})
    t0, lines = time.perf_counter(), 0
    try:
        with urllib.request.urlopen(req, timeout=3600) as r:
            total = int(r.headers["X-Total-Count"])
            while chunk := r.read(1 << 20):
                lines += chunk.count(b"\n")
    finally:
        done.set()
        sampler.join()
    took = time.perf_counter() - t0
    growth = max(samples) - samples[0]
    print(f"  export of every event: {lines} rows (X-Total-Count {total}, stored {expected}) in {took:.1f} s "
          f"({lines / took:.0f} rows/s); server RSS {samples[0]:.0f} MiB at the start, at most {max(samples):.0f} MiB "
          f"(+{growth:.0f} MiB)", flush=True)
    if not lines == total == expected or growth > 64:
        failed.append("export")


def audience(db_url):
    """Unique users over 24 hours and 7 days (windows cut mid-hour), equal to
    COUNT(DISTINCT user_id) over the raw rows, and their latency; one funnel
    over the last 24 hours, timed."""
    now = time.time()
    stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".500000Z"
    for label, hours in (("24 hours", 24), ("7 days", 168)):
        frm, to = stamp(now - hours * 3600 - 1234), stamp(now - 777)
        path = f"/analytics/uniques?from={frm}&to={to}"
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            got = B.http("GET", path, timeout=600)
            times.append(time.perf_counter() - t0)
        where = (f"\"timestamp\" >= '{frm[:-1]}' AND \"timestamp\" < '{to[:-1]}' AND user_id IS NOT NULL")
        truth = int(psql(db_url, f"SELECT count(DISTINCT user_id) FROM platform_analytics_events WHERE {where}"))
        per_type = dict(
            (t, int(n)) for t, n in (line.split("|") for line in psql(db_url,
                f"SELECT event_type, count(DISTINCT user_id) FROM platform_analytics_events WHERE {where} "
                f"GROUP BY 1").splitlines()))
        answered = {t["event_type"]: t["unique_users"] for t in got["by_event_type"]}
        times.sort()
        ok = got["unique_users"] == truth and answered == per_type
        print(f"  uniques over {label}: {got['unique_users']} users, {len(answered)} types "
              f"({'equal to' if ok else 'DIFFERENT FROM'} COUNT(DISTINCT) over the rows); "
              f"median {times[2] * 1000:.0f} ms, slowest {times[-1] * 1000:.0f} ms", flush=True)
        if not ok:
            failed.append(f"uniques {label}")
    t0 = time.perf_counter()
    funnel = B.http("GET", "/analytics/funnels?steps=type_1,type_2,type_3&within_seconds=86400", timeout=1800)
    print(f"  funnel type_1 > type_2 > type_3 over 24 hours: "
          f"{[s['users'] for s in funnel['steps']]} users in {time.perf_counter() - t0:.1f} s", flush=True)


def horizon(days):
    return f"((now() at time zone 'utc') - interval '{days} days')"


def retention(db_url, backends, days, label, keys_expected):
    """One retention run at `days`, timed; fails unless it left no row of
    a whole day and no key in a generation that ended before the horizon."""
    # Taken once, before the job computes its own, later horizon: a check
    # with a fresh now() would count keys stored in between (10 at 50M).
    cut = psql(db_url, f"SELECT {horizon(days)}")

    def past():
        rows = sum(int(psql(db_url, f'SELECT count(*) FROM {t} WHERE "timestamp" < '
                                    f"date_trunc('day', '{cut}'::timestamp)"))
                   for t in ("platform_analytics_events", "platform_analytics_metrics"))
        return rows, int(psql(db_url, "SELECT count(*) FROM platform_analytics_event_keys "
                                      f"WHERE gen < date_trunc('month', '{cut}'::timestamp)"))
    stale_before, before = past(), partition_bytes(db_url)
    proc = B.start_server({**backends, "ANALYTICS_RETENTION_DAYS": str(days)})
    try:
        t0 = time.perf_counter()
        report = B.http("POST", "/analytics/jobs/retention", {}, timeout=600)
        took = time.perf_counter() - t0
    finally:
        stop(proc)
    stale = past()
    print(f"  retention at {days} days ({label}): {took * 1000:.0f} ms for the whole run "
          f"(job: {report['duration_ms']} ms), ~{report['rows']} rows removed (the partitions' estimate, keys, "
          f"buckets), {(before - partition_bytes(db_url)) / 2**30:.2f} GiB freed; past the horizon (rows of "
          f"whole days, keys of ended generations): {stale_before} before, {stale} after", flush=True)
    if (stale_before[1] > 0) != keys_expected or stale != (0, 0):
        sys.exit("FAILED: keys to prune not as set up, or retention left rows or keys past the horizon")


def from_replica(backends, replica, uid):
    """The dashboard read from the replica while single events go in at full
    rate; fails unless the replica alone served it and nothing failed."""
    time.sleep(5)
    proc = B.start_server({**backends, "DATABASE_REPLICA_URLS": replica})
    try:
        time.sleep(3)
        health = B.http("GET", "/health")
        print(f"  replica: {health['components']['database']['replicas']}", flush=True)
        counted = lambda target: sum(float(l.split()[-1]) for l in metrics_text().splitlines()
                                     if l.startswith(f'db_reads_total{{target="{target}"}}'))
        served, primary = counted("replica"), counted("primary")
        box = {}
        writer = threading.Thread(target=lambda: box.update(ev=B.wrk(
            "/analytics/events", B.lua("POST", {"event_type": "bench", "user_id": uid}), SECS + 4, conns=64)))
        writer.start()
        time.sleep(2)
        dash = B.wrk("/analytics/dashboard?hours=24", B.lua("GET"), SECS, conns=2)
        writer.join()
        on_replica, on_primary = counted("replica") - served, counted("primary") - primary
        print(f"  dashboard from the replica while ingest runs at full rate: {dash['rps']:.0f} req/s, "
              f"p50 {dash['p50_ms']} ms, p90 {dash['p90_ms']} ms, p95 {dash['p95_ms']} ms, p99 {dash['p99_ms']} ms, "
              f"errors {dash['errors']}; "
              f"reads on the replica {on_replica:.0f}, on the primary {on_primary:.0f}; ingest beside it "
              f"{box['ev']['rps']:.0f} events/s (p99 {box['ev']['p99_ms']} ms)", flush=True)
        print(f"  replica after: {B.http('GET', '/health')['components']['database']['replicas']}", flush=True)
        if on_replica < 1 or on_primary > 0 or dash["errors"] or box["ev"]["errors"]:
            sys.exit("FAILED: the dashboard was not served by the replica alone, or requests failed")
    finally:
        stop(proc)


def main():
    db_url = os.environ["BENCH_DATABASE_URL"]
    backends = {"DATABASE_URL": db_url, "REDIS_URL": os.environ["BENCH_REDIS_URL"]}
    replica = os.environ.get("BENCH_REPLICA_URL")
    print(f"scale: {ROWS} events and {ROWS} metrics over {DAYS} days; wrk {SECS} s per scenario on the same "
          f"{os.cpu_count()} cores as the server and Postgres", flush=True)

    proc = B.start_server(backends)
    try:
        uid = register()
        t0 = time.time()
        print(f"  loading {ROWS} events and {ROWS} metrics ...", flush=True)
        B.load_rows(db_url, ROWS, ROWS, 1000, DAYS, cover=True)
        print(f"  loaded in {time.time() - t0:.0f} s: {sizes(db_url)}", flush=True)
        t0 = time.time()
        B.http("POST", "/analytics/jobs/rollup", {}, timeout=7200)
        B.settle(db_url)
        print(f"  rollup, VACUUM ANALYZE and CHECKPOINT in {time.time() - t0:.0f} s", flush=True)
    finally:
        stop(proc)
    stored_vs_empty(db_url, backends)

    proc = B.start_server(backends)
    try:
        B.settle(db_url)
        read = reads("primary, idle")
        audience(db_url)
        export_all(db_url, proc.pid)
    finally:
        stop(proc)

    # Retention, twice. The loader gives events no event_id; keys are given
    # here to the oldest day's events, as if each had carried one, in a
    # generation (the month they arrived in) that ended before the horizon,
    # so the first run drops a day's partitions and that generation whole.
    # The second drops the next day's partitions with no keys to go.
    cut = psql(db_url, f"SELECT date_trunc('day', {horizon(DAYS - 1)})")
    gen = psql(db_url, f"SELECT date_trunc('month', '{cut}'::timestamp) - interval '1 month'")
    psql(db_url, f"CREATE TABLE IF NOT EXISTS platform_analytics_event_keys_scale "
                 f"PARTITION OF platform_analytics_event_keys "
                 f"FOR VALUES FROM ('{gen}') TO ('{gen}'::timestamp + interval '1 month')")
    psql(db_url, "INSERT INTO platform_analytics_event_keys (event_id, event_pk, \"timestamp\", gen) "
                 f"SELECT 'scale-' || id, id, \"timestamp\", '{gen}' FROM platform_analytics_events "
                 f"WHERE \"timestamp\" < '{cut}'")
    psql(db_url, "VACUUM ANALYZE platform_analytics_event_keys")
    for days, label, keys in ((DAYS - 1, "a day's partitions and a generation of keys", True),
                              (DAYS - 2, "the next day's partitions, no keys to go", False)):
        retention(db_url, backends, days, label, keys)

    if replica:
        from_replica(backends, replica, uid)
    if failed:
        sys.exit(f"FAILED: errors in {', '.join(failed)}")


if __name__ == "__main__":
    main()
