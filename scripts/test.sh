#!/usr/bin/env bash
# Runs every check and test of bext: formatting, clippy (warnings are errors),
# unit tests and the integration tests that spawn the real binary, then a
# smoke run of the memory benchmark (small N: it checks that the script and
# bext's tunnel and keep-alive paths work end to end; it asserts nothing about
# the numbers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
python3 bench/memory.py --smoke --proxy bext --bin "${CARGO_TARGET_DIR:-target}/debug/bext"
