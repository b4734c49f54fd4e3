#!/usr/bin/env bash
# Stop the daemons .ci/ceph-start.sh started, by the PIDs in their pid files, and wait
# for them to exit. Usage: CEPH_DIR=/tmp/ceph .ci/ceph-stop.sh [--keep-data]
set -uo pipefail
D=${CEPH_DIR:-/tmp/wdb-ceph}
pids=()
for f in "$D"/run/*.pid; do
  [ -e "$f" ] || continue
  p=$(cat "$f"); [ -n "$p" ] && kill "$p" 2>/dev/null && pids+=("$p")
done
for p in "${pids[@]}"; do
  for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$p" 2>/dev/null || true
done
[ "${1:-}" = "--keep-data" ] || rm -rf "$D"
