#!/usr/bin/env python3
"""Where a batch's time goes. On a database preloaded with PRELOAD metrics
(1,000,000), each of ROUNDS (2) rounds starts a server (ENV="K=V ..." for
extra settings), runs 1,000-metric batches for 10 s with CONNS (4)
connections and prints:
- the cores each kind of process kept busy (the server, Postgres backends,
  each Postgres helper by its title), from /proc; wrk, which ends before
  the count, is left out;
- the writer's groups: rows per group and the average commit as the server
  timed it (`ingest_commit_duration_seconds`);
- the executor's share of it, from pg_stat_statements when the server was
  started with it preloaded:
  PG_EXTRA_OPTS="-c fsync=on -c shared_preload_libraries=pg_stat_statements";
then copies as many rows with `psql \\copy` and prints the ratio.
SCENARIO=events does the same for durable single events (64 connections,
no preload, no copy), as the benchmark sends them.
Not part of CI: `[BIN=/path] BENCH_DRIVER=batch_split.py .ci/bench.sh`."""
import collections
import os
import re
import time
import urllib.request

import bench as B

B.BIN = os.environ.get("BIN", B.BIN)
SECS = 10
HZ = os.sysconf("SC_CLK_TCK")


def cpu_by_process():
    """{pid: (command line, CPU ticks so far)} for every process."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read().replace("\0", " ").strip()
        except OSError:
            continue
        out[pid] = (cmd, int(fields[11]) + int(fields[12]))
    return out


def kind(cmd):
    if cmd.startswith("postgres:"):
        title = cmd.split(":", 1)[1].split()
        # A backend's title starts with its user; helpers name themselves.
        return "pg backends" if title[0] == "postgres" else "pg " + " ".join(title[:2])
    return "server" if cmd.endswith(" serve") else "other"


def busy_during(run):
    """run(), then the cores each kind of process kept busy meanwhile
    (processes that ended meanwhile are not counted)."""
    before, t0 = cpu_by_process(), time.time()
    result = run()
    after, wall = cpu_by_process(), time.time() - t0
    cores = collections.Counter()
    for pid, (cmd, ticks) in after.items():
        cores[kind(cmd)] += (ticks - before.get(pid, (cmd, 0))[1]) / HZ / wall
    print(f"  {sum(cores.values()):.2f} cores busy: "
          + ", ".join(f"{k} {v:.2f}" for k, v in cores.most_common() if v >= 0.005), flush=True)
    return result


def ingest_metrics():
    text = urllib.request.urlopen(f"http://127.0.0.1:{B.METRICS_PORT}/metrics").read().decode()
    total = lambda name: sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))
    return [total(n) for n in ("ingest_commit_duration_seconds_count", "ingest_commit_duration_seconds_sum",
                               "ingest_batch_rows_sum")]


EVENTS = os.environ.get("SCENARIO", "batches") == "events"
db = B.fresh_database(os.environ["BENCH_DATABASE_URL"], "batch_split")
env = {"DATABASE_URL": db, "REDIS_URL": os.environ["BENCH_REDIS_URL"]}
env.update(kv.split("=", 1) for kv in os.environ.get("ENV", "").split())
if not EVENTS:
    with B.serving(env):
        B.load_rows(db, 0, int(os.environ.get("PRELOAD", "1000000")), 1, days=1)
        B.settle(db)
statements = "pg_stat_statements" in B.psql(db, "SHOW shared_preload_libraries")
if statements:
    B.psql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
path = "/analytics/events" if EVENTS else "/analytics/metrics/batch"
conns = int(os.environ.get("CONNS", "64" if EVENTS else "4"))
for r in range(int(os.environ.get("ROUNDS", "2"))):
    with B.serving(env):
        uid = B.register("b")["user"]["id"]
        if EVENTS:
            script = B.lua("POST", B.event_body(uid))
            B.psql(db, "CHECKPOINT")
        else:
            script = B.batch_script(uid)
        B.wrk(path, script, 2, conns=conns)
        if statements:
            B.psql(db, "SELECT pg_stat_statements_reset()")
        start = ingest_metrics()
        out = busy_during(lambda: B.wrk(path, script, SECS, conns=conns, timeout=5))
        groups, seconds, rows = (b - a for a, b in zip(start, ingest_metrics()))
        line = f"  {groups:.0f} groups of {rows / groups:.1f} rows, commit {seconds / groups * 1000:.2f} ms each"
        if statements:
            executing = float(B.psql(db, "SELECT sum(total_exec_time) FROM pg_stat_statements "
                                         "WHERE query LIKE 'WITH e AS (%'"))
            line += f", of which the statement executed {executing / groups:.2f} ms"
        print(line)
        if EVENTS:
            print(f"round {r}: {out['rps']:.0f} events/s, p99 {out['p99_ms']} ms", flush=True)
            continue
        rate = out["rps"] * 1000
        copy = B.copy_rate(db, uid, int(rate * SECS))
    print(f"round {r}: batches {rate:.0f} metrics/s, psql \\copy {copy:.0f} rows/s, ratio {rate / copy:.0%}",
          flush=True)
