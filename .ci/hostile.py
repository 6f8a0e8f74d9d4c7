#!/usr/bin/env python3
"""Hostile traffic against a live server in the production configuration,
loopback only, bounded in time; fails on a regression.

Attacks: bodies that stall or trickle, stalled chunked bodies, oversized
heads, a burst of parallel failed logins from one address, hostile JSON
(RSS must come back). Must keep holding: slowloris on the head, many idle
connections, deep JSON, a 10 MB body, smuggling shapes, ingest overload.
A /health/live probe runs throughout; its p99 must stay under 200 ms.

Usage: hostile.py BINARY   (env: PORT, DATABASE_URL optional)
"""
import concurrent.futures as cf
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

BIN = sys.argv[1]
PORT = int(os.environ.get("HOSTILE_PORT", "18650"))
HOST = "127.0.0.1"
KEY = "hostile-api-key-0123456789"
IDLE, TOTAL = 3, 8
IP_LIMIT = 50
failures = []


def check(ok, what):
    print(("  ok   " if ok else "  FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def start_server(data_dir):
    env = {
        "PATH": os.environ["PATH"],
        "ENVIRONMENT": "production",
        "LOG_LEVEL": "INFO",
        "PORT": str(PORT),
        "BIND_ADDRESS": HOST,
        "METRICS_ENABLED": "false",
        "API_KEY": KEY,
        "JWT_SECRET": "hostile-test-secret-that-is-long-enough-0123",
        "SQLITE_PATH": os.path.join(data_dir, "platform.db"),
        "BODY_IDLE_TIMEOUT": str(IDLE),
        "BODY_TIMEOUT": str(TOTAL),
        "LOGIN_IP_MAX_FAILURES": str(IP_LIMIT),
        "JSON_BODY_LIMIT": str(8 * 1024 * 1024),
        "INGEST_QUEUE_CAPACITY": "64",
        "PASSWORD_HASH_ROUNDS": "10",
    }
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    log = open(os.path.join(data_dir, "server.log"), "w")
    proc = subprocess.Popen([BIN], env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://{HOST}:{PORT}/health/ready", timeout=1)
            return proc
        except Exception:
            time.sleep(0.1)
    raise SystemExit("server did not become ready")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(method, path, body=None, headers=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{HOST}:{PORT}{path}", data=data, method=method)
    req.add_header("X-API-Key", KEY)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def raw(payload, read_for=10.0, until_close=True):
    """Sends raw bytes; answers (status line, seconds until the server closed
    the connection, or None). With until_close=False it stops at the first
    bytes of the answer and times those instead."""
    s = socket.create_connection((HOST, PORT))
    start, data = time.time(), b""
    try:
        s.sendall(payload)
        s.settimeout(read_for)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data.split(b"\r\n", 1)[0].decode(errors="replace"), time.time() - start
            data += chunk
            if not until_close:
                return data.split(b"\r\n", 1)[0].decode(errors="replace"), time.time() - start
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        return data.split(b"\r\n", 1)[0].decode(errors="replace"), None
    finally:
        s.close()


def head(path, extra=""):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


class Probe(threading.Thread):
    """GET /health/live every 20 ms on its own connection each time."""

    def __init__(self):
        super().__init__(daemon=True)
        self.times, self.errors, self.stop = [], 0, False

    def run(self):
        while not self.stop:
            t = time.time()
            try:
                urllib.request.urlopen(f"http://{HOST}:{PORT}/health/live", timeout=5).read()
                self.times.append(time.time() - t)
            except Exception:
                self.errors += 1
            time.sleep(0.02)

    def p99_ms(self):
        xs = sorted(self.times)
        return 1000 * xs[int(len(xs) * 0.99)] if xs else float("inf")


def slow_bodies(n=200):
    """n connections declare a 1 MB body and send one byte a second."""
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, PORT))
        s.sendall(head("/analytics/events", "Content-Length: 1000000\r\n") + b'{"event_type":"x"')
        s.setblocking(False)
        socks.append([s, None, b""])
    start = time.time()
    while time.time() - start < TOTAL + 6 and any(c[1] is None for c in socks):
        for c in socks:
            if c[1] is not None:
                continue
            try:
                got = c[0].recv(4096)
                if got:
                    c[2] += got
                else:
                    c[1] = time.time() - start
            except BlockingIOError:
                try:
                    c[0].send(b" ")
                except OSError:
                    c[1] = time.time() - start
            except OSError:
                c[1] = time.time() - start
        time.sleep(1)
    closed = [c[1] for c in socks if c[1] is not None]
    answered = sum(1 for c in socks if c[2].startswith(b"HTTP/1.1 408"))
    for c in socks:
        c[0].close()
    check(len(closed) == n, f"{n} trickling bodies all closed ({len(closed)} closed)")
    check(answered == n, f"{n} trickling bodies answered 408 ({answered})")
    if closed:
        check(max(closed) <= TOTAL + 3, f"closed within the total bound: max {max(closed):.1f}s <= {TOTAL + 3}s")


def stalled_chunked(n=50):
    with cf.ThreadPoolExecutor(n) as ex:
        results = list(ex.map(lambda _: raw(
            head("/analytics/events", "Transfer-Encoding: chunked\r\n") + b'40\r\n{"event_type":',
            read_for=IDLE + 10), range(n)))
    ok = [r for r in results if r[0].startswith("HTTP/1.1 408") and r[1] is not None]
    check(len(ok) == n, f"{n} stalled chunked bodies answered 408 and closed ({len(ok)})")
    if ok:
        worst = max(r[1] for r in ok)
        check(worst <= IDLE + 3, f"within the idle bound: max {worst:.1f}s <= {IDLE + 3}s")


def oversized_heads():
    before = count_events()
    for size in (20 * 1024, 64 * 1024, 127 * 1024):
        line, _ = raw(head("/analytics/events", f"X-Pad: {'a' * size}\r\nContent-Length: 22\r\n")
                      + b'{"event_type":"big-h"}')
        check(line.startswith("HTTP/1.1 431"), f"{size // 1024} KiB head: {line}")
    check(count_events() == before, "nothing stored from oversized heads")


def login_burst(n=500):
    def attempt(i):
        status, _, _ = request("POST", "/auth/login",
                               {"email": f"burst{i}@example.com", "password": "wrong-password-123"})
        return status
    with cf.ThreadPoolExecutor(100) as ex:
        statuses = list(ex.map(attempt, range(n)))
    n401, n429 = statuses.count(401), statuses.count(429)
    check(n401 + n429 == n, f"burst answered only 401/429 ({n401} + {n429} of {n})")
    check(n401 <= IP_LIMIT, f"at most the IP limit verified: {n401} <= {IP_LIMIT}")


def b36(i):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if i == 0:
            return out


def hostile_json(proc, rounds=8):
    # As many distinct small keys as fit in the 8 MiB body limit.
    body = b'{"event_type":"e","event_data":{' + b",".join(
        b'"%s":0' % b36(i).encode() for i in range(900_000)) + b"}}"
    assert len(body) < 8 * 1024 * 1024
    request = head("/analytics/events", f"Content-Length: {len(body)}\r\n") + body
    send = lambda _: raw(request, read_for=30, until_close=False)
    before = rss_mib(proc.pid)
    results = [send(i) for i in range(rounds)]
    with cf.ThreadPoolExecutor(4) as ex:
        results += list(ex.map(send, range(4)))
    refused = sum(1 for line, _ in results if line.startswith("HTTP/1.1 422"))
    check(refused == len(results), f"{len(body) / 1e6:.1f} MB of 900,000 keys refused 422 ({refused}/{len(results)})")
    time.sleep(1)
    after = rss_mib(proc.pid)
    worst = max(t or 0 for _, t in results)
    print(f"  RSS {before:.1f} MiB before, {after:.1f} MiB after {len(results)} such bodies "
          f"({rounds} one by one, 4 at once); slowest answer {worst:.2f}s", flush=True)
    check(after <= before + 8, f"RSS back near its level ({after:.1f} <= {before:.1f} + 8 MiB)")


def still_holding():
    # Slowloris on the head: actix answers 408 within its request timeout.
    s = socket.create_connection((HOST, PORT))
    s.sendall(b"POST /analytics/events HTTP/1.1\r\nHost: x\r\n")
    s.settimeout(12)
    t = time.time()
    try:
        data = s.recv(4096)
    except socket.timeout:
        data = b""
    check(data.startswith(b"HTTP/1.1 408") or data == b"", f"slowloris head cut after {time.time() - t:.1f}s")
    s.close()
    # Many idle connections, and the server still answers.
    idle = []
    for _ in range(1000):
        try:
            idle.append(socket.create_connection((HOST, PORT)))
        except OSError:
            break
    status, _, _ = request("GET", "/health/live")
    check(status == 200 and len(idle) == 1000, f"{len(idle)} idle connections, /health/live {status}")
    for c in idle:
        c.close()
    deep = b'{"event_type":"d","event_data":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    line, _ = raw(head("/analytics/events", f"Content-Length: {len(deep)}\r\n") + deep, read_for=20)
    check(line.startswith("HTTP/1.1 422"), f"100,000-deep JSON: {line}")
    line, _ = raw(head("/analytics/events", "Content-Length: 10000000\r\n") + b"{", read_for=10)
    check(line.startswith("HTTP/1.1 413"), f"10 MB body: {line}")
    cl_te = head("/analytics/events", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n"
    line, _ = raw(cl_te, read_for=5)
    check(line.startswith("HTTP/1.1 4"), f"CL+TE: {line}")
    dup = head("/analytics/events", "Content-Length: 4\r\nContent-Length: 5\r\n") + b"{}{}{"
    line, _ = raw(dup, read_for=5)
    check(line.startswith("HTTP/1.1 400"), f"duplicate Content-Length: {line}")


def count_events(event_type=None):
    status, _, body = request("GET", "/analytics/events/by-type?hours=1")
    types = json.loads(body)["event_types"]
    return sum(t["count"] for t in types if event_type in (None, t["event_type"]))


def ingest_overload(n=3000):
    """A flood into a 64-request queue: only 200 or 503 with Retry-After;
    every acknowledged event stored, none twice (retries reuse event_id)."""
    def send(i):
        status, headers, _ = request("POST", "/analytics/events",
                                     {"event_type": "flood", "event_id": f"flood-{i}"})
        return status, headers.get("Retry-After")
    with cf.ThreadPoolExecutor(64) as ex:
        results = list(ex.map(send, range(n)))
    statuses = {s for s, _ in results}
    acked = sum(1 for s, _ in results if s == 200)
    check(statuses <= {200, 503}, f"flood answered only 200/503 ({sorted(statuses)})")
    check(all(r for s, r in results if s == 503), "every 503 carries Retry-After")
    # Retry what was refused, twice over: still stored once each.
    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(send, [i for i, (s, _) in enumerate(results) if s != 200] * 2))
    stored = count_events("flood")
    check(stored == n, f"{acked} acknowledged at first; after retries {stored} stored of {n}")


def main():
    data_dir = tempfile.mkdtemp(prefix="hostile-")
    proc = start_server(data_dir)
    probe = Probe()
    probe.start()
    stages = [
        ("trickling bodies", slow_bodies),
        ("stalled chunked bodies", stalled_chunked),
        ("oversized heads", oversized_heads),
        ("parallel failed logins", login_burst),
        ("hostile JSON", lambda: hostile_json(proc)),
        ("what must keep holding", still_holding),
        ("ingest overload", ingest_overload),
    ]
    try:
        for name, stage in stages:
            t = time.time()
            print(f"== {name}", flush=True)
            stage()
            print(f"   ({time.time() - t:.1f}s)", flush=True)
    finally:
        probe.stop = True
        probe.join()
        proc.terminate()
        proc.wait(timeout=30)
    p99 = probe.p99_ms()
    print(f"== /health/live probe: {len(probe.times)} answers, {probe.errors} errors, p99 {p99:.1f} ms")
    check(probe.errors == 0 and p99 < 200, f"probe p99 {p99:.1f} ms < 200 ms, no errors")
    if failures:
        print(f"{len(failures)} failed:\n  " + "\n  ".join(failures))
        print("server log:", os.path.join(data_dir, "server.log"))
        sys.exit(1)
    print("all hostile checks held")


if __name__ == "__main__":
    main()
