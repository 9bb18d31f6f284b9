#!/usr/bin/env bash
# The main job: builds nodewarden and runs it on this machine with embedded defaults.
# For now: the agent serving node_exporter-compatible metrics on 127.0.0.1:9100.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)" >&2; exit 1; }
cargo build --release --quiet -p nodewarden-agent
echo "nodewarden-agent: metrics on http://127.0.0.1:${PORT:-9100}/metrics (Ctrl-C stops)"
exec target/release/nodewarden-agent --web.listen-address="127.0.0.1:${PORT:-9100}" "$@"
