#!/usr/bin/env bash
# Runs every cargo-fuzz target on the nightly toolchain: first it replays the committed corpus in
# fuzz/corpus/ (crashes found earlier are kept there as regression inputs), then it explores for
# SECONDS each (default 20). A failing replay always fails the script. A crash found while
# exploring leaves its input in fuzz/artifacts/TARGET/ (turn it into a regression test, see
# fuzz/README.md) and fails the script too, unless FUZZ_NEW_CRASHES=report (what CI sets: a
# gate must give the same answer on the same commit, so CI prints new finds loudly instead).
#   scripts/fuzz.sh 60                    # every target, 60 s each
#   scripts/fuzz.sh 300 path_normalize    # one target
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-20}"
shift || true
new_crashes="${FUZZ_NEW_CRASHES:-fail}"

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/portcullis-fuzz-target}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build
found=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== replay the corpus of $t ($(ls "corpus/$t" | wc -l) inputs)"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -runs=0 -rss_limit_mb=2048 -timeout=10 \
    >"/tmp/fuzz-replay-$t.log" 2>&1; then
    tail -30 "/tmp/fuzz-replay-$t.log" >&2
    echo "fuzz target $t fails on its committed corpus" >&2
    exit 1
  fi
  echo "== fuzz $t for ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|Running|Failing input|Test unit written|thread .* panicked)' || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found a NEW crash: fuzz/artifacts/$t/" >&2
    for f in "artifacts/$t"/*; do
      echo "-- $f (base64):" >&2
      base64 -w0 "$f" | head -c 4000 >&2
      echo >&2
    done
    found+=("$t")
  fi
done
if [ ${#found[@]} -gt 0 ]; then
  echo "new crashes in: ${found[*]}" >&2
  [ "$new_crashes" = report ] || exit 1
fi
