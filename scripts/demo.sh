#!/usr/bin/env bash
# The main job: a demo cluster on this machine with embedded defaults. A controller (its own CA,
# fleet state in embedded SQLite, HTTP on 127.0.0.1:9180) and three agents on loopback — two
# storage nodes with fragment folders, one Ray node with a stand-in for Ray's metrics agent —
# each serving node_exporter-compatible metrics; and the monitoring pipeline with the shipped
# configuration (packaging/): Prometheus discovering the agents through the controller and
# evaluating the shipped alert rules, the Pushgateway the controller pushes the fleet aggregates
# to, Alertmanager delivering alerts to the controller's webhook (console and audit log).
# Everything lives in target/demo (NODEWARDEN_DEMO_DIR); Ctrl-C stops it all.
#
# The pipeline's ports are not the Debian packages' defaults (9090/9091/9093), so that the demo
# runs beside services an apt install may have started. Every port can be moved:
# NW_DEMO_HTTP_PORT (9180), NW_DEMO_LINK_PORT (9443, UDP), NW_DEMO_AGENT_PORT (9101: the three
# agents take it and the next two), NW_DEMO_RAY_PORT (9104), NW_DEMO_PROMETHEUS_PORT (19090),
# NW_DEMO_PUSHGATEWAY_PORT (19091), NW_DEMO_ALERTMANAGER_PORT (19093). NW_DEMO_BIN names a
# folder of already built binaries (the test suite's) and skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
repo=$(pwd)
demo=$(realpath -m "${NODEWARDEN_DEMO_DIR:-target/demo}")
bin=${NW_DEMO_BIN:-$repo/target/quick-release}
http=127.0.0.1:${NW_DEMO_HTTP_PORT:-9180}
link=127.0.0.1:${NW_DEMO_LINK_PORT:-9443}
agent_port=${NW_DEMO_AGENT_PORT:-9101}
prometheus_port=${NW_DEMO_PROMETHEUS_PORT:-19090}
pushgateway_port=${NW_DEMO_PUSHGATEWAY_PORT:-19091}
alertmanager_port=${NW_DEMO_ALERTMANAGER_PORT:-19093}
ray_port=${NW_DEMO_RAY_PORT:-9104}

source scripts/services.sh   # for ensure_packages; no service is started
ensure_packages "${NW_BUILD_PACKAGES[@]}"
# The pipeline is worth having but not required: without a package the demo runs without it.
pipeline=(prometheus prometheus-pushgateway prometheus-alertmanager)
ensure_packages "${pipeline[@]}" ||
  echo "!! could not install ${pipeline[*]}: the demo runs without what is missing"
have() { command -v "$1" >/dev/null 2>&1; }

# The quick-release profile (Cargo.toml): optimised without whole-program LTO, agent and controller in
# one build, cargo's progress shown. A first build takes minutes (docs/perf.md).
if [ -z "${NW_DEMO_BIN:-}" ]; then
  echo "== building (profile quick-release; the first build takes a few minutes, later ones seconds)"
  cargo build --profile quick-release -p nodewarden-agent -p nodewarden-controller
fi
mkdir -p "$demo/logs" "$demo/run"

if [ ! -f "$demo/ca/ca.pem" ]; then
  "$bin/nodewarden-controller" ca init --dir "$demo/ca" --san localhost --san 127.0.0.1 >/dev/null
fi
nodes=(storage-1 storage-2 ray-1)
for node in "${nodes[@]}"; do
  [ -f "$demo/nodes/$node.pem" ] ||
    "$bin/nodewarden-controller" ca issue "$node" --dir "$demo/ca" --out-dir "$demo/nodes" >/dev/null
done

cat >"$demo/controller.toml" <<TOML
data_dir = "data"        # the embedded SQLite fleet store: data/nodewarden.db
[link]
listen = "$link"
ca_dir = "ca"
[http]
listen = "$http"
sd_token_file = "sd.token"     # Prometheus's http_sd token (the API token works too)
alerts_token_file = "alertmanager.token"  # what Alertmanager presents to the webhook
[pushgateway]
url = "$(have prometheus-pushgateway && echo "http://127.0.0.1:$pushgateway_port")"
interval_ms = 5000
TOML
for token in sd alertmanager; do
  [ -f "$demo/$token.token" ] || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$demo/$token.token"
