#!/usr/bin/env bash
# The read figures of each verification mode (docs/verification.md), beside the memmap2
# baseline, one round per line, every figure from a fresh `wdbtool bench` process:
#
#   W2 warm scan: default (blocks checked by an earlier process), --verify off,
#                 --verify once-per-process, memmap2
#   W3 random reads, median/p99 µs: default after a scan, off, default on a database no
#                 process has read (ingested afresh each round, its written pages still
#                 in the page cache), memmap2
#   W2 cold scan, first reader: the table removed and the page cache dropped before each
#                 of wdb's and memmap2's scans (needs root; "-" otherwise)
#
#   tools/bench-verify.sh SIZE_BYTES [ROUNDS]      (default 5 rounds)
#
# Environment: WDBTOOL (default target/release/wdbtool), BENCH_DIR (default a new
# directory under /tmp, removed at the end unless KEEP=1). Removing the per-boot table
# (/dev/shm/wdb-checked-<uid>) only costs other wdb processes of this user re-checks.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 SIZE_BYTES [ROUNDS]" >&2
    exit 2
fi
SIZE=$1
ROUNDS=${2:-5}
cd "$(dirname "$0")/.."
W=${WDBTOOL:-${CARGO_TARGET_DIR:-target}/release/wdbtool}
[[ -x $W ]] || { echo "no $W: cargo build --release -p wdbtool" >&2; exit 2; }
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/wdb-verify.XXXXXX)}
D=$BENCH_DIR/wdb B=$BENCH_DIR/memmap2
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$BENCH_DIR"' EXIT
TABLE=/dev/shm/wdb-checked-$(id -u)

bench() { "$W" bench --size-bytes "$SIZE" "$@" 2>/dev/null; }
scan() { bench --phase scan "$@" | jq -r 'select(.metric == "scan_GBps") | .value' | xargs printf %.2f; }
rr() { bench --phase randread "$@" | jq -r 'select(.metric | test("median_us|p99_us")) | .value' | xargs printf '%.2f/%.1f'; }
cold() { rm -f "$TABLE"; sync; (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; }

rm -rf "$B" && mkdir -p "$B"
bench --phase ingest --dir "$B" --baseline >/dev/null
printf '%-42s | %-40s | %s\n' "W2 warm GB/s: default off once-per-process memmap2" \
    "W3 median/p99 us: default off unread memmap2" "W2 cold first reader GB/s: wdb memmap2"
for _ in $(seq "$ROUNDS"); do
    rm -rf "$D" && mkdir -p "$D"
    bench --phase ingest --dir "$D" >/dev/null
    ru=$(rr --dir "$D")
    if cold; then
        cw=$(scan --dir "$D")
        cold
        cb=$(scan --dir "$B" --baseline)
    else
        cw=- cb=-
    fi
    # Both warm: one discarded scan each (wdb's also checks and publishes its blocks).
    scan --dir "$D" >/dev/null
    scan --dir "$B" --baseline >/dev/null
    a=$(scan --dir "$D")
    o=$(scan --dir "$D" --verify off)
    p=$(scan --dir "$D" --verify once-per-process)
    b=$(scan --dir "$B" --baseline)
    ra=$(rr --dir "$D")
    ro=$(rr --dir "$D" --verify off)
    rb=$(rr --dir "$B" --baseline)
    printf '%-42s | %-40s | %s\n' "$a $o $p $b" "$ra $ro $ru $rb" "$cw $cb"
done
