#!/usr/bin/env bash
# Real third-party clients with their defaults: authlib (OAuth2), Swagger
# UI in headless Chromium, and passkeys through Chromium's WebAuthn API with
# its virtual authenticator. Installs what they need (Debian's chromium and
# chromium-driver, selenium and authlib from PyPI) and keeps the screenshots
# as target/swagger-authorize.png and target/dashboard*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check selenium authlib requests >/dev/null 2>&1
[ -x target/debug/platform-server ] || cargo build --quiet
python3 .ci/clients.py target/debug/platform-server
# Passkeys: Chromium's virtual WebAuthn authenticator, the browser's API.
python3 .ci/passkeys.py target/debug/platform-server
# The /dashboard page: its numbers against the API's, and the live feed.
python3 .ci/dashboard.py target/debug/platform-server
