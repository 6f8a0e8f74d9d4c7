#!/usr/bin/env python3
"""Soak: a steady mix of verify, event and metric ingestion, dashboard and
usage reads in 30-second wrk windows, with a login every two seconds beside
them (from a thread of this script: inside wrk's mix, the rare half-second
login skewed wrk's own percentiles, while the server's histograms showed
every other request fast). After a warm-up of
two windows, RSS must stay within ±10% of its mean, errors at zero and p99
steady (the last third's median within 2x the first third's). Writes
target/soak.json. Run through .ci/soak.sh.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (shares the server start-up, wrk parsing, RSS)

WINDOW_S = 30
WARMUP = 2


def mixed_script(token, uid):
    key = bench.API_KEY
    event = json.dumps({"event_type": "soak", "user_id": uid, "event_data": {"k": "v"}})
    batch = json.dumps({"metrics": [
        {"metric_name": n, "metric_value": 3, "user_id": uid, "service_name": "soak", "labels": {"model": "m"}}
        for n in ("api_calls", "tokens_used", "latency_ms") for _ in range(4)]})
    lua = f"""
local reqs = {{}}
local h = {{["X-API-Key"] = "{key}", ["Content-Type"] = "application/json"}}
local b = {{["X-API-Key"] = "{key}", ["Authorization"] = "Bearer {token}"}}
function init(args)
  reqs.verify = wrk.format("GET", "/auth/verify", b)
  reqs.event = wrk.format("POST", "/analytics/events", h, [[{event}]])
  reqs.batch = wrk.format("POST", "/analytics/metrics/batch", h, [[{batch}]])
  reqs.dashboard = wrk.format("GET", "/analytics/dashboard?hours=1", h)
  reqs.usage = wrk.format("GET", "/analytics/usage/{uid}?days=7", h)
end
function request()
  local r = math.random(1000)
  if r <= 400 then return reqs.verify
  elseif r <= 700 then return reqs.event
  elseif r <= 800 then return reqs.batch
  elseif r <= 880 then return reqs.dashboard
  else return reqs.usage end
end
function delay() return 10 end
"""
    f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    f.write(lua)
    f.close()
    return f.name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "10")))
    ap.add_argument("--out", default=os.path.join(bench.ROOT, "target", "soak.json"))
    args = ap.parse_args()
    windows = max(WARMUP + 3, round(args.minutes * 60 / WINDOW_S))
    proc = bench.start_server({"DATABASE_URL": os.environ["BENCH_DATABASE_URL"],
                               "REDIS_URL": os.environ["BENCH_REDIS_URL"]})
    rows = []
    try:
        reg = bench.http("POST", "/auth/register", {"email": f"soak{time.time_ns()}@example.com",
                                                    "password": "soak-Marmot-2093-cello"})
        script = mixed_script(reg["access_token"], reg["user"]["id"])
        stop = threading.Event()
        logins = {"ok": 0, "errors": 0}

        def log_in():
            while not stop.wait(2):
                try:
                    bench.http("POST", "/auth/login", {"email": reg["user"]["email"], "password": "soak-Marmot-2093-cello"})
                    logins["ok"] += 1
                except Exception:
                    logins["errors"] += 1

        threading.Thread(target=log_in, daemon=True).start()
        for i in range(windows):
            r = bench.wrk("/", script, WINDOW_S, conns=8, timeout=5)
            r["rss_mib"] = round(bench.rss_kib(proc.pid) / 1024, 1)
            r["window"] = i
            rows.append(r)
            print(f"  window {i:2d}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"errors {r['errors']}, RSS {r['rss_mib']} MiB", flush=True)
        stop.set()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    steady = rows[WARMUP:]
    rss = [r["rss_mib"] for r in steady]
    mean = statistics.mean(rss)
    third = max(1, len(steady) // 3)
    p99_first = statistics.median(r["p99_ms"] for r in steady[:third])
    p99_last = statistics.median(r["p99_ms"] for r in steady[-third:])
    summary = {
        "date": time.strftime("%Y-%m-%d"), "minutes": args.minutes, "windows": rows,
        "requests": sum(r["requests"] for r in rows), "logins": logins["ok"],
        "errors": sum(r["errors"] for r in rows) + logins["errors"],
        "rss_mean_mib": round(mean, 1), "rss_min_mib": min(rss), "rss_max_mib": max(rss),
        "rss_spread": round(max(abs(x - mean) for x in rss) / mean, 3),
        "p99_first_third_ms": p99_first, "p99_last_third_ms": p99_last,
    }
    ok = summary["errors"] == 0 and summary["rss_spread"] <= 0.10 and p99_last <= 2 * p99_first
    summary["ok"] = ok
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\n{summary['requests']} requests and {summary['logins']} logins, {summary['errors']} errors; RSS after warm-up "
          f"{summary['rss_min_mib']}–{summary['rss_max_mib']} MiB (±{summary['rss_spread']:.1%} of "
          f"{summary['rss_mean_mib']}); p99 {p99_first} ms → {p99_last} ms; "
          f"{'steady' if ok else 'NOT steady'}; written to {args.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
