#!/usr/bin/env bash
# Four processes scanning one array at once: page cache + RSS ≈ one copy of the array,
# not four, and the CRC work of one scan, not four. Ingests a raw array of SIZE bytes, drops the page cache, starts
# NPROC concurrent `wdbtool bench --phase scan --hold-ms` on it, and while all of them
# still map the whole array reads each one's /proc/PID/smaps_rollup and the page cache.
#
#   tools/procs.sh SIZE_BYTES [extra wdb flags]      (env: WDBTOOL, BENCH_DIR, NPROC=4)
#
# Prints, against the array's size: the page cache's growth, the sum of the processes'
# Pss (shared pages divided among their mappers: one copy in all), the sum of their
# private (unshared) memory, and "memory in all" = page cache growth + private memory,
# i.e. what the machine holds for the NPROC scans. One copy ≈ 1.0× plus the private
# memory of the processes themselves; four private copies would be ≈ 4×. SIZE must fit
# the RAM budget (default 1 GiB) for every block to stay mapped until the sample.
set -euo pipefail
SIZE=${1:?usage: $0 SIZE_BYTES [extra wdb flags]}
shift
NPROC=${NPROC:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WDBTOOL=${WDBTOOL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/wdbtool}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/wdb-procs.XXXXXX)}
mkdir -p "$BENCH_DIR/db"
trap 'rm -rf "${BENCH_DIR:?}/db" "${BENCH_DIR:?}"/out.* "${BENCH_DIR:?}"/err.*' EXIT
"$WDBTOOL" bench --phase ingest --dir "$BENCH_DIR/db" --size-bytes "$SIZE" --compression none "$@" >/dev/null 2>&1
sync
echo 3 >/proc/sys/vm/drop_caches || { echo "cannot drop the page cache (needs root)" >&2; exit 1; }
kb() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
cache0=$(kb Cached)
HOLD=20000
pids=()
for i in $(seq 1 "$NPROC"); do
    "$WDBTOOL" bench --phase scan --dir "$BENCH_DIR/db" --size-bytes "$SIZE" --hold-ms $HOLD "$@" \
        >"$BENCH_DIR/out.$i" 2>"$BENCH_DIR/err.$i" &
    pids+=($!)
done
# Wait until every scan has printed its figures (then it holds its mapping).
for i in $(seq 1 "$NPROC"); do
    until grep -q '"sum"' "$BENCH_DIR/out.$i" 2>/dev/null; do sleep 0.05; done
done
pss=0 priv=0
for p in "${pids[@]}"; do
    r=/proc/$p/smaps_rollup
    pss=$((pss + $(awk '$1 == "Pss:" { print $2 }' "$r")))
    priv=$((priv + $(awk '$1 == "Private_Clean:" || $1 == "Private_Dirty:" { s += $2 } END { print s }' "$r")))
done
cache1=$(kb Cached)
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
size_kb=$((SIZE / 1024))
growth=$((cache1 - cache0))
python3 - "$NPROC" "$size_kb" "$growth" "$pss" "$priv" <<'PY'
import sys
n, size, growth, pss, priv = map(int, sys.argv[1:])
mib = lambda kb: f"{kb / 1024:.0f} MiB"
print(f"{n} concurrent scans of one array of {mib(size)}:")
print(f"  page cache growth        {mib(growth):>10}  {growth / size:.2f}x the array")
print(f"  sum of Pss               {mib(pss):>10}  {pss / size:.2f}x")
print(f"  sum of private memory    {mib(priv):>10}  {priv / size:.2f}x")
print(f"  memory in all            {mib(growth + priv):>10}  {(growth + priv) / size:.2f}x (page cache growth + private)")
PY
for i in $(seq 1 "$NPROC"); do jq -r 'select(.metric == "scan_GBps") | "  scan \(.value) GB/s"' "$BENCH_DIR/out.$i"; done
# CRC work: the bytes each process checked (wdbtool bench notes it on stderr); with the
# default Verify::OncePerBoot the processes share it, so the sum is about one array.
grep -ho "CRC-checked [0-9]*" "$BENCH_DIR"/err.* | awk -v size="$SIZE" '{ s += $2 } END {
    printf "  CRC-checked in all       %10.0f MiB  %.2fx the array\n", s / 1048576, s / size }'
