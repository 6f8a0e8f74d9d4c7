#!/usr/bin/env python3
"""The /dashboard page in headless Chromium, against a live server:

1. It loads with no console errors (a CSP violation would be one), the
   focus in the API key field.
2. Signing in by keyboard alone through the OAuth2 token endpoint (email,
   password, the API key as client secret) shows the user.
3. Its stat cards, event types, endpoints, hourly chart and a user's
   activity equal what the API answers; the range picker reloads them.
4. An event posted through the API shows up in the live feed within two
   seconds.
Screenshots are kept as target/dashboard.png and target/dashboard-signin.png.
Usage: dashboard.py path/to/platform-server
"""

import json
import os
import socket
import sys
import tempfile
import time
import urllib.request

from blackbox import check, request, start
from browser import chrome

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/platform-server")
KEY = "dashboard-ci-key"
EMAIL, PASSWORD = "viewer@example.com", "correct-horse-battery"
SHOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(base):
    call = lambda method, path, body=None: request(base, KEY, method, path, body)
    status, body, _ = call("POST", "/auth/register", {"email": EMAIL, "password": PASSWORD})
    check(status == 201, f"register: {status}")
    user = body["user"]["id"]
    now = time.time()
    iso = lambda ago: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - ago))
    events = []
    for i in range(60):
        events.append({"event_type": ["page_view", "click", "signup", "purchase"][i % 4 if i < 40 else 0],
                       "user_id": [user, 2, 3, None][i % 4],
                       "session_id": f"s-{i % 5}", "timestamp": iso(i * 1500)})
    # One outside the last 24 hours: only the wider range counts it.
    events.append({"event_type": "old_visit", "user_id": 4, "timestamp": iso(3 * 86400)})
    status, _, _ = call("POST", "/analytics/events/batch", {"events": events})
    check(status == 200, f"seed events: {status}")
    metrics = []
    for i in range(30):
        metrics.append({"metric_name": "api_calls", "metric_value": 1 + i % 3, "user_id": user,
                        "endpoint": ["/v1/chat", "/v1/embed", "/v1/search"][i % 3], "timestamp": iso(i * 600)})
    metrics += [
        {"metric_name": "cost_usd", "metric_value": 0.125, "user_id": user, "timestamp": iso(60)},
        {"metric_name": "tokens_used", "metric_value": 200000, "user_id": 2,
         "labels": {"model": "m-1", "token_type": "output"}, "timestamp": iso(120)},
    ]
    status, _, _ = call("POST", "/analytics/metrics/batch", {"metrics": metrics})
    check(status == 200, f"seed metrics: {status}")
    return user


