#!/usr/bin/env bash
# The main job: a demo cluster on this machine with embedded defaults. A controller (its own CA,
# fleet state in embedded SQLite, HTTP on 127.0.0.1:9180) and three agents on loopback — two
# storage nodes with fragment folders, one Ray node — each serving node_exporter-compatible
# metrics. Everything lives in target/demo (NODEWARDEN_DEMO_DIR); Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
demo=$(realpath -m "${NODEWARDEN_DEMO_DIR:-target/demo}")
bin=target/release
http=127.0.0.1:9180
link=127.0.0.1:9443

source scripts/services.sh   # for ensure_packages; no service is started
ensure_packages "${NW_BUILD_PACKAGES[@]}"

echo "== building (release)"
# Apart: built together, the controller's dependency features would be unified into the agent.
cargo build --release --quiet -p nodewarden-agent
cargo build --release --quiet -p nodewarden-controller
mkdir -p "$demo/logs"

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
[pushgateway]
url = ""                       # no Pushgateway in the demo; see docs/operations.md
TOML
[ -f "$demo/sd.token" ] || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$demo/sd.token"

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

"$bin/nodewarden-controller" serve --config "$demo/controller.toml" >"$demo/logs/controller.log" 2>&1 &
pids+=($!)

port=9101
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
   node metrics: curl http://127.0.0.1:9101/metrics        controller metrics: curl http://$http/metrics
   the CLI, after this line in your shell:
     export NODEWARDEN_API=http://$http NODEWARDEN_DATA_DIR=$demo/data NODEWARDEN_TOKEN_FILE=$demo/data/api.token PATH=$bin:\$PATH
     nodewarden-controller nodes                     # the fleet
     nodewarden-controller action wake --role storage    # remote operations, in the audit log
     nodewarden-controller events                    # the audit log
     nodewarden-controller device list               # storage devices and their owners
Ctrl-C stops the controller and the agents.
TXT
wait -n "${pids[@]}"
