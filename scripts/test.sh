#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the build and the tests need
# (scripts/deps.sh), then every unit and integration test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
