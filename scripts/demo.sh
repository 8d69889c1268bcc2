#!/usr/bin/env bash
# Builds bext and runs it in front of the embedded Phoenix-like demo origin.
# Extra arguments go to `bext demo` (e.g. --listen 127.0.0.1:9090).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --locked --release -- demo "$@"
