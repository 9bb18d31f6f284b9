#!/usr/bin/env bash
# Regenerates agent/link-order.txt: the functions of nodewarden-agent that a start and a few
# scrapes run, which agent/build.rs asks the linker (LLD) to place together so that fewer of the
# binary's pages become resident (docs/perf.md). Run it after changes to the scrape path, then
# rebuild; `--check` only reports how many listed names the current release binary still has.
#
#   scripts/agent-link-order.sh [--check]
#
# Needs valgrind (callgrind) and curl; runs the agent on a free loopback port.
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
work=$(mktemp -d)
trap 'rm -rf "$work" "$defined"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg.out" \
  "$bin" --web.listen-address="127.0.0.1:$port" >"$work/agent.log" 2>&1 &
agent=$!
for _ in $(seq 120); do
  curl -fs -o /dev/null "http://127.0.0.1:$port/metrics" && break
  sleep 0.5
done
for _ in 1 2 3 4 5; do
  curl -fs -H 'Accept-Encoding: gzip' -o /dev/null "http://127.0.0.1:$port/metrics"
  curl -fs -o /dev/null "http://127.0.0.1:$port/metrics"
done
curl -fs -o /dev/null "http://127.0.0.1:$port/"
kill -INT "$agent"
wait "$agent" || true
grep -oE '^c?fn=\([0-9]+\) .+$' "$work/cg.out" | sed -E 's/^c?fn=\([0-9]+\) //' | sort -u \
  | comm -12 - "$defined" > "$list"
echo "agent-link-order: $(grep -c . "$list") functions written to $list; rebuild the agent to apply"
