#!/bin/sh
# Sends a known load to the example app: N requests to each route, one connection per request.
#   ./load.sh [BASE_URL] [N]        e.g. ./load.sh http://localhost:8080 20
# Needs curl (or wget). Prints how many requests went to each route, so you can compare with
# the sidecar's metrics (see README.md).
set -eu
BASE=${1:-http://localhost:8080}
N=${2:-20}
get() {
  if command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null "$1"; else wget -q -O /dev/null "$1"; fi
}
for route in fast 'slow?ms=100' file upstream 'alloc?mb=32' spawn; do
  i=0
  while [ "$i" -lt "$N" ]; do get "$BASE/$route"; i=$((i + 1)); done
  echo "$route $N"
done
