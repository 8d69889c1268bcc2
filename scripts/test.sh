#!/usr/bin/env bash
# Runs every check and test of bext: formatting, clippy (warnings are errors),
# unit tests and the integration tests that spawn the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
