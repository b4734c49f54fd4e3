"""The scenarios of wendelin.core's out-of-core arrays, with this API: fill, commit,
reopen, slice, append, resize, abort, and a snapshot read by another process while
this one commits."""

import numpy as np

import wdb
from conftest import run_py

N = 1 << 20  # 8 MiB of f8


def test_fill_commit_reopen_slice(db_path):
    db = wdb.open(db_path, ram_budget=16 << 20)
    with db.begin() as tx:
        a = tx.create_array("A", (N,), "f8")
        v = a[:]
        v[:] = np.arange(N, dtype="f8")
    db.close()
    child = run_py(
        """
        import sys, wdb
        db = wdb.open(sys.argv[1], read_only=True, ram_budget=2 << 20)  # a quarter of the array
        a = db.snapshot()["A"]
        print(a.shape[0], a[:].sum(), a[12345], sep=";")
        """,
        db_path,
    )
    n, s, x = child.stdout.strip().split(";")
    assert int(n) == N and float(s) == N * (N - 1) / 2 and float(x) == 12345.0
    db = wdb.open(db_path, ram_budget=4 << 20)
    a = db.snapshot()["A"]
    assert a[1000:1010].tolist() == list(range(1000, 1010))
    assert np.array_equal(a[N - 5 :], np.arange(N - 5, N, dtype="f8"))


def test_append_resize_abort(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        a = tx.create_array("A", (0, 4), "i8")
    for k in range(10):
        with db.begin() as tx:
            tx["A"].append(np.full((k + 1, 4), k))
    assert db.snapshot()["A"].shape == (55, 4)
    tx = db.begin()
    tx["A"].resize((3, 4))
    tx["A"][0] = -1
    tx.abort()
    a = db.snapshot()["A"]
    assert a.shape == (55, 4) and a[0].tolist() == [0] * 4 and a[-1].tolist() == [9] * 4
    with db.begin() as tx:
        tx["A"].resize((1000, 4))
    a = db.snapshot()["A"]
    assert a.shape == (1000, 4) and a[55:].sum() == 0 and a[54].tolist() == [9] * 4


def test_snapshot_of_another_process(db_path):
    """A child process commits whole-array fills while this process reads snapshots:
    every snapshot shows one commit entirely (all elements equal), never a mix, and
    the values only grow."""
    db = wdb.open(db_path, block_size=1 << 16)
    n = 1 << 18  # 2 MiB: 32 blocks of 64 KiB
    with db.begin() as tx:
        tx.create_array("A", (n,), "f8")
    commits = 40
    import subprocess, sys, textwrap

    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            """
            import sys, wdb
            db = wdb.open(sys.argv[1])
            for k in range(1, int(sys.argv[2]) + 1):
                with db.begin() as tx:
                    tx["A"][:] = float(k)
            print("done", db.last_tid)
            """
        ), db_path, str(commits)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = []
    last = -1.0
    while True:
        snap = db.snapshot()
        v = snap["A"][:]
        lo, hi = v.min(), v.max()
        assert lo == hi, f"snapshot {snap.tid} mixes commits: {lo} .. {hi}"
        assert lo >= last
        last = lo
        seen.append(lo)
        snap.close()
        if writer.poll() is not None:
            break
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    final = db.snapshot()["A"][:]
    assert final.min() == final.max() == float(commits)
    assert db.last_tid == commits + 1
    assert len(set(seen)) >= 2, "the reader saw only one state: the test did not interleave"
