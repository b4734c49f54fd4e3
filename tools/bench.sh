#!/usr/bin/env bash
# Run every phase of the benchmark workloads (docs/benchmarks.md) on wdb and on the memmap2 baseline, in one go,
# and print each figure with its ratio wdb/baseline.
#
#   tools/bench.sh SIZE_BYTES [extra wdb flags, e.g. --compression none --ram-budget 268435456]
#
# Environment:
#   WDBTOOL    the binary (default: $CARGO_TARGET_DIR or target, /release/wdbtool)
#   BENCH_DIR  where to put the two working directories (default: a new dir under /tmp);
#              removed at the end unless KEEP=1
#   SEED       default 42
#   PHASES     the phases after ingest (default "scan randread sparse small bigtx"; scan
#              runs twice, cold then warm; bigtx runs last, alone, in a fresh directory of
#              its own per peer, removed right after: it needs SIZE_BYTES of disk more (wdb
#              about that too: its spill file shrinks as the commit copies it into the log)
#   REPEAT     run everything this many times (default 1); the table shows medians and,
#              with REPEAT > 1, the min..max of the wdb/baseline ratio over the runs
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
REPEAT=${REPEAT:-1}
PHASES=${PHASES:-scan randread sparse small bigtx}
for p in $PHASES; do
    case $p in scan | randread | sparse | small | bigtx) ;;
    *) echo "PHASES: unknown phase $p" >&2; exit 2 ;;
    esac
done
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

# run PEER COND PHASE FLAGS... (in $BENCH_DIR/PEER, or $RUN_DIR when set)
run() {
    local peer=$1 cond=$2 phase=$3
    shift 3
    local dir=${RUN_DIR:-$BENCH_DIR/$peer}
    local out rss=0
    local tf=$BENCH_DIR/time.txt
    if [[ -n $TIME ]]; then
        out=$($TIME -f '%M' -o "$tf" "$WDBTOOL" bench --phase "$phase" --dir "$dir" \
            --size-bytes "$SIZE" --seed "$SEED" "$@")
        rss=$(tail -n1 "$tf")
    else
        out=$("$WDBTOOL" bench --phase "$phase" --dir "$dir" --size-bytes "$SIZE" --seed "$SEED" "$@")
    fi
    # Disk blocks used, not apparent size: holes (the alignment padding of raw payloads,
    # storage-format.md §2.8) take no disk.
    local disk
    disk=$(du -s --block-size=1 "$dir" | cut -f1)
    grep '^{' <<<"$out" | jq -c --arg cond "$cond" --argjson rss "$rss" --argjson disk "$disk" \
        --argjson rep "$REP" '. + {cond: $cond, rss_kb: $rss, disk_bytes: $disk, rep: $rep}' >>"$RES"
}

# Peers alternate phase by phase (wdb, then memmap2), so that both figures of a ratio
# are measured seconds apart on this shared machine.
peer_flags() {
    if [[ $1 == memmap2 ]]; then echo --baseline; else echo "${EXTRA[@]}"; fi
}
COLD=measured
PEERS=(wdb memmap2)
for REP in $(seq 1 "$REPEAT"); do
    for peer in "${PEERS[@]}"; do
        rm -rf "${BENCH_DIR:?}/$peer"
        mkdir -p "$BENCH_DIR/$peer"
    done
    for p in ingest $PHASES; do
        [[ $p == bigtx ]] && continue
        for peer in "${PEERS[@]}"; do
            # shellcheck disable=SC2046
            flags=($(peer_flags "$peer"))
            echo "== run $REP, $peer: $p" >&2
            if [[ $p == scan ]]; then
                if drop_caches; then c=cold; else c=cold-not-dropped; COLD="not measured"; fi
                run "$peer" "$c" scan "${flags[@]}"
            else
                run "$peer" "" "$p" "${flags[@]}"
            fi
        done
        if [[ $p == scan ]]; then
            for peer in "${PEERS[@]}"; do
                flags=($(peer_flags "$peer"))
                # The other peer's cold run dropped the page cache: warm it up first
                # (one discarded scan), so that "warm" means warm for both peers.
                "$WDBTOOL" bench --phase scan --dir "$BENCH_DIR/$peer" --size-bytes "$SIZE" \
                    --seed "$SEED" "${flags[@]}" >/dev/null
                run "$peer" warm scan "${flags[@]}"
            done
        fi
    done
    if [[ " $PHASES " == *" bigtx "* ]]; then
        # W7 alone: the other peers' files are gone first, each peer gets a fresh
        # directory, removed as soon as its figure is taken.
        for peer in "${PEERS[@]}"; do
            rm -rf "${BENCH_DIR:?}/$peer"
        done
        for peer in "${PEERS[@]}"; do
            flags=($(peer_flags "$peer"))
            echo "== run $REP, $peer: bigtx" >&2
            d=$BENCH_DIR/$peer-bigtx
            rm -rf "$d" && mkdir -p "$d"
            RUN_DIR=$d run "$peer" "" bigtx "${flags[@]}"
            rm -rf "$d"
        done
    fi
done

echo "size: $SIZE bytes; seed $SEED; runs: $REPEAT; wdb flags: ${EXTRA[*]:-(none)}; cold page cache: $COLD"
echo "binary: $WDBTOOL; results: $RES"
python3 - "$RES" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
order, by = [], {}
for r in rows:
    k = (r["workload"], r["metric"], r["cond"])
    if k not in order:
        order.append(k)
    by.setdefault(k, {}).setdefault(r["peer"], {})[r["rep"]] = r
med = lambda xs: statistics.median(xs) if xs else None
print(f"{'figure':<26} {'wdb':>12} {'memmap2':>12} {'wdb/base':>9} {'range':>15}  {'unit':<5} {'RSS MiB w/b':>12} {'disk MiB w/b':>13}")
for k in order:
    w, b = by[k].get("wdb", {}), by[k].get("memmap2", {})
    name = f"{k[0]} {k[1]}" + (f" ({k[2]})" if k[2] else "")
    wv, bv = med([r["value"] for r in w.values()]), med([r["value"] for r in b.values()])
    f = lambda v: f"{v:.5g}" if v is not None else "-"
    ratio = f"{wv / bv:.3f}" if wv is not None and bv else "-"
    rs = [w[i]["value"] / b[i]["value"] for i in w if i in b and b[i]["value"]]
    rng = f"{min(rs):.3g}..{max(rs):.3g}" if len(rs) > 1 else ""
    rss = f"{med([r['rss_kb'] for r in w.values()])/1024:.0f}/{med([r['rss_kb'] for r in b.values()])/1024:.0f}" if w and b else "-"
    disk = f"{med([r['disk_bytes'] for r in w.values()])/2**20:.0f}/{med([r['disk_bytes'] for r in b.values()])/2**20:.0f}" if w and b else "-"
    unit = (next(iter(w.values()), None) or next(iter(b.values())))["unit"]
    print(f"{name:<26} {f(wv):>12} {f(bv):>12} {ratio:>9} {rng:>15}  {unit:<5} {rss:>12} {disk:>13}")
EOF
if [[ ${KEEP:-0} != 1 ]]; then
    rm -rf "${BENCH_DIR:?}/wdb" "${BENCH_DIR:?}/memmap2"
fi
