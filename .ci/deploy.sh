#!/usr/bin/env bash
# The operator files under deploy/ checked offline: the compose file against
# the compose spec, the Kubernetes manifests against the published schemas
# (strict), Prometheus config and alert rules with promtool (the rules also
# unit-tested), nginx's config with `nginx -t`, and the Grafana dashboard and
# alert rules naming only metrics the server exports.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check check-jsonschema kubernetes-validate >/dev/null 2>&1
command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
(systemctl stop nginx prometheus || true) >/dev/null 2>&1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "==> compose file against the compose spec"
python3 -m check_jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
echo "==> Kubernetes manifests (strict)"
python3 -m kubernetes_validate --strict --quiet -k 1.30.0 deploy/kubernetes/*.yaml
echo "==> alert rules: promtool check and unit tests"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)
echo "==> Prometheus config (rule path as mounted by compose)"
cp deploy/prometheus/alerts.yml "$scratch/alerts.yml"
sed "s|/etc/prometheus/alerts.yml|$scratch/alerts.yml|" deploy/prometheus/prometheus.yml > "$scratch/prometheus.yml"
promtool check config "$scratch/prometheus.yml"
echo "==> nginx config (compose service names as loopback)"
sed 's/server-[12]:8007/127.0.0.1:8007/; s/listen 80;/listen 127.0.0.1:18599;/' deploy/nginx/nginx.conf \
  | sed "s|^events|pid $scratch/nginx.pid; error_log $scratch/error.log;\nevents|" > "$scratch/nginx.conf"
nginx -t -q -c "$scratch/nginx.conf" -p "$scratch"
echo "==> dashboard and alerts name exported metrics"
python3 - <<'PY'
import json, re, sys, yaml
described = set(re.findall(r'describe_\w+!\(\s*"([a-z_]+)"', open("src/telemetry/mod.rs").read()))
def names(expr):
    expr = re.sub(r"\{[^}]*\}", "", expr)                          # label matchers
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)          # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)                          # ranges
    words = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", expr))
    promql = {"sum", "max", "min", "avg", "rate", "increase", "histogram_quantile", "or", "and",
              "unless", "label_values", "up"}
    return {re.sub(r"_(bucket|sum|count)$", "", w) for w in words - promql}
dash = json.load(open("deploy/grafana/dashboards/platform-server.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
rules = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
used = set().union(*map(names, exprs))
unknown = sorted(used - described)
panels = [p for p in dash["panels"] if p["type"] != "row"]
print(f"{len(panels)} panels, {len(exprs)} expressions, {len(used)} metrics named")
if unknown or any(not p.get("targets") for p in panels):
    sys.exit(f"not exported by the server: {unknown}")
PY
