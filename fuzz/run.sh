#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30); a crash fails.
# Stable Rust builds the sanitizer with RUSTC_BOOTSTRAP (cargo fuzz asks
# for nightly flags). Longer runs: fuzz/run.sh 3600.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build 2>&1 | tail -3
for t in $targets; do
  mkdir -p "corpus/$t"
  if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "corpus/$t"/ 2>/dev/null || true; fi
  echo "fuzz: $t for ${seconds}s"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -2
done
