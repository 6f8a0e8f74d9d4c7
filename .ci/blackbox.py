"""What the black-box check scripts (.ci/faults.py, accounts.py,
passkeys.py) share: one JSON call with the API key, one check line, and
starting the server until /health/live answers."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


def request(base, key, method, path, body=None, token=None, timeout=10):
    """(status, JSON body, headers); an HTTP error status is an answer too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("X-API-Key", key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def check(cond, msg):
    print(("  ok   " if cond else "  FAIL ") + msg, flush=True)
    if not cond:
        check.failed = True


check.failed = False


def start(binary, env, log, live):
    """Runs `binary serve` with `env`, its output to the open file `log`,
    until `live()` is true (20 s at most)."""
    proc = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(400):
        try:
            if live():
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("server did not start")
