#!/usr/bin/env bash
# Repeats hostile traffic against a live server in the production
# configuration (loopback only, about two minutes); fails on a regression.
# Usage: .ci/hostile.sh [binary]   (default: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/platform-server}
[ -x "$bin" ] || cargo build --quiet
timeout 600 python3 .ci/hostile.py "$bin"
