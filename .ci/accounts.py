#!/usr/bin/env python3
"""Accounts as a black-box client sees them (run through .ci/faults.sh),
with mail read from a real SMTP server (aiosmtpd) on loopback, on
PostgreSQL + Redis and on the embedded defaults:

a. Forgotten password: unknown and known addresses get the same answer,
   and their median latencies are within 15% of each other.
b. SMTP stopped during a reset request: 202 at once; the server is killed
   (SIGKILL) and started again; when SMTP returns the mail arrives, exactly
   once, and its link works.
c. Second factor, with codes from an independent TOTP implementation
   (pyotp): in production a password-only admin session is refused at admin
   endpoints; TOTP enrolment, the two-step login, a replayed code refused,
   recovery codes single-use, and the admin allowed after the second factor.
"""

import json
import mailbox
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pyotp

from blackbox import check, request, start

BIN = os.environ.get("PLATFORM_BIN", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "debug", "platform-server"))
KEY = "accounts-key"
PORT = 18117
BASE = f"http://127.0.0.1:{PORT}"
SMTP_PORT = 18125
WORK = tempfile.mkdtemp(prefix="accounts-")
PASSWORD = "correct horse battery"
# Addresses unique to this run, so a reused database never answers 409.
RUN = format(int(time.time() * 1000), "x")


def call(method, path, body=None, token=None, timeout=10):
    return request(BASE, KEY, method, path, body, token, timeout)[:2]


class Smtp:
    def __init__(self):
        self.dir = os.path.join(WORK, "maildir")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{SMTP_PORT}",
                                      "-c", "aiosmtpd.handlers.Mailbox", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", SMTP_PORT), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("aiosmtpd did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()

    def mails(self, to, subject):
        if not os.path.isdir(self.dir):
            return []
        return [m for m in mailbox.Maildir(self.dir, create=False)
                if m["To"] == to and m["Subject"] == subject]

    def wait(self, to, subject, n=1, seconds=20):
        for _ in range(seconds * 20):
            found = self.mails(to, subject)
            if len(found) >= n:
                return found[n - 1]
            time.sleep(0.05)
        return None


def text_of(message):
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).decode()
    return ""


def start_server(env_extra):
    env = {"PATH": os.environ["PATH"], "API_KEY": KEY, "PORT": str(PORT), "METRICS_ENABLED": "false",
           "BIND_ADDRESS": "127.0.0.1", "ENVIRONMENT": "production", "LOG_FORMAT": "json",
           "JWT_SECRET": "accounts-check-secret-that-is-long-enough-for-production",
           "PASSWORD_HASH_ROUNDS": "10", "SMTP_URL": f"smtp://127.0.0.1:{SMTP_PORT}",
           "MAIL_RETRY_BASE": "1", "MAIL_RETRY_MAX": "1",
           # The timing check sends many requests from one client.
           "MAIL_MAX_PER_EMAIL": "1000", "MAIL_IP_MAX": "100000",
           "ADMIN_EMAIL": ADMIN, "ADMIN_PASSWORD": ADMIN_PASSWORD}
    env.update(env_extra)
    log = open(os.path.join(WORK, "server.log"), "a")
    return start(BIN, env, log, lambda: call("GET", "/health/live")[0] == 200)


def timing(label):
    """Medians of alternating requests, after a warm-up."""
    email = f"known-{label}-{RUN}@example.com"
    code, _ = call("POST", "/auth/register", {"email": email, "password": PASSWORD})
    check(code == 201, f"{label}: registered ({code})")
    known, unknown = [], []
    answers = set()
    for i in range(160):
        target = email if i % 2 == 0 else f"nobody-{label}-{RUN}-{i}@example.com"
        started = time.perf_counter()
        code, body = call("POST", "/auth/password/forgot", {"email": target})
        elapsed = time.perf_counter() - started
        answers.add((code, json.dumps(body, sort_keys=True)))
        if i >= 20:
            (known if i % 2 == 0 else unknown).append(elapsed)
    mk, mu = statistics.median(known), statistics.median(unknown)
    ratio = mk / mu
    check(len(answers) == 1, f"{label}: one answer for known and unknown addresses: {answers}")
    check(0.85 <= ratio <= 1.15,
          f"{label}: median known {mk * 1000:.2f} ms, unknown {mu * 1000:.2f} ms (ratio {ratio:.2f}, within 15%)")


def outage(label, env_extra, smtp):
    email = f"outage-{label}-{RUN}@example.com"
    call("POST", "/auth/register", {"email": email, "password": PASSWORD})
    smtp.stop()
    started = time.perf_counter()
    code, _ = call("POST", "/auth/password/forgot", {"email": email})
    took = time.perf_counter() - started
    check(code == 202 and took < 1.0, f"{label}: SMTP down: 202 in {took * 1000:.0f} ms")
    time.sleep(1.5)  # a failed attempt or two
    return email


