#!/usr/bin/env bash
# Run every phase of shared/workloads.md on wdb and on the memmap2 baseline, in one go,
# and print each figure with its ratio wdb/baseline.
#
#   tools/bench.sh SIZE_BYTES [extra wdb flags, e.g. --compression none --ram-budget 268435456]
#
# Environment:
#   WDBTOOL    the binary (default: $CARGO_TARGET_DIR or target, /release/wdbtool)
#   BENCH_DIR  where to put the two working directories (default: a new dir under /tmp);
#              removed at the end unless KEEP=1
#   SEED       default 42
#
# The cold scan drops the page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`, needs
# root); when that fails the cold figures are reported as not measured. Each phase runs
# under /usr/bin/time for its peak RSS, and the directory's size is taken after each
# phase (the protocol leaves both to the harness; this script is one such harness).
# Raw JSON lines (with "cond", "rss_kb" and "disk_bytes" added) go to $BENCH_DIR/results.jsonl.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 SIZE_BYTES [extra wdb flags...]" >&2
    exit 2
fi
SIZE=$1
shift
EXTRA=("$@")
SEED=${SEED:-42}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WDBTOOL=${WDBTOOL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/wdbtool}
if [[ ! -x $WDBTOOL ]]; then
    echo "$WDBTOOL not found: run cargo build --release -p wdbtool (or set WDBTOOL)" >&2
    exit 2
fi
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/wdb-bench.XXXXXX)}
mkdir -p "$BENCH_DIR"
RES=$BENCH_DIR/results.jsonl
: >"$RES"
TIME=/usr/bin/time
[[ -x $TIME ]] || TIME=""

drop_caches() {
    sync
    if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
        return 0
    fi
    return 1
}

# run PEER COND PHASE FLAGS...
run() {
    local peer=$1 cond=$2 phase=$3
    shift 3
    local dir=$BENCH_DIR/$peer
    local out rss=0
    local tf=$BENCH_DIR/time.txt
    if [[ -n $TIME ]]; then
        out=$($TIME -f '%M' -o "$tf" "$WDBTOOL" bench --phase "$phase" --dir "$dir" \
            --size-bytes "$SIZE" --seed "$SEED" "$@")
        rss=$(tail -n1 "$tf")
    else
        out=$("$WDBTOOL" bench --phase "$phase" --dir "$dir" --size-bytes "$SIZE" --seed "$SEED" "$@")
    fi
    local disk
    disk=$(du -sb "$dir" | cut -f1)
    grep '^{' <<<"$out" | jq -c --arg cond "$cond" --argjson rss "$rss" --argjson disk "$disk" \
        '. + {cond: $cond, rss_kb: $rss, disk_bytes: $disk}' >>"$RES"
}

COLD=measured
for peer in wdb memmap2; do
    flags=("${EXTRA[@]}")
    [[ $peer == memmap2 ]] && flags=(--baseline)
    rm -rf "${BENCH_DIR:?}/$peer"
    mkdir -p "$BENCH_DIR/$peer"
    echo "== $peer: ingest" >&2
    run "$peer" "" ingest "${flags[@]}"
    if drop_caches; then c=cold; else c=cold-not-dropped; COLD="not measured"; fi
    echo "== $peer: scan ($c), scan (warm), randread, sparse, small" >&2
    run "$peer" "$c" scan "${flags[@]}"
    run "$peer" warm scan "${flags[@]}"
    run "$peer" "" randread "${flags[@]}"
    run "$peer" "" sparse "${flags[@]}"
    run "$peer" "" small "${flags[@]}"
done

echo "size: $SIZE bytes; seed $SEED; wdb flags: ${EXTRA[*]:-(none)}; cold page cache: $COLD"
echo "binary: $WDBTOOL; results: $RES"
python3 - "$RES" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
key = lambda r: (r["workload"], r["metric"], r["cond"])
by = {}
order = []
for r in rows:
    k = key(r)
    if k not in order:
        order.append(k)
    by.setdefault(k, {})[r["peer"]] = r
# Higher is better for throughputs; for times the ratio is still wdb/baseline.
print(f"{'figure':<26} {'wdb':>14} {'memmap2':>14} {'wdb/base':>9}  {'unit':<5} {'RSS wdb/base MiB':>17} {'disk wdb/base MiB':>18}")
for k in order:
    w, b = by[k].get("wdb"), by[k].get("memmap2")
    name = f"{k[0]} {k[1]}" + (f" ({k[2]})" if k[2] else "")
    fv = lambda r: f"{r['value']:.6g}" if r else "-"
    ratio = f"{w['value'] / b['value']:.3f}" if w and b and b["value"] != 0 else "-"
    rss = f"{w['rss_kb']/1024:.0f}/{b['rss_kb']/1024:.0f}" if w and b else "-"
    disk = f"{w['disk_bytes']/2**20:.0f}/{b['disk_bytes']/2**20:.0f}" if w and b else "-"
    print(f"{name:<26} {fv(w):>14} {fv(b):>14} {ratio:>9}  {(w or b)['unit']:<5} {rss:>17} {disk:>18}")
EOF
if [[ ${KEEP:-0} != 1 ]]; then
    rm -rf "${BENCH_DIR:?}/wdb" "${BENCH_DIR:?}/memmap2"
fi
