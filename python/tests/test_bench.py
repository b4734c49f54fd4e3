"""`python -m wdb.bench`: the data formula and positions match the workloads (values
pinned from the Rust peer's tests), every phase of both peers runs and prints its
figures as JSON lines, and both peers compute the same data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wdb import bench


def test_elements_and_positions_pinned():
    e = bench.elements(0, 4)
    want = [0xBF40624DD2F1A9FC, 0x3F2C098DE3AA8A6A, 0xBF12EC370CC359A6, 0x3F45072A68CFCE1A]
    assert [int(x) for x in e.view(np.uint64)] == want
    assert bench.splitmix64(0, 1) == [0xE220A8397B1DCDAF]
    assert bench.splitmix64(42, 3) == [13679457532755275413, 2949826092126892291, 5139283748462763858]
    assert bench.chunk_elems(0) == 2 * 131072 and bench.chunk_elems(6) == 8 * 131072
    n = 1 << 20
    assert all(o + 512 <= n for o in bench.randread_offsets(42, n))
    s = bench.sparse_positions(42, n)
    assert s == sorted(set(s)) and 990 < len(s) <= 1000
    assert bench.small_positions(42, n)[0] == bench.splitmix64(45, 1)[0] % n
    assert bench.median([3, 1, 2, 4]) == 2.5 and bench.percentile(list(range(1, 101)), 99) == 99


def run_phase(d, phase, *extra, size=1 << 20):
    p = subprocess.run(
        [sys.executable, "-m", "wdb.bench", "--phase", phase, "--dir", str(d), "--size-bytes", str(size), *extra],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr
    figs = [json.loads(l) for l in p.stdout.splitlines()]
    assert all(not l or l.startswith("{") for l in p.stdout.splitlines())
    return {(f["workload"], f["metric"]): f for f in figs}


@pytest.mark.parametrize("baseline", [False, True])
def test_all_phases(tmp_path, baseline):
    extra = ["--baseline"] if baseline else ["--ram-budget", str(4 << 20), "--verify", "once-per-process",
                                             "--block-size", str(1 << 16), "--compression", "none"]
    peer = "numpy-memmap" if baseline else "wdb-python"
    d = tmp_path / "d"
    d.mkdir()
    want = {
        "ingest": {("W1", "ingest_MBps"), ("W1", "ingest_s")},
        "scan": {("W2", "scan_GBps"), ("W2", "sum")},
        "randread": {("W3", "median_us"), ("W3", "p99_us")},
        "sparse": {("W4", "total_ms"), ("W4", "update_ms"), ("W4", "commit_ms")},
        "small": {("W5", "median_ms")},
    }
    sums = []
    for phase, keys in want.items():
        figs = run_phase(d, phase, *extra)
        assert set(figs) == keys
        assert all(f["peer"] == peer for f in figs.values())
        if phase == "scan":
            sums.append(figs[("W2", "sum")]["value"])
    expect = float(bench.elements(0, (1 << 20) // 8).sum())
    assert abs(sums[0] - expect) < 1e-9
    d2 = tmp_path / "big"
    d2.mkdir()
    figs = run_phase(d2, "bigtx", *extra)
    assert set(figs) == {("W7", "bigtx_MBps"), ("W7", "bigtx_s")}


def test_wdb_data_after_phases_matches_the_formula(tmp_path):
    import wdb

    d = tmp_path / "d"
    d.mkdir()
    run_phase(d, "ingest", size=1 << 20)
    run_phase(d, "sparse", size=1 << 20)
    n = (1 << 20) // 8
    ref = bench.elements(0, n)
    for p in bench.sparse_positions(42, n):
        ref[p] = -float(p)
    with wdb.open(os.path.join(d, bench.DB_FILE)) as db:
        assert np.array_equal(db.snapshot()[bench.ARRAY][:], ref)


def test_bad_arguments(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "wdb.bench", "--phase", "scan", "--dir", str(tmp_path), "--size-bytes", "4097"],
        capture_output=True, text=True,
    )
    assert p.returncode == 2 and "multiple of 8" in p.stderr and p.stdout == ""
    p = subprocess.run(
        [sys.executable, "-m", "wdb.bench", "--phase", "scan", "--dir", str(tmp_path), "--size-bytes", "8192"],
        capture_output=True, text=True,
    )
    assert p.returncode == 2 and "ingest" in p.stderr
