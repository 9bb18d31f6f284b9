#!/usr/bin/env bash
# The whole test suite: installs what is missing (Debian packages), starts the real services on
# loopback ports in a temporary directory, checks formatting and lints, runs every test, and stops
# the services. Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_packages
command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --all-targets --quiet

start_services
echo "== cargo test"
results="$NW_TMP/cargo-test.log"
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$results" || status=$?
# cargo's own last line is the last crate's doc-tests (often none); close with the whole count.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, s }' "$results"
exit "$status"
