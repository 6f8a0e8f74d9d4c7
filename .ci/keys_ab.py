#!/usr/bin/env python3
"""What the `event_id` key generations cost the keyed ingest path: single
events carrying a fresh event_id each, 64 connections, against databases of
one Postgres holding 13 x KEYS_PER_GEN keys spread over each of GENS
generations (default 13, 4 and 1), alternated for ROUNDS rounds of SECS
seconds. Not part of CI: `BENCH_DRIVER=keys_ab.py .ci/bench.sh`."""
import os
import tempfile
import time

import bench as B

SECS = int(os.environ.get("SECS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "4"))
PER = int(os.environ.get("KEYS_PER_GEN", "500000"))
redis = os.environ["BENCH_REDIS_URL"]
W = "date_trunc('week', timezone('UTC', now()))"
K = "platform_analytics_event_keys"
dbs = {}
GENS = [int(g) for g in os.environ.get("GENS", "13,4,1").split(",")]
for name, gens in ((f"gens{g}", g) for g in GENS):
    url = B.fresh_database(os.environ["BENCH_DATABASE_URL"], name)
    p = B.start_server({"DATABASE_URL": url, "REDIS_URL": redis}); p.terminate(); p.wait()
    t0 = time.time()
    for g in range(1, gens):
        B.psql(url, f"CREATE TABLE {K}_old{g} PARTITION OF {K} FOR VALUES FROM ({W} - interval '{g} weeks') "
                    f"TO ({W} - interval '{g - 1} weeks')")
    for g in range(13):
        gen = f"{W} - interval '{g * gens // 13} weeks'"
        B.psql(url, f"INSERT INTO {K} (event_id, event_pk, \"timestamp\", gen) "
                    f"SELECT md5('{g}-' || i), i, now() - interval '{g} weeks', {gen} FROM generate_series(1, {PER}) i")
    B.psql(url, f"VACUUM ANALYZE {K}")
    print(f"{name}: {13 * PER} keys in {gens} generation(s), {time.time() - t0:.0f} s", flush=True)
    dbs[name] = url
res = {n: [] for n in dbs}
for r in range(ROUNDS):
    order = list(dbs.items()) if r % 2 == 0 else list(dbs.items())[::-1]
    for name, url in order:
        proc = B.start_server({"DATABASE_URL": url, "REDIS_URL": redis})
        try:
            uid = B.register("k")["user"]["id"]
            lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
            lua.write(f'''wrk.method = "POST"
wrk.headers["X-API-Key"] = "{B.API_KEY}"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{{"event_type":"bench","user_id":{uid},"event_data":{{"k":"v"}},"event_id":"{name}-{r}-' .. n .. '"}}')
end
''')
            lua.close()
            B.psql(url, "CHECKPOINT")
            out = B.wrk("/analytics/events", lua.name, SECS, conns=64)
            res[name].append(out["rps"])
            print(f"round {r} {name}: {out['rps']:.0f}/s p99 {out['p99_ms']} ms errors {out['errors']}", flush=True)
        finally:
            proc.terminate(); proc.wait()
for name in dbs:
    v = res[name]
    print(f"{name}: mean {sum(v) / len(v):.0f}/s rounds {[round(x) for x in v]}")
b = sum(res["gens1"])
for name in dbs:
    print(f"{name} at {sum(res[name]) / b:.0%} of gens1")
