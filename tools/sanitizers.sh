#!/usr/bin/env bash
# Runs the unsafe-code checks (docs/sanitizers.md records the results): the tests that
# never need the SIGSEGV handler under Miri, and the fault-handler (virtmem) tests under
# valgrind and AddressSanitizer.
#
# Needs: a nightly toolchain with the `miri` and `rust-src` components
# (`rustup +nightly component add miri rust-src`; `cargo miri setup` fetches the crates
# of Miri's sysroot the first time), valgrind >= 3.19.
#
# Usage: tools/sanitizers.sh [miri|valgrind|asan|all]   (default: all)
# Each run is killed after $SANIT_TIMEOUT seconds (default 300; rc=124 in the summary).
# Logs go to $SANIT_LOGS (default target/sanitizers-logs); a summary is printed at the end.
set -u
cd "$(dirname "$0")/.."

what=${1:-all}
: "${CARGO_TARGET_DIR:=target}"
export CARGO_TARGET_DIR
LOGS=${SANIT_LOGS:-$CARGO_TARGET_DIR/sanitizers-logs}
mkdir -p "$LOGS"
SUMMARY=()

# Proptest-heavy tests are slow under Miri (~1000x): few cases, no persisted failures.
export PROPTEST_CASES=${PROPTEST_CASES:-4}
# File I/O (tempfile, std::fs) needs the host: disable Miri's isolation.
export MIRIFLAGS=${MIRIFLAGS:--Zmiri-disable-isolation}

run() { # name, command...
    local name=$1; shift
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout "${SANIT_TIMEOUT:-300}" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    local res
    res=$(grep -E '^test result:' "$LOGS/$name.log" | tail -1)
    SUMMARY+=("$name rc=$rc $((SECONDS - t0))s ${res:-"(no test result line, see $LOGS/$name.log)"}")
    echo "    rc=$rc ${res}"
}

MIRI_TESTS=(
    array_views_match_vec_reference
    array_layout_errors
    array_dtype_encoding
    array_npy_format
    array_record_macro
)

VM_TESTS=(
    virtmem_fault_basics
    virtmem_concurrency
    virtmem_reclaim_keeps_dirty
    virtmem_writeout
    virtmem_invalidate
    virtmem_moved_slots
)

if [[ $what == miri || $what == all ]]; then
    cargo +nightly miri setup >/dev/null 2>&1
    margs=(--lib)
    for t in "${MIRI_TESTS[@]}"; do margs+=(--test "$t"); done
    # Build first, so that the per-run timeout (SANIT_TIMEOUT, 300 s) counts only the run.
    cargo +nightly miri test --no-run "${margs[@]}" >"$LOGS/miri-build.log" 2>&1
    # Library unit tests that make no syscalls Miri cannot model. Skipped: the delta
    # test (MiB-sized blocks, > 300 s under Miri); store::encode (its
    # holes_trim_and_compress did not finish in 3 min) and log:: (flock, fsync).
    run miri-lib-format cargo +nightly miri test --lib format:: \
        -- --skip delta_payload_roundtrip_apply_and_bounds
    run miri-lib-catalog cargo +nightly miri test --lib db::catalog::
    for t in "${MIRI_TESTS[@]}"; do
        skip=()
        # Spawns python3: Miri cannot spawn processes (and aborts the whole binary).
        # version_2_and_3 (a 3,000-field header) takes > 300 s under Miri.
        [[ $t == array_npy_format ]] &&
            skip=(-- --skip numpy_python_available_or_skipped --skip version_2_and_3)
        # 2 × 3,000 records through every view: > 300 s under Miri.
        [[ $t == array_views_match_vec_reference ]] && skip=(-- --skip records_straddling_4k_blocks)
        run "miri-$t" cargo +nightly miri test --test "$t" "${skip[@]}"
    done
fi

if [[ $what == valgrind || $what == all ]]; then
    # rustix's linux_raw backend reads the vDSO ELF header at the AT_SYSINFO_EHDR address
    # of /proc/self/auxv, which valgrind leaves unmapped: VirtMem::open (page_size)
    # segfaults before any wdb code runs. `use-libc-auxv` makes rustix ask libc's
    # getauxval, which valgrind emulates. Set VG_FEATURES= to see the failure.
    feats=${VG_FEATURES-rustix/use-libc-auxv}
    args=(${feats:+--features "$feats"})
    for t in "${VM_TESTS[@]}"; do args+=(--test "$t"); done
    cargo test --no-run "${args[@]}" >"$LOGS/valgrind-build.log" 2>&1
    for t in "${VM_TESTS[@]}"; do
        exe=$(cargo test --no-run ${feats:+--features "$feats"} --message-format=json --test "$t" 2>/dev/null |
            grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
        # One test thread so valgrind's serialisation doesn't hide behind timeouts;
        # --error-exitcode makes a memory error fail the run.
        run "valgrind-$t" valgrind --error-exitcode=99 --track-origins=no \
            "$exe" --test-threads=1
    done
fi

if [[ $what == asan || $what == all ]]; then
    args=()
    for t in "${VM_TESTS[@]}"; do args+=(--test "$t"); done
    # std itself is not instrumented (no -Zbuild-std); our crate and all dependencies are.
    # Built first so that the timeout counts only the run.
    asan=(env RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR="$CARGO_TARGET_DIR/asan"
        cargo +nightly test --target x86_64-unknown-linux-gnu)
    "${asan[@]}" --no-run "${args[@]}" >"$LOGS/asan-build.log" 2>&1
    for t in "${VM_TESTS[@]}"; do
        run "asan-$t" "${asan[@]}" --test "$t"
    done
fi

echo
echo "Summary:"
printf '  %s\n' "${SUMMARY[@]}"
