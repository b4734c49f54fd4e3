"""Threads: two Python threads read through views at once; the GIL is released by
commit and checked loads; writers of different arrays in one transaction."""

import threading

import numpy as np

import wdb


def test_two_threads_read_views_at_once(db_path):
    n = 1 << 21  # 16 MiB
    db = wdb.open(db_path, ram_budget=8 << 20, block_size=1 << 16)
    with db.begin() as tx:
        tx.create_array("A", (n,), "f8")
    step = n // 4  # 4 MiB per transaction: under the budget
    for lo in range(0, n, step):
        with db.begin() as tx:
            tx["A"][lo : lo + step] = np.arange(lo, lo + step, dtype="f8") % 1000
    expect = float((np.arange(n) % 1000).sum())
    snap = db.snapshot()
    a = snap["A"]
    results, errors = [], []
    barrier = threading.Barrier(2)

    def reader(k):
        try:
            barrier.wait()
            for _ in range(3):
                v = a[:] if k == 0 else a[::-1]
                results.append(float(v.sum()))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=reader, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert results == [expect] * 6
    st = db.memory_stats()
    assert st["evictions"] > 0  # more data than the budget went through


def test_commit_and_load_release_the_gil(db_path):
    n = 1 << 22  # 32 MiB
    db = wdb.open(db_path)
    with db.begin() as tx:
        tx.create_array("A", (n,), "f8")
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)

    tx = db.begin()
    a = tx["A"]
    a[:] = 1.0
    t = threading.Thread(target=ticker)
    t.start()
    try:
        before = len(ticks)
        tx.commit()
        a2 = db.snapshot()["A"]
        a2.load()
        after = len(ticks)
    finally:
        stop.set()
        t.join()
    assert after > before  # the other thread ran during commit and load


def test_threads_write_different_arrays_of_one_transaction(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        for k in range(4):
            tx.create_array(f"A{k}", (100_000,), "i8")
        def work(k):
            a = tx[f"A{k}"]
            v = a[:]
            v[:] = k
            a.append(np.full(10, k))
        ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    s = db.snapshot()
    for k in range(4):
        x = s[f"A{k}"][:]
        assert len(x) == 100_010 and (x == k).all()