def main():
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    work = tempfile.mkdtemp(prefix="dashboard-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""), "PORT": str(port), "METRICS_PORT": str(free_port()),
        "BIND_ADDRESS": "127.0.0.1", "API_KEY": KEY, "SQLITE_PATH": os.path.join(work, "platform.db"),
        "MODEL_PRICES": json.dumps([{"model": "m-1", "input_per_million": 1.0,
                                     "output_per_million": 4.0, "effective_from": "2020-01-01"}]),
    }
    log = open(os.path.join(work, "server.log"), "w")
    proc = start(BIN, env, log, lambda: request(base, KEY, "GET", "/health/live")[0] == 200)
    driver = None
    try:
        user = seed(base)
        driver = chrome("1280,1250", console=True)
        wait = WebDriverWait(driver, 10)
        driver.get(base + "/dashboard")
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        active = driver.switch_to.active_element
        check(active.get_attribute("id") == "api-key", "the API key field has the focus")
        # Keyboard only: type, Tab to the next field, Enter submits.
        active.send_keys(KEY, Keys.TAB, EMAIL, Keys.TAB, PASSWORD)
        driver.save_screenshot(os.path.join(SHOTS, "dashboard-signin.png"))
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
        who = driver.find_element(By.ID, "who").text
        check(EMAIL in who, f"signed in through /auth/token as the user: {who!r}")

        def compare(hours):
            api = request(base, KEY, "GET", f"/analytics/dashboard?hours={hours}")[1]
            value = lambda i: float(driver.find_element(By.ID, i).get_attribute("data-value"))
            shown = lambda i: driver.find_element(By.ID, i).text
            check(value("stat-events") == api["total_events"] and
                  shown("stat-events").replace(",", "") == str(api["total_events"]),
                  f"{hours} h: events card {shown('stat-events')} = API {api['total_events']}")
            check(value("stat-users") == api["active_users"],
                  f"{hours} h: active users card {shown('stat-users')} = API {api['active_users']}")
            check(value("stat-calls") == api["total_api_calls"],
                  f"{hours} h: API calls card {shown('stat-calls')} = API {api['total_api_calls']}")
            check(abs(value("stat-cost") - api["total_cost"]) < 1e-9,
                  f"{hours} h: cost card {shown('stat-cost')} = API {api['total_cost']}")
            rows = driver.find_elements(By.CSS_SELECTOR, "#types tbody tr[data-type]")
            page_types = [(r.get_attribute("data-type"), int(r.find_elements(By.TAG_NAME, "td")[1].text.replace(",", "")))
                          for r in rows]
            api_types = [(t["event_type"], t["count"]) for t in api["event_types"]]
            check(page_types == api_types, f"{hours} h: event types {page_types} = API")
            page_eps = [(r.find_elements(By.TAG_NAME, "td")[0].text, int(r.find_elements(By.TAG_NAME, "td")[1].text))
                        for r in driver.find_elements(By.CSS_SELECTOR, "#endpoints tbody tr")
                        if len(r.find_elements(By.TAG_NAME, "td")) == 2]
            api_eps = [(e["endpoint"], e["count"]) for e in api["top_endpoints"]]
            check(page_eps == api_eps, f"{hours} h: top endpoints {page_eps} = API")
            chart = driver.find_element(By.ID, "hourly-chart")
            bars = chart.find_elements(By.TAG_NAME, "rect")
            check(len(bars) == len(api["hourly"]) and
                  int(chart.get_attribute("data-total")) == sum(b["count"] for b in api["hourly"]),
                  f"{hours} h: {len(bars)} hourly bars totalling {chart.get_attribute('data-total')} = API")
            return api

        api = compare(24)
        check(api["total_cost"] > 0.9, f"the cost prices tokens: {api['total_cost']}")
        driver.save_screenshot(os.path.join(SHOTS, "dashboard.png"))

        # The range picker, by keyboard: 7 days takes in the older event.
        before = driver.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
        Select(driver.find_element(By.ID, "range")).select_by_value("168")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") != before)
        wide = compare(168)
        types_of = lambda d: {t["event_type"] for t in d["event_types"]}
        check("old_visit" in types_of(wide) and "old_visit" not in types_of(api)
              and wide["total_events"] == 61, "the wider range takes in the 3-day-old event")

        # A user's activity, as the API lists it.
        field = driver.find_element(By.ID, "user-id")
        field.send_keys(str(user), Keys.ENTER)
        wait.until(lambda d: d.find_element(By.ID, "user-summary").get_attribute("data-count"))
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 168 * 3600))
        listed = request(base, KEY, "GET", f"/analytics/users/{user}/events?limit=50&from={since}")[1]
        shown = int(driver.find_element(By.ID, "user-summary").get_attribute("data-count"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#user-events tbody tr")
        check(shown == listed["count"] == len(rows) and shown > 0,
              f"user {user}: {shown} events shown = API {listed['count']}")

        # The live feed: an event posted now appears within two seconds.
        wait.until(lambda d: d.find_element(By.ID, "feed-status").get_attribute("data-state") == "live")
        status, body, _ = request(base, KEY, "POST", "/analytics/events",
                                  {"event_type": "live_check", "user_id": user})
        check(status == 200, f"post a live event: {status}")
        posted = time.monotonic()
        WebDriverWait(driver, 2, poll_frequency=0.05).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, f"#feed li[data-id='{body['id']}']"))
        check(True, f"the event reached the live feed in {time.monotonic() - posted:.2f} s")
        item = driver.find_element(By.CSS_SELECTOR, f"#feed li[data-id='{body['id']}']").text
        check("live_check" in item, f"the feed shows it: {item!r}")
        driver.save_screenshot(os.path.join(SHOTS, "dashboard-live.png"))

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        check(not errors, f"no console errors: {errors}")
    except BaseException:
        log.flush()
        print(open(os.path.join(work, "server.log")).read()[-4000:])
        raise
    finally:
        if driver:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=10)
    if check.failed:
        sys.exit("dashboard: FAILED")
    print("dashboard: all passed")


if __name__ == "__main__":
    main()
