#!/usr/bin/env python3
"""Verify against the `/health/live` ceiling for two or more builds, side by
side: a fresh server per build and round (order alternated), 2 s of warm-up,
then SECS seconds of `/health/live` and SECS of `/auth/verify`, each with
wrk -t1 -c32. Prints the rate ratio and the server's CPU time per request
(its utime + stime over the requests wrk counted), which is far steadier
than the rates on this shared machine. Not part of CI:
`BINS=before=/path/a,after=/path/b BENCH_DRIVER=verify_ab.py .ci/bench.sh`
(bench.sh builds target/release first; a build named in BINS is used as is)."""
import os

import bench as B

SECS = int(os.environ.get("SECS", "8"))
ROUNDS = int(os.environ.get("ROUNDS", "4"))
BINS = B.builds()
TICK = os.sysconf("SC_CLK_TCK")
env = {"DATABASE_URL": os.environ["BENCH_DATABASE_URL"], "REDIS_URL": os.environ["BENCH_REDIS_URL"]}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(pid, path, script):
    B.wrk(path, script, 2)
    before = cpu_seconds(pid)
    out = B.wrk(path, script, SECS)
    cpu = cpu_seconds(pid) - before
    assert out["errors"] == 0, out
    return out["rps"], cpu / max(out["requests"], 1) * 1e6


res = {name: [] for name, _ in BINS}
for r, name, _ in B.alternated(BINS, ROUNDS):
    with B.serving(env) as proc:
        token = B.register("v")["access_token"]
        live = measure(proc.pid, "/health/live", B.lua("GET"))
        verify = measure(proc.pid, "/auth/verify", B.lua("GET", headers={"Authorization": f"Bearer {token}"}))
    res[name].append((live, verify))
    print(f"round {r} {name}: live {live[0]:.0f}/s {live[1]:.1f} us, verify {verify[0]:.0f}/s "
          f"{verify[1]:.1f} us, ratio {verify[0] / live[0]:.1%}", flush=True)
for name, rounds in res.items():
    n = len(rounds)
    ratio = sum(v[0] / lv[0] for lv, v in rounds) / n
    live_cpu = sum(lv[1] for lv, _ in rounds) / n
    verify_cpu = sum(v[1] for _, v in rounds) / n
    print(f"{name}: verify at {ratio:.1%} of live (rounds "
          f"{', '.join(f'{v[0] / lv[0]:.0%}' for lv, v in rounds)}); CPU per request live {live_cpu:.1f} us, "
          f"verify {verify_cpu:.1f} us, beyond live {verify_cpu - live_cpu:.1f} us")
