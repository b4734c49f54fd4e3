"""ndarrays that outlive what they came from: they keep their memory alive, never crash
the interpreter, never change committed data, and show what docs/python.md says."""

import gc

import numpy as np
import pytest

import wdb

N = 300_000  # 2.4 MB of f8: several 64 KiB blocks


def make(db_path, fill=1.0):
    db = wdb.open(db_path, block_size=1 << 16)
    with db.begin() as tx:
        tx.create_array("A", (N,), "f8")[:] = fill
    return db


def test_view_after_commit_shows_committed_data(db_path):
    db = make(db_path)
    tx = db.begin()
    a = tx["A"]
    v = a[:]
    v[:1000] = 2.0
    tid = tx.commit()
    # Other commits afterwards do not change what v shows.
    with db.begin() as t2:
        t2["A"][:] = 3.0
    db.memory_stats()
    assert v[:1000].sum() == 2000.0 and v[1000:].sum() == N - 1000
    assert np.array_equal(v, db.snapshot(at=tid)["A"][:])


def test_writes_after_commit_never_reach_the_database(db_path):
    db = make(db_path)
    with db.begin() as tx:
        v = tx["A"][:]
    v[:] = 9.0  # after the end: private to v's pages
    assert v.sum() == 9.0 * N
    assert db.snapshot()["A"][:].sum() == N
    with db.begin() as tx:
        assert tx["A"][:].sum() == N
    del v
    gc.collect()
    db.close()
    with wdb.open(db_path) as db2:
        assert db2.snapshot()["A"][:].sum() == N


def test_view_after_abort_shows_the_snapshot_it_began_at(db_path):
    db = make(db_path)
    tx = db.begin()
    v = tx["A"][:]
    v[:] = 5.0
    assert v[0] == 5.0
    tx.abort()
    assert v.sum() == N  # the changes are gone
    v[0] = 7.0  # harmless
    assert db.snapshot()["A"][0] == 1.0


def test_array_created_then_aborted_reads_zeros(db_path):
    db = wdb.open(db_path)
    tx = db.begin()
    v = tx.create_array("B", (1000,), "i4")[:]
    v[:] = 3
    tx.abort()
    assert v.sum() == 0
    assert list(db.snapshot()) == []


def test_view_of_deleted_array_reads_zeros(db_path):
    db = make(db_path)
    with db.begin() as tx:
        v = tx["A"][:]
        del tx["A"]
        assert v.sum() == 0
        v[0] = 4.0  # harmless
    assert list(db.snapshot()) == []


def test_failed_commit_view_shows_start_snapshot(db_path):
    db = make(db_path)
    t1, t2 = db.begin(), db.begin()
    t1["A"][0] = 10.0
    v = t2["A"][:]
    v[0] = 20.0
    t1.commit()
    with pytest.raises(wdb.ConflictError):
        t2.commit()
    assert v[0] == 1.0 and v.sum() == N


def test_snapshot_view_outlives_snapshot_and_db(db_path):
    db = make(db_path)
    v = db.snapshot()["A"][10:20]  # the snapshot object is gone at once
    s = db.snapshot()
    w = s["A"][:]
    s.close()
    db.close()
    del db, s
    gc.collect()
    with wdb.open(db_path) as db2:
        with db2.begin() as tx:
            tx["A"][:] = 8.0
    assert v.tolist() == [1.0] * 10 and w.sum() == N


def test_derived_views_keep_memory_alive(db_path):
    db = make(db_path)
    v = db.snapshot()["A"][:]
    w = v[::1000][5:]
    x = v.reshape(-1, 100)[3]
    del v
    gc.collect()
    assert w.base is not None and w.sum() == len(w) and x.sum() == 100


def test_views_stay_valid_across_append_and_resize(db_path):
    db = make(db_path)
    with db.begin() as tx:
        a = tx["A"]
        v = a[:]
        a.append(np.full(5 * N, 2.0))  # grows past the reservation: the array remaps
        a.resize((8 * N,))
        w = a[:]
        v[0] = 4.0  # the old view still writes the array
        assert w[0] == 4.0 and w[N:6 * N].sum() == 10.0 * N and w[6 * N:].sum() == 0
    x = db.snapshot()["A"][:]
    assert x[0] == 4.0 and len(x) == 8 * N


def test_stale_view_after_shrink_cannot_leak_into_the_array(db_path):
    db = make(db_path)
    with db.begin() as tx:
        a = tx["A"]
        v = a[:]
        a.resize((1000,))
        v[:] = 6.0  # past the new end: dropped at commit
    with db.begin() as tx:
        a = tx["A"]
        assert a[:].sum() == 6000.0
        a.resize((N,))
        assert a[1000:].sum() == 0.0  # grows with zeros, not with v's writes
    assert db.snapshot()["A"][1000:].sum() == 0.0


def test_many_views_and_objects_dropped_in_any_order(db_path):
    db = make(db_path)
    views = []
    for i in range(50):
        tx = db.begin()
        views.append(tx["A"][i : i + 100])
        if i % 3 == 0:
            tx.commit()
        elif i % 3 == 1:
            tx.abort()
    del tx
    gc.collect()
    assert all(v.sum() == 100.0 for v in views)
    views.clear()
    gc.collect()
    assert db.snapshot()["A"][:].sum() == N
