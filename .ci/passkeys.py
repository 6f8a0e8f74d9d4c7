#!/usr/bin/env python3
"""Passkeys in a real browser (run through .ci/clients.sh): headless Chromium
with its WebAuthn virtual authenticator (CTAP2, resident keys, user
verification) as the authenticator, the browser's own WebAuthn API, and a
page on another loopback origin calling the API as a front end would.

- a passkey registered by an admin (the server in production: admin
  endpoints need a second factor);
- a password then the passkey as the second step: tokens with amr hwk and
  acr aal2; the admin endpoints allow the session; a spent ceremony refused;
- passwordless login with the discoverable passkey;
- list, rename, and delete (which needs a session with a second factor).
"""

import base64
import http.server
import json
import os
import socketserver
import sys
import tempfile
import threading

from blackbox import check, request, start
from browser import chrome

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/platform-server"
KEY = "passkeys-key"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


API_PORT, PAGE_PORT = free_port(), free_port()
API = f"http://localhost:{API_PORT}"
PAGE = f"http://localhost:{PAGE_PORT}"
ADMIN, ADMIN_PASSWORD = "keyholder@example.com", "a long admin passphrase"
WORK = tempfile.mkdtemp(prefix="passkeys-")

# The front end's half of each ceremony, with the browser's JSON helpers.
PAGE_HTML = """<!doctype html><meta charset="utf-8"><title>passkeys</title><script>
const API = "%s", KEY = "%s";
async function call(path, body, token) {
  const headers = {"X-API-Key": KEY, "Content-Type": "application/json"};
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch(API + path, {method: "POST", headers, body: JSON.stringify(body || {})});
  return {status: r.status, body: await r.json()};
}
async function register(token, name) {
  const start = await call("/auth/passkeys/register/start", {}, token);
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(start.body.options.publicKey);
  const cred = await navigator.credentials.create({publicKey});
  return call("/auth/passkeys/register/finish",
              {ceremony_id: start.body.ceremony_id, name, credential: cred.toJSON()}, token);
}
async function assertion(start) {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(start.body.options.publicKey);
  const cred = await navigator.credentials.get({publicKey});
  return {ceremony_id: start.body.ceremony_id, credential: cred.toJSON()};
}
async function secondFactor(ticket) {
  const passkey = await assertion(await call("/auth/mfa/passkey/start", {mfa_ticket: ticket}));
  const first = await call("/auth/mfa/verify", {mfa_ticket: ticket, passkey});
  const again = await call("/auth/mfa/verify", {mfa_ticket: ticket, passkey});
  return {first, again};
}
async function passwordless() {
  const proof = await assertion(await call("/auth/passkeys/login/start"));
  const first = await call("/auth/passkeys/login/finish", proof);
  const replay = await call("/auth/passkeys/login/finish", proof);
  return {first, replay};
}
</script><p>passkeys test page</p>""" % (API, KEY)