done

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Services the demo's agents were asked to start run detached, as real ones would.
  for pidfile in "$demo"/run/*/dfs-client.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# A port already taken would make a service exit at once with a log line nobody reads.
for p in "${http#*:}" $prometheus_port $pushgateway_port $alertmanager_port $ray_port \
  $agent_port $((agent_port + 1)) $((agent_port + 2)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "!! 127.0.0.1:$p is in use (an earlier demo still running?); stop it first" >&2
    exit 1
  fi
done

"$bin/nodewarden-controller" serve --config "$demo/controller.toml" >"$demo/logs/controller.log" 2>&1 &
pids+=($!)

# The shipped Prometheus configuration, pointed at the demo's ports, tokens and rule files
# (scrape and evaluation every 5 s so the demo shows data at once; no InfluxDB).
started=()
missing=()
if have prometheus-pushgateway; then
  prometheus-pushgateway --web.listen-address="127.0.0.1:$pushgateway_port" \
    >"$demo/logs/pushgateway.log" 2>&1 &
  pids+=($!); started+=(pushgateway)
else
  missing+=("prometheus-pushgateway (no fleet aggregates)")
fi
if have prometheus-alertmanager; then
  sed -e "s#/etc/nodewarden/alertmanager.token#$demo/alertmanager.token#" \
    -e "s#127.0.0.1:9180#$http#g" \
    packaging/alertmanager/alertmanager.yml >"$demo/alertmanager.yml"
  # No gossip port: the demo's Alertmanager is alone, and listens on loopback only.
  prometheus-alertmanager --config.file="$demo/alertmanager.yml" \
    --storage.path="$demo/alertmanager" --web.listen-address="127.0.0.1:$alertmanager_port" \
    --cluster.listen-address= >"$demo/logs/alertmanager.log" 2>&1 &
  pids+=($!); started+=(alertmanager)
else
  missing+=("prometheus-alertmanager (alerts are evaluated but go nowhere)")
fi
if have prometheus; then
  sed -e "s#/usr/share/nodewarden/prometheus/rules/#$repo/packaging/prometheus/rules/#" \
    -e "/rules.d/d" \
    -e "s#/etc/nodewarden/prometheus-sd.token#$demo/sd.token#" \
    -e "s#127.0.0.1:9180#$http#g" \
    -e "s#127.0.0.1:9090#127.0.0.1:$prometheus_port#" \
    -e "s#127.0.0.1:9091#127.0.0.1:$pushgateway_port#" \
    -e "s#127.0.0.1:9093#127.0.0.1:$alertmanager_port#" \
    -e "s#scrape_interval: 15s#scrape_interval: 5s#; s#evaluation_interval: 15s#evaluation_interval: 5s#" \
    -e "s#refresh_interval: 30s#refresh_interval: 5s#" \
    -e '/^# Long-term storage/,$d' \
    packaging/prometheus/prometheus.yml >"$demo/prometheus.yml"
  prometheus --config.file="$demo/prometheus.yml" --storage.tsdb.path="$demo/prometheus" \
    --web.listen-address="127.0.0.1:$prometheus_port" >"$demo/logs/prometheus.log" 2>&1 &
  pids+=($!); started+=(prometheus)
else
  missing+=("prometheus (no discovery, charts or alert rules)")
fi

# A stand-in for Ray's metrics agent on the Ray node (ray start --metrics-export-port), which
# the ray-1 agent reports and Prometheus discovers as job ray.
python3 - "$ray_port" >"$demo/logs/ray-metrics.log" 2>&1 <<'PY' &
import http.server, sys, time
class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("# HELP ray_demo_uptime_seconds Seconds since the stand-in started.\n"
                "# TYPE ray_demo_uptime_seconds gauge\n"
                "ray_demo_uptime_seconds %.1f\n" % (time.time() - START)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
START = time.time()
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Metrics).serve_forever()
PY
pids+=($!)

port=$agent_port
device=1
for node in "${nodes[@]}"; do
  role=${node%%-*}
  {
    echo "roles = [\"$role\"]"
    echo "[controller]"
    echo "address = \"$link\""
    echo "server_name = \"localhost\""
    echo "ca_file = \"ca/ca.pem\""
    echo "cert_file = \"nodes/$node.pem\""
    echo "key_file = \"nodes/$node.key\""
    if [ "$role" = ray ]; then
      echo "[ray]"
      echo "metrics_port = $ray_port"
      echo "discovery_file = \"$demo/run/ray-discovery.json\"   # Ray's head writes it; none here"
    fi
    if [ "$role" = storage ]; then
      # A stand-in for the DFS storage client (java -jar client.jar), declared so that the
      # controller may start and stop it.
      mkdir -p "$demo/run/$node"
      echo "[[services]]"
      echo "name = \"dfs-client\""
      echo "start = [\"sleep\", \"infinity\"]"
      echo "workdir = \"$demo/run/$node\""
      echo "pid_file = \"$demo/run/$node/dfs-client.pid\""
      for _ in 1 2; do
        mkdir -p "$demo/fragments/$node/dev$device"
        echo "[[storage.devices]]"
        echo "id = $device"
        echo "fragment_dir = \"$demo/fragments/$node/dev$device\""
        device=$((device + 1))
      done
    fi
  } >"$demo/$node.toml"
  "$bin/nodewarden-agent" --config "$demo/$node.toml" --web.listen-address="127.0.0.1:$port" \
    >"$demo/logs/$node.log" 2>&1 &
  pids+=($!)
  echo $! >"$demo/run/$node.agent.pid"
  echo "   $node: metrics on http://127.0.0.1:$port/metrics"
  port=$((port + 1))
done

token_header() { echo "Authorization: Bearer $(cat "$demo/data/api.token" 2>/dev/null)"; }
echo "== waiting for the agents to connect"
for _ in $(seq 1 100); do
  online=$(curl -fsS -H "$(token_header)" "http://$http/api/v1/nodes" 2>/dev/null |
    python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin) if n["online"]))' 2>/dev/null || echo 0)
  [ "$online" -ge "${#nodes[@]}" ] && break
  sleep 0.2
done
echo "== $online of ${#nodes[@]} nodes online"
curl -fsS -H "$(token_header)" "http://$http/api/v1/nodes" | python3 -c '
import json, sys
for n in json.load(sys.stdin):
    r = n.get("last_report") or {}
    devices = ", ".join("device %s: %.1f GiB free" % (d["device_id"], d["free_bytes"] / 2**30) for d in r.get("storage", []))
    print("   %-10s %-8s %s" % (n["name"], "online" if n["online"] else "offline", devices))
' || true
cat <<TXT

nodewarden demo running (logs in $demo/logs, state in $demo/data):
   web console: http://$http/console/   (sign in with the token in $demo/data/api.token)
   fleet view:  curl -H "Authorization: Bearer \$(cat $demo/data/api.token)" http://$http/api/v1/nodes
   agents for Prometheus (http_sd): curl -H "Authorization: Bearer \$(cat $demo/sd.token)" http://$http/api/v1/sd/agents
   Ray's metrics for Prometheus:    curl -H "Authorization: Bearer \$(cat $demo/sd.token)" http://$http/api/v1/sd/endpoints/ray
   node metrics: curl http://127.0.0.1:$agent_port/metrics        controller metrics: curl http://$http/metrics
TXT
for s in "${started[@]}"; do
  case $s in
    prometheus) echo "   Prometheus:   http://127.0.0.1:$prometheus_port/targets (jobs nodes, ray, pushgateway, controller), /alerts (the shipped rules)" ;;
    pushgateway) echo "   Pushgateway:  http://127.0.0.1:$pushgateway_port/ (the fleet aggregates: dontpanic_online_device_count, dontpanic_device_leftrs)" ;;
    alertmanager) echo "   Alertmanager: http://127.0.0.1:$alertmanager_port/ (routes to the controller's webhook: alerts land in the console's events)" ;;
  esac
done
for m in "${missing[@]}"; do echo "   not running: $m"; done
cat <<TXT
   make an alert fire on purpose (storage-2 goes silent: NodewardenNodeOffline, critical, after
   its 1 min 'for', and StorageDevicesOnlineLow; Alertmanager calls the controller's webhook):
     kill -STOP \$(cat $demo/run/storage-2.agent.pid)     # and kill -CONT ... to recover (resolved)
     nodewarden-controller events --node storage-2        # the notifications, in the audit log
     curl -H "Authorization: Bearer \$(cat $demo/data/api.token)" http://$http/api/v1/alerts   # firing now
   the CLI, after this line in your shell:
     export NODEWARDEN_API=http://$http NODEWARDEN_DATA_DIR=$demo/data NODEWARDEN_TOKEN_FILE=$demo/data/api.token PATH=$bin:\$PATH
     nodewarden-controller nodes                     # the fleet
     nodewarden-controller action wake --role storage    # remote operations, in the audit log
     nodewarden-controller events                    # the audit log
     nodewarden-controller device list               # storage devices and their owners
Ctrl-C stops the controller and the agents.
TXT
wait -n "${pids[@]}"
