#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (nightly) for SECONDS each (default 30), one at a time,
# and prints one line per target: `TARGET: N execs, C crashes`. Exits non-zero if any target
# crashed (a panic, an overflow, a hang over 10 s or an out-of-memory); the input is kept in
# fuzz/artifacts/<target>/ and the fuzzer's log in fuzz/target/fuzz-run/<target>.log.
# The committed corpora (fuzz/corpus, fuzz/regressions) are only read: what a run finds goes to
# a scratch corpus under fuzz/target/fuzz-run/, which later runs reuse.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-30}
shift || true
case $seconds in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

rustup toolchain list | grep -q '^nightly' || {
  echo "the nightly toolchain is required (rustup toolchain install nightly)" >&2
  exit 1
}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# No sanitizer: the harnesses run safe Rust, where ASan finds nothing a panic would not; debug
# assertions (-a) turn arithmetic overflow into a crash.
flags=(--sanitizer none --debug-assertions)
run=target/fuzz-run
mkdir -p "$run"
echo "building the fuzz targets (log: fuzz/$run/build.log)" >&2
if ! nice -n 10 cargo +nightly fuzz build "${flags[@]}" >"$run/build.log" 2>&1; then
  tail -n 30 "$run/build.log" >&2
  exit 1
fi
bin_dir=target/x86_64-unknown-linux-gnu/release

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

failed=0
for target in "${targets[@]}"; do
  scratch="$run/corpus/$target"
  artifacts="artifacts/$target"
  mkdir -p "$scratch" "$artifacts"
  dirs=("$scratch" "corpus/$target")
  [ -d "regressions/$target" ] && dirs+=("regressions/$target")
  before=$(find "$artifacts" -type f | wc -l)
  log="$run/$target.log"
  status=0
  nice -n 10 "$bin_dir/$target" "${dirs[@]}" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 ||
    status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  crashes=$(($(find "$artifacts" -type f | wc -l) - before))
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes=1 # died without an artifact; the log says why
  fi
  echo "$target: ${execs:-0} execs, $crashes crashes"
  if [ "$crashes" -gt 0 ]; then
    failed=1
    echo "  see fuzz/$log and fuzz/$artifacts/" >&2
  fi
done
exit "$failed"
