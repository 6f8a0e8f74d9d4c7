#!/usr/bin/env python3
"""Real third-party clients against a live server, with their defaults:

1. authlib's OAuth2Session (client_secret_basic) fetches a token with the
   password grant, refreshes it, calls a user route, and reads a wrong
   password as an OAuthError `invalid_grant`.
2. Swagger UI in headless Chromium: Authorize (the API key, then the OAuth2
   password flow with its default client-credentials location), then
   "Try it out" on GET /auth/profile must answer 200 with the user.
   A screenshot is kept as target/swagger-authorize.png.

The API key is a managed one made with `platform-server api-keys create`.
Usage: clients.py path/to/platform-server
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError

from browser import chrome

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/platform-server")
SHOT = os.path.abspath("target/swagger-authorize.png")
EMAIL, PASSWORD = "swagger@example.com", "correct-horse-battery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAIL: {what}")
    print(f"ok: {what}")


def start_server(workdir):
    port, metrics = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PORT": str(port),
        "METRICS_PORT": str(metrics),
        "BIND_ADDRESS": "127.0.0.1",
        "API_KEY": "bootstrap-key-not-used-by-clients",
        "SQLITE_PATH": os.path.join(workdir, "platform.db"),
    }
    subprocess.run([BIN, "migrate", "up"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [BIN, "api-keys", "create", "--name", "swagger-ui", "--scopes", "auth"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    secret = next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("secret: "))
    log = open(os.path.join(workdir, "server.log"), "w")
    proc = subprocess.Popen([BIN], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(base + "/health/ready", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        time.sleep(0.1)
    else:
        raise SystemExit("server did not start")
    r = requests.post(base + "/auth/register", headers={"X-API-Key": secret},
                      json={"email": EMAIL, "password": PASSWORD, "first_name": "Swagger"})
    check(r.status_code == 201, f"register with the managed key: {r.status_code}")
    return proc, base, secret


def oauth2_library(base, secret):
    token_url = base + "/auth/token"
    client = OAuth2Session("any-client-id", secret)  # client_secret_basic by default
    token = client.fetch_token(token_url, username=EMAIL, password=PASSWORD)
    check(token["token_type"] == "bearer" and token["access_token"], "authlib fetched a token")
    me = client.get(base + "/auth/profile", headers={"X-API-Key": secret})
    check(me.status_code == 200 and me.json()["email"] == EMAIL, "authlib's token opens /auth/profile")
    refreshed = client.refresh_token(token_url, refresh_token=token["refresh_token"])
    check(refreshed["refresh_token"] != token["refresh_token"], "authlib refreshed at /auth/token")
    me = client.get(base + "/auth/verify", headers={"X-API-Key": secret})
    check(me.status_code == 200, "the refreshed token verifies")
    try:
        OAuth2Session("any-client-id", secret).fetch_token(
            token_url, username=EMAIL, password="wrong-password-here")
        raise SystemExit("FAIL: a wrong password gave a token")
    except OAuthError as e:
        check(e.error == "invalid_grant", f"a wrong password is OAuthError {e.error!r}")
    try:
        OAuth2Session("any-client-id", "psk_not-a-key").fetch_token(
            token_url, username=EMAIL, password=PASSWORD)
        raise SystemExit("FAIL: a wrong client secret gave a token")
    except OAuthError as e:
        check(e.error == "invalid_client", f"a wrong client secret is OAuthError {e.error!r}")


def swagger_ui(base, secret):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome()
    wait = WebDriverWait(driver, 20)
    try:
        driver.get(base + "/docs/")
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button.btn.authorize"))).click()
        dialog = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux .modal-ux")))
        # Each scheme is a form of its own with its own Authorize button.
        forms = dialog.find_elements(By.CSS_SELECTOR, ".auth-container")

        def section(name):
            for f in forms:
                if name in f.text:
                    return f
            raise SystemExit(f"FAIL: no {name} section in the Authorize dialog")

        api_key = section("api_key")
        api_key.find_element(By.CSS_SELECTOR, "input[type=text], input:not([type])").send_keys(secret)
        api_key.find_element(By.CSS_SELECTOR, "button.authorize").click()
        oauth = section("oauth2")
        field = lambda name: oauth.find_element(By.CSS_SELECTOR, f"[data-name={name}]")
        field("username").send_keys(EMAIL)
        field("password").send_keys(PASSWORD)
        field("clientId").send_keys("swagger-ui")
        field("clientSecret").send_keys(secret)
        # Swagger UI's default: client credentials in the Authorization header.
        location = field("passwordType")
        check(location.get_attribute("value") == "basic",
              "the client-credentials location is Swagger UI's default (Authorization header)")
        oauth.find_element(By.CSS_SELECTOR, "button.authorize").click()
        wait.until(lambda d: "Logout" in section("oauth2").text or "error" in section("oauth2").text.lower())
        forms = driver.find_elements(By.CSS_SELECTOR, ".dialog-ux .auth-container")
        check("Logout" in section("oauth2").text, f"oauth2 authorized: {section('oauth2').text[:200]!r}")
        driver.find_element(By.CSS_SELECTOR, ".dialog-ux button.btn-done").click()

        op = driver.find_element(By.ID, "operations-auth-get_profile")
        driver.execute_script("arguments[0].scrollIntoView()", op)
        op.find_element(By.CSS_SELECTOR, ".opblock-summary-control, .opblock-summary").click()
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#operations-auth-get_profile .try-out__btn"))).click()
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#operations-auth-get_profile button.execute"))).click()
        status_cell = wait.until(EC.visibility_of_element_located(
            (By.CSS_SELECTOR, "#operations-auth-get_profile .live-responses-table .response .response-col_status")))
        body = driver.find_element(
            By.CSS_SELECTOR, "#operations-auth-get_profile .live-responses-table .response .microlight").text
        driver.execute_script("arguments[0].scrollIntoView()", status_cell)
        os.makedirs(os.path.dirname(SHOT), exist_ok=True)
        driver.save_screenshot(SHOT)
        print(f"screenshot: {SHOT}")
        check(status_cell.text.strip().startswith("200"), f"Try it out on GET /auth/profile: {status_cell.text!r}")
        check(EMAIL in body, "the answer is the user")
    finally:
        driver.quit()


def main():
    workdir = tempfile.mkdtemp()
    proc, base, secret = start_server(workdir)
    try:
        oauth2_library(base, secret)
        swagger_ui(base, secret)
    except BaseException:
        print(open(os.path.join(workdir, "server.log")).read()[-4000:])
        raise
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    print("clients: all passed")


if __name__ == "__main__":
    main()
