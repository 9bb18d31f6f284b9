#!/usr/bin/env bash
# Regenerates agent/link-order.txt: the functions of nodewarden-agent that a start and a few
# scrapes run, which agent/build.rs asks the linker (LLD) to place together so that fewer of the
# binary's pages become resident (docs/perf.md). Run it after changes to the scrape path, then
# rebuild; `--check` only reports how many listed names the current release binary still has.
#
#   scripts/agent-link-order.sh [--check]
#
# Two runs: metrics only, and with a controller link (a debug controller, its own CA, loopback),
# as every managed node runs. Needs valgrind (callgrind) and curl; loopback ports only.
set -euo pipefail
cd "$(dirname "$0")/.."
list=agent/link-order.txt
bin=${CARGO_TARGET_DIR:-target}/release/nodewarden-agent

cargo build --release --quiet -p nodewarden-agent
defined=$(mktemp)
nm "$bin" | awk '$2 ~ /^[tT]$/ {print $3}' | sort -u > "$defined"
if [ "${1:-}" = "--check" ]; then
  listed=$(grep -c . "$list")
  found=$(sort -u "$list" | comm -12 - "$defined" | grep -c . || true)
  echo "agent-link-order: $found of $listed listed functions are in $bin"
  rm -f "$defined"
  exit 0
fi

command -v valgrind >/dev/null || { echo "agent-link-order: valgrind is needed" >&2; exit 1; }
cargo build --quiet -p nodewarden-controller   # the other end of the link run (debug is enough)
controller_bin=${CARGO_TARGET_DIR:-target}/debug/nodewarden-controller
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work" "$defined"' EXIT
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# profile NAME ARGS...: runs the agent under callgrind with ARGS, waits for its metrics (and,
# with a link, for the link to be up and a few reports to go out), scrapes it with and without
# gzip, stops it; the functions it ran go to $work/NAME.fns.
profile() {
  local name=$1; shift
  local port; port=$(free_port)
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.out" \
    "$bin" --web.listen-address="127.0.0.1:$port" "$@" >"$work/$name.log" 2>&1 &
  local agent=$!
  local metrics=""
  for _ in $(seq 240); do
    metrics=$(curl -fs "http://127.0.0.1:$port/metrics" || true)
    [ -n "$metrics" ] && break
    sleep 0.5
  done
  if [ "$name" = link ]; then
    for _ in $(seq 240); do
      grep -q '^nodewarden_agent_controller_connected 1' <<<"$metrics" && break
      sleep 0.5
      metrics=$(curl -fs "http://127.0.0.1:$port/metrics" || true)
    done
    grep -q '^nodewarden_agent_controller_connected 1' <<<"$metrics" ||
      { echo "agent-link-order: the agent did not link; see $work/link.log" >&2; cat "$work/link.log" >&2; exit 1; }
    sleep 5   # state reports and keep-alives
  fi
  for _ in 1 2 3 4 5; do
    curl -fs -H 'Accept-Encoding: gzip' -o /dev/null "http://127.0.0.1:$port/metrics"
    curl -fs -o /dev/null "http://127.0.0.1:$port/metrics"
  done
  curl -fs -o /dev/null "http://127.0.0.1:$port/"
  kill -INT "$agent"
  wait "$agent" || true
  grep -oE '^c?fn=\([0-9]+\) .+$' "$work/$name.out" | sed -E 's/^c?fn=\([0-9]+\) //' | sort -u \
    >"$work/$name.fns"
}

# 1. Metrics only, as node_exporter's replacement.
profile metrics

# 2. With the controller link, as every managed node runs (QUIC, TLS, state reports).
"$controller_bin" ca init --dir "$work/ca" --san 127.0.0.1 >/dev/null
"$controller_bin" ca issue node-1 --dir "$work/ca" --out-dir "$work/node" >/dev/null
link_port=$(free_port)
mkdir -p "$work/fragments"
cat >"$work/controller.toml" <<TOML
[link]
listen = "127.0.0.1:$link_port"
ca_dir = "ca"
idle_timeout_ms = 60000   # callgrind slows the agent down fifty-fold
[http]
listen = ""
[pushgateway]
url = ""
TOML
cat >"$work/agent.toml" <<TOML
roles = ["storage"]
[controller]
address = "127.0.0.1:$link_port"
server_name = "127.0.0.1"
ca_file = "$work/node/ca.pem"
cert_file = "$work/node/node-1.pem"
key_file = "$work/node/node-1.key"
report_interval_ms = 1000
[[storage.devices]]
id = 1
fragment_dir = "$work/fragments"
TOML
"$controller_bin" serve --config "$work/controller.toml" >"$work/controller.log" 2>&1 &
pids+=($!)
profile link --config "$work/agent.toml"

# The metrics path first, then what only the link runs: an agent without a link (and the
# benchmark) keeps its hot code as dense as before.
comm -12 "$work/metrics.fns" "$defined" > "$work/first"
comm -23 "$work/link.fns" "$work/metrics.fns" | comm -12 - "$defined" > "$work/then"
cat "$work/first" "$work/then" > "$list"
echo "agent-link-order: $(grep -c . "$list") functions written to $list" \
  "($(grep -c . "$work/first") on the metrics path, then $(grep -c . "$work/then") the link adds);" \
  "rebuild the agent to apply"
