#!/usr/bin/env bash
# Installs what building and testing bext needs on a fresh Debian machine that
# has only the Rust toolchain: cmake (for libz-ng-sys, pulled in by Pingora), a
# C compiler, redis-server for the cluster tests, and Prometheus' promtool (the metrics tests run
# `promtool check metrics` on a real scrape; Debian ships it in `prometheus`).
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The memory benchmark's smoke run (bench/memory.py, stdlib only).
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# The cluster tests (tests/it/cluster.rs) spawn a real Redis (and redis-cli).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  # --no-install-recommends: promtool is all the tests need from `prometheus`.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
