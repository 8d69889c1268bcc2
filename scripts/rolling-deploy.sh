#!/usr/bin/env bash
# Rolling deploy of Phoenix nodes behind bext, one node at a time:
#   drain → wait until its requests and LiveView tunnels are gone → restart it
#   (your command) → wait until bext sees it healthy → undrain → next node;
#   finally purge the given cache tags (stale pages from the old release).
#
# Usage:
#   scripts/rolling-deploy.sh --admin http://127.0.0.1:8080 --upstream phoenix \
#       --restart 'systemctl restart phoenix@$NODE' [--purge-tag post:42 ...] \
#       [--token "$BEXT_ADMIN_TOKEN"] [--timeout 120] NODE_ID...
# The restart command runs with NODE set to the node id. Needs curl and python3.
set -euo pipefail

admin="http://127.0.0.1:8080" upstream="" restart="" token="" timeout=120
tags=() nodes=()
while [ $# -gt 0 ]; do
  case "$1" in
    --admin) admin=$2; shift 2 ;;
    --upstream) upstream=$2; shift 2 ;;
    --restart) restart=$2; shift 2 ;;
    --purge-tag) tags+=("$2"); shift 2 ;;
    --token) token=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) nodes+=("$1"); shift ;;
  esac
done
[ -n "$upstream" ] && [ -n "$restart" ] && [ ${#nodes[@]} -gt 0 ] || {
  echo "usage: $0 --upstream NAME --restart CMD [--admin URL] [--purge-tag T]... NODE_ID..." >&2; exit 2; }

auth=()
[ -n "$token" ] && auth=(-H "Authorization: Bearer $token")

api() { curl -fsS "${auth[@]}" "$@"; }

# Prints a field of one node from GET /__bext/upstreams.
node_field() {
  api "$admin/__bext/upstreams" | python3 -c '
import json, sys
doc = json.load(sys.stdin)
for pool in doc["upstreams"]:
    if pool["name"] == sys.argv[1]:
        for n in pool["nodes"]:
            if n["id"] == sys.argv[2]:
                print(json.dumps(n[sys.argv[3]])); sys.exit(0)
sys.exit("no node %s in upstream %s" % (sys.argv[2], sys.argv[1]))
' "$upstream" "$1" "$2"
}

wait_for() {  # wait_for DESCRIPTION COMMAND...
  local what=$1; shift
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    if [ $SECONDS -ge $deadline ]; then echo "deploy: timed out waiting for $what" >&2; exit 1; fi
    sleep 0.5
  done
}

idle() { [ "$(node_field "$1" in_flight)" = 0 ] && [ "$(node_field "$1" tunnels)" = 0 ]; }
healthy() { [ "$(node_field "$1" healthy)" = true ]; }

for node in "${nodes[@]}"; do
  echo "deploy: draining $node"
  api -X POST "$admin/__bext/upstreams/$upstream/nodes/$node/drain" >/dev/null
  wait_for "$node to go idle" idle "$node"
  echo "deploy: restarting $node"
  NODE=$node bash -c "$restart"
  wait_for "$node to be healthy" healthy "$node"
  api -X POST "$admin/__bext/upstreams/$upstream/nodes/$node/undrain" >/dev/null
  echo "deploy: $node is back"
done

if [ ${#tags[@]} -gt 0 ]; then
  body=$(python3 -c 'import json,sys; print(json.dumps({"tags": sys.argv[1:]}))' "${tags[@]}")
  echo "deploy: purging cache tags ${tags[*]}: $(api -X POST -H 'content-type: application/json' -d "$body" "$admin/__bext/cache/purge")"
fi
echo "deploy: done"