def call(method, path, body=None, token=None):
    return request(API, KEY, method, path, body, token)[:2]


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def serve_page():
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = PAGE_HTML.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = socketserver.TCPServer(("127.0.0.1", PAGE_PORT), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_server():
    env = {"PATH": os.environ["PATH"], "ENVIRONMENT": "production", "API_KEY": KEY,
           "JWT_SECRET": "passkeys-check-secret-that-is-long-enough-for-production",
           "PORT": str(API_PORT), "METRICS_ENABLED": "false", "BIND_ADDRESS": "127.0.0.1",
           "SQLITE_PATH": os.path.join(WORK, "platform.db"), "PASSWORD_HASH_ROUNDS": "10",
           "ADMIN_EMAIL": ADMIN, "ADMIN_PASSWORD": ADMIN_PASSWORD,
           "WEBAUTHN_RP_ID": "localhost", "WEBAUTHN_ORIGINS": PAGE, "CORS_ORIGINS": PAGE}
    # PASSKEYS_DATABASE_URL runs the same checks on Postgres.
    if os.environ.get("PASSKEYS_DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["PASSKEYS_DATABASE_URL"]
    log = open(os.path.join(WORK, "server.log"), "w")
    return start(BIN, env, log, lambda: call("GET", "/health/live")[0] == 200)


def browser():
    from selenium.webdriver.common.virtual_authenticator import VirtualAuthenticatorOptions

    driver = chrome()
    driver.set_script_timeout(30)
    driver.get(PAGE + "/")
    # The authenticator side: Chromium's virtual CTAP2 authenticator with
    # discoverable credentials and user verification.
    authenticator = VirtualAuthenticatorOptions()
    authenticator.protocol = VirtualAuthenticatorOptions.Protocol.CTAP2
    authenticator.transport = VirtualAuthenticatorOptions.Transport.INTERNAL
    authenticator.has_resident_key = True
    authenticator.has_user_verification = True
    authenticator.is_user_verified = True
    authenticator.is_user_consenting = True
    driver.add_virtual_authenticator(authenticator)
    return driver


def js(driver, call_expr):
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"({call_expr}).then(done, e => done({{error: String(e)}}));")


def main():
    page = serve_page()
    server = start_server()
    driver = browser()
    try:
        code, body = call("POST", "/auth/login", {"email": ADMIN, "password": ADMIN_PASSWORD})
        weak = body.get("access_token")
        check(code == 200 and weak, f"admin logs in with a password ({code})")
        check(call("GET", "/auth/users", token=weak)[0] == 403, "production: admin endpoints refused without a second factor")

        reg = js(driver, f"register({json.dumps(weak)}, 'Laptop')")
        check(reg.get("status") == 201 and reg["body"].get("name") == "Laptop", f"passkey registered in the browser: {reg.get('status')}")
        recovery = reg.get("body", {}).get("recovery_codes") or []
        check(len(recovery) == 10, "the first factor brings ten recovery codes")
        check(len(driver.get_credentials()) == 1 and driver.get_credentials()[0].is_resident_credential,
              "the authenticator holds one discoverable credential")

        code, step1 = call("POST", "/auth/login", {"email": ADMIN, "password": ADMIN_PASSWORD})
        check(step1.get("mfa_required") is True and "passkey" in step1.get("methods", []),
              f"the password now answers a ticket offering the passkey: {step1.get('methods')}")
        second = js(driver, f"secondFactor({json.dumps(step1.get('mfa_ticket'))})")
        first = second.get("first", {})
        strong = first.get("body", {}).get("access_token")
        check(first.get("status") == 200 and strong, f"the passkey as second factor: {first.get('status')}")
        if strong:
            c = claims(strong)
            check(c.get("amr") == ["pwd", "hwk", "mfa"] and c.get("acr") == "aal2", f"amr/acr: {c.get('amr')} {c.get('acr')}")
            check(call("GET", "/auth/users", token=strong)[0] == 200, "the admin endpoints allow the session")
        check(second.get("again", {}).get("status") == 401, f"the spent ceremony and ticket are refused: {second.get('again', {}).get('status')}")
        code, step1 = call("POST", "/auth/login", {"email": ADMIN, "password": ADMIN_PASSWORD})
        code, body = call("POST", "/auth/mfa/verify", {"mfa_ticket": step1.get("mfa_ticket"), "recovery_code": recovery[0] if recovery else ""})
        check(code == 200, f"a recovery code instead of the passkey ({code})")

        pl = js(driver, "passwordless()")
        token = pl.get("first", {}).get("body", {}).get("access_token")
        check(pl.get("first", {}).get("status") == 200 and token, f"passwordless login with the discoverable passkey: {pl.get('first', {}).get('status')}")
        if token:
            c = claims(token)
            check(c.get("amr") == ["hwk", "mfa"] and c.get("acr") == "aal2" and c.get("email") == ADMIN,
                  f"the passkey named its user: {c.get('email')} {c.get('amr')}")
        check(pl.get("replay", {}).get("status") == 401, f"a replayed assertion is refused: {pl.get('replay', {}).get('status')}")

        code, keys = call("GET", "/auth/passkeys", token=weak)
        check(code == 200 and len(keys) == 1 and keys[0]["last_used_at"], f"listed, with its last use: {keys}")
        pid = keys[0]["id"] if keys else 0
        code, renamed = call("PATCH", f"/auth/passkeys/{pid}", {"name": "Work laptop"}, token=weak)
        check(code == 200 and renamed.get("name") == "Work laptop", "renamed")
        check(call("DELETE", f"/auth/passkeys/{pid}", token=weak)[0] == 403, "deleting needs a session with a second factor")
        check(call("DELETE", f"/auth/passkeys/{pid}", token=strong)[0] == 200, "deleted from the strong session")
        code, body = call("POST", "/auth/login", {"email": ADMIN, "password": ADMIN_PASSWORD})
        check("access_token" in body, "without a factor the password alone logs in again")
    finally:
        driver.quit()
        server.terminate()
        server.wait()
        page.shutdown()
    if check.failed:
        sys.exit(f"passkey checks failed; server log in {WORK}/server.log")
    print("passkey checks passed")


if __name__ == "__main__":
    main()
