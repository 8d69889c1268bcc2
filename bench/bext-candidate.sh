#!/usr/bin/env bash
# Candidate for ../shared/bench/peers.sh: writes a bext config from the harness's
# BENCH_* environment and execs the release binary (so the measured process is bext).
#   peers.sh --only nginx,candidate --scenarios small,big,h2 --candidate "exec $PWD/bench/bext-candidate.sh"
set -euo pipefail
: "${BENCH_PORT:?} ${BENCH_BACKEND:?}"
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BEXT_BIN:-$here/target/release/bext}
d=${BENCH_TMP:-$(mktemp -d)}
limits=${BEXT_LIMITS:-'allow = ["127.0.0.0/8"]'}
cat >"$d/bext.toml" <<CONF
[server]
listen = ["127.0.0.1:$BENCH_PORT"]
threads = ${BENCH_WORKERS:-1}
grace_period = "1s"
shutdown_timeout = "1s"
client_timeout = "120s"
pid_file = "$d/bext.pid"
upgrade_sock = "$d/bext-upgrade.sock"

[upstreams.origin]
nodes = ["$BENCH_BACKEND"]
idle_timeout = "300s"

[[route_rules]]
pattern = "/*"
proxy = "origin"

# Every bench client is on loopback: exempt it from the per-IP caps (the idle
# connection scenario opens 5000 connections from one address). BEXT_LIMITS
# replaces this block, e.g. to measure the cost of a rate limit.
[limits]
$limits

# BEXT_WAF_MODE=off measures the WAF's cost (default: block, as shipped).
# BEXT_TELEMETRY adds a [telemetry] section (\n for newlines), e.g. to
# measure metrics + access log + traces against a run without it.
[waf]
mode = "${BEXT_WAF_MODE:-block}"

# The cache is on by default for /*; sized like the nginx peer (max_size=256m).
[cache]
max_size = "256MiB"

$(printf '%b' "${BEXT_TELEMETRY:-}")

# BEXT_EXTRA adds any other sections (\n for newlines), e.g.
# '[compression]\nenabled = false' for a compression-off baseline.
$(printf '%b' "${BEXT_EXTRA:-}")
CONF
# HTTPS + HTTP/2 for the h2 scenario (and HTTP/3 on the same port, udp).
if [[ -n ${BENCH_H2_PORT:-} && -n ${BENCH_CERT:-} && -n ${BENCH_KEY:-} ]]; then
  cat >>"$d/bext.toml" <<CONF

[tls]
listen = ["127.0.0.1:$BENCH_H2_PORT"]
cert = "$BENCH_CERT"
key = "$BENCH_KEY"
http3 = true
CONF
fi
RUST_LOG=${RUST_LOG:-warn} exec "$bin" serve -c "$d/bext.toml"