ADMIN = f"admin-{RUN}@example.com"
ADMIN_PASSWORD = "a long admin passphrase"


def login(email, password):
    return call("POST", "/auth/login", {"email": email, "password": password})


def second_factor(label):
    code, body = login(ADMIN, ADMIN_PASSWORD)
    check(code == 200 and "access_token" in body, f"{label}: admin logs in with a password ({code})")
    weak = body.get("access_token")
    code, body = call("GET", "/auth/users", token=weak)
    check(code == 403 and "second factor" in body.get("detail", ""),
          f"{label}: production refuses admin endpoints to a password-only session ({code})")
    code, enrol = call("POST", "/auth/mfa/totp", token=weak)
    check(code == 200, f"{label}: TOTP enrolment ({code})")
    totp = pyotp.parse_uri(enrol["otpauth_uri"])
    check(totp.secret == enrol["secret"] and totp.issuer == "platform-server",
          f"{label}: the otpauth URI parses with pyotp")
    step = int(time.time()) // 30
    previous = totp.at((step - 1) * 30)
    code, body = call("POST", "/auth/mfa/totp/activate", {"code": previous}, token=weak)
    check(code == 200 and len(body.get("recovery_codes", [])) == 10,
          f"{label}: activated with pyotp's code; ten recovery codes ({code})")
    recovery = body.get("recovery_codes", [])
    code, body = login(ADMIN, ADMIN_PASSWORD)
    check(code == 200 and body.get("mfa_required") is True and "access_token" not in body,
          f"{label}: the password now answers an MFA ticket")
    now_code = totp.at(step * 30)
    code, tokens = call("POST", "/auth/mfa/verify", {"mfa_ticket": body.get("mfa_ticket"), "totp_code": now_code})
    check(code == 200 and "access_token" in tokens, f"{label}: the ticket redeemed with pyotp's code ({code})")
    code, again = login(ADMIN, ADMIN_PASSWORD)
    code, _ = call("POST", "/auth/mfa/verify", {"mfa_ticket": again.get("mfa_ticket"), "totp_code": now_code})
    check(code == 400, f"{label}: the same code replayed is refused ({code})")
    code, _ = call("POST", "/auth/mfa/verify", {"mfa_ticket": again.get("mfa_ticket"), "recovery_code": recovery[0]})
    check(code == 200, f"{label}: a recovery code works ({code})")
    code, third = login(ADMIN, ADMIN_PASSWORD)
    code, _ = call("POST", "/auth/mfa/verify", {"mfa_ticket": third.get("mfa_ticket"), "recovery_code": recovery[0]})
    check(code == 400, f"{label}: once ({code})")
    strong = tokens.get("access_token")
    code, users = call("GET", "/auth/users", token=strong)
    check(code == 200, f"{label}: the admin is allowed after the second factor ({code})")
    code, _ = call("GET", "/auth/users", token=weak)
    check(code == 403, f"{label}: the password-only session still is not ({code})")


def run(label, env_extra):
    print(f"{label}:", flush=True)
    smtp = Smtp()
    smtp.start()
    server = start_server(env_extra)
    try:
        second_factor(label)
        timing(label)
        email = outage(label, env_extra, smtp)
        server.send_signal(signal.SIGKILL)
        server.wait()
        server = start_server(env_extra)
        smtp.start()
        mail = smtp.wait(email, "Reset your password")
        check(mail is not None, f"{label}: after SIGKILL, restart and SMTP's return, the reset mail arrived")
        if mail is not None:
            token = re.search(r"token=([A-Za-z0-9_-]+)", text_of(mail)).group(1)
            code, _ = call("POST", "/auth/password/reset", {"token": token, "new_password": "a brand new passphrase"})
            check(code == 200, f"{label}: its link works ({code})")
            code, _ = call("POST", "/auth/password/reset", {"token": token, "new_password": "yet another passphrase"})
            check(code == 400, f"{label}: and only once ({code})")
        time.sleep(3)
        check(len(smtp.mails(email, "Reset your password")) == 1,
              f"{label}: exactly one reset mail ({len(smtp.mails(email, 'Reset your password'))})")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
        smtp.stop()
        # The next configuration gets a fresh mailbox.
        subprocess.run(["rm", "-rf", smtp.dir], check=True)


def main():
    db, redis = os.environ.get("ACCOUNTS_DATABASE_URL"), os.environ.get("ACCOUNTS_REDIS_URL")
    if db and redis:
        run("postgres+redis", {"DATABASE_URL": db, "REDIS_URL": redis})
    run("embedded", {"SQLITE_PATH": os.path.join(WORK, "platform.db")})
    if check.failed:
        sys.exit(f"accounts checks failed; server log in {WORK}/server.log")
    print("accounts checks passed")


if __name__ == "__main__":
    main()
