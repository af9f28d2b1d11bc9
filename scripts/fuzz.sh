#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20) from the committed corpus in
# fuzz/corpus/, on the nightly toolchain. A crash fails the script and leaves its input in
# fuzz/artifacts/TARGET/; turn it into a regression test (see fuzz/README.md).
#   scripts/fuzz.sh 60                    # every target, 60 s each
#   scripts/fuzz.sh 300 path_normalize    # one target
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-20}"
shift || true

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/portcullis-fuzz-target}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|Running|Failing input|Test unit written|thread .* panicked)' || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found a crash: fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
