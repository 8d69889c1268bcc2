#!/usr/bin/env bash
# Instructions per request, counted by callgrind (repeatable on a noisy
# machine, unlike req/s): bext under valgrind in front of an nginx origin,
# instrumentation switched on only around N requests of one kind.
#
#   bench/callgrind.sh [small|cached|h2] [N]     (default: small 5000)
#
# small  = pass-through GET /nocache (1 KiB, private), HTTP/1.1 keep-alive
# cached = cache hits of GET /small (1 KiB, public, max-age=60)
# h2     = GET /nocache over TLS + HTTP/2 (4 connections x 4 streams)
#
# BEXT_BIN picks the binary (default target/release/bext); the config is
# bench/bext-candidate.sh's, so BEXT_TELEMETRY / BEXT_WAF_MODE apply too.
# Prints instructions per request, and leaves the profile in $OUT (default a
# temp dir, with bext.log) for callgrind_annotate.
set -euo pipefail
kind=${1:-small}
n=${2:-5000}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BEXT_BIN:-$here/target/release/bext}
for t in valgrind callgrind_control nginx h2load openssl; do
  command -v "$t" >/dev/null || { echo "callgrind.sh: needs $t" >&2; exit 2; }
done
tmp=$(mktemp -d)
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
oport=$(port); bport=$(port); tport=$(port)
mkdir -p "$tmp/www" "$tmp/origin"
# nginx workers run as an unprivileged user: mktemp -d is 0700.
chmod 755 "$tmp" "$tmp/www"
head -c 1024 /dev/zero | tr '\0' 'x' >"$tmp/www/nocache"
cp "$tmp/www/nocache" "$tmp/www/small"
cat >"$tmp/origin/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $tmp/origin/nginx.pid; error_log $tmp/origin/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  client_body_temp_path $tmp/origin; proxy_temp_path $tmp/origin; fastcgi_temp_path $tmp/origin;
  uwsgi_temp_path $tmp/origin; scgi_temp_path $tmp/origin;
  server {
    listen 127.0.0.1:$oport; root $tmp/www; default_type text/html;
    location = /small   { add_header Cache-Control "public, max-age=60"; }
    location = /nocache { add_header Cache-Control "private"; }
  }
}
EOF
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" \
  -days 2 -subj /CN=localhost >/dev/null 2>&1
cleanup() {
  [[ -n ${vpid:-} ]] && kill "$vpid" 2>/dev/null && wait "$vpid" 2>/dev/null || true
  [[ -n ${opid:-} ]] && kill "$opid" 2>/dev/null || true
  cp "$tmp/bext.log" "$out/" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
nginx -c "$tmp/origin/nginx.conf" -e "$tmp/origin/error.log" &
opid=$!
cat >"$tmp/valgrind-bext.sh" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/callgrind.out "$bin" "\$@"
EOF
chmod +x "$tmp/valgrind-bext.sh"
BENCH_PORT=$bport BENCH_BACKEND=127.0.0.1:$oport BENCH_TMP=$tmp BENCH_H2_PORT=$tport \
  BENCH_CERT=$tmp/cert.pem BENCH_KEY=$tmp/key.pem BEXT_BIN=$tmp/valgrind-bext.sh \
  "$here/bench/bext-candidate.sh" >"$tmp/bext.log" 2>&1 &
vpid=$!
for _ in $(seq 1 300); do
  curl -s -o /dev/null "http://127.0.0.1:$bport/nocache" && break
  sleep 0.2
done
# BENCH_HEADERS (like peers.sh: `|`-separated) adds request headers, e.g.
# "Accept-Encoding: br, gzip" to count compression.
hdrs=()
if [[ -n ${BENCH_HEADERS:-} ]]; then
  IFS='|' read -ra hs <<<"$BENCH_HEADERS"
  for h in "${hs[@]}"; do hdrs+=(-H "$h"); done
fi
case $kind in
  small) load=(h2load --h1 -c 4 "${hdrs[@]}" "http://127.0.0.1:$bport/nocache") ;;
  cached) load=(h2load --h1 -c 4 "${hdrs[@]}" "http://127.0.0.1:$bport/small") ;;
  h2) load=(h2load -c 4 -m 4 "${hdrs[@]}" "https://127.0.0.1:$tport/nocache") ;;
  *) echo "callgrind.sh: unknown kind $kind" >&2; exit 2 ;;
esac
"${load[@]}" -n 500 >/dev/null # warm-up: pools, cache fill, lazy statics
callgrind_control -i on "$vpid" >/dev/null
"${load[@]}" -n "$n" | grep -E "^requests:" >&2
callgrind_control -i off "$vpid" >/dev/null
callgrind_control -d "$vpid" >/dev/null
sleep 1
total=$(for f in "$out"/callgrind.out*; do
  callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
done | awk '{s += $1} END {print s}')
echo "$kind: $((total / n)) instructions per request ($total over $n; profile in $out)"
