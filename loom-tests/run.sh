#!/usr/bin/env bash
# Runs the loom models. Bound: LOOM_MAX_PREEMPTIONS (default 5); see loom-tests/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-5}"
RUSTFLAGS="${RUSTFLAGS:-} --cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p loom-tests --release -- --test-threads=1 "$@"
