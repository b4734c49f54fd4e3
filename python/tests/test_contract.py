"""The API of the issue, name by name: open, begin/commit/abort, context managers,
snapshots and time travel, history, arrays (shape, dtype, ndim, len, indexing, append,
resize), zero-copy views, errors."""

import numpy as np
import pytest

import wdb


def test_example_from_the_issue(db_path):
    db = wdb.open(db_path, ram_budget=256 << 20)
    with db.begin() as tx:
        a = tx.create_array("A", (1_000_000,), "f8")
        a[10:20] = 1.0
        v = a[:]
        assert isinstance(v, np.ndarray)
        v *= 2
        a.append(np.arange(3.0))
        a.resize((5_000_000,))
        tx.create_array("B", (4,), "i4")
        b = tx["B"]
        b[1] = 7
    assert isinstance(tx.tid, int) and tx.tid == db.last_tid
    snap = db.snapshot()
    x = snap["A"]
    assert x.shape == (5_000_000,) and x.dtype == np.float64 and len(x) == 5_000_000
    assert x.ndim == 1
    assert x[:].sum() == 2.0 * 10 + 0 + 1 + 2
    assert np.asarray(x)[1_000_000:1_000_003].tolist() == [0.0, 1.0, 2.0]
    assert x[10:20].tolist() == [2.0] * 10
    assert snap["B"][:].tolist() == [0, 7, 0, 0]
    assert list(snap) == ["A", "B"]


def test_views_are_zero_copy(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        a = tx.create_array("A", (1000,), "f8")
        v = a[:]
        w = a[100:200]
        assert isinstance(v.base, wdb.Memory) and isinstance(w.base, wdb.Memory)
        v[150] = 42.0  # written through one view, seen through the other
        assert w[50] == 42.0
        assert a[150] == 42.0
        assert np.shares_memory(v[100:200], w) or v[100:200].__array_interface__["data"][0] == w.__array_interface__["data"][0]
        assert v.flags.writeable and v.flags.c_contiguous
    s = db.snapshot()["A"][:]
    assert not s.flags.writeable
    with pytest.raises(ValueError):
        s[0] = 1.0


def test_commit_returns_tid_and_tid_property(db_path):
    db = wdb.open(db_path)
    assert db.last_tid == 0
    tx = db.begin()
    assert tx.tid is None and tx.state == "open"
    tx.create_array("A", (10,), "u8")
    t = tx.commit()
    assert t == tx.tid == db.last_tid == 1 and tx.state == "committed"
    tx2 = db.begin()
    assert tx2.snapshot_tid == 1
    assert tx2.commit() == 1  # nothing changed: the snapshot's tid
    h = db.history()
    assert [e["tid"] for e in h] == [1] and h[0]["arrays"] == ["A"] and h[0]["names_changed"]
    assert h[0]["bytes"] > 0 and h[0]["time"] > 1.6e9


def test_with_block_aborts_on_exception(db_path):
    db = wdb.open(db_path)
    with pytest.raises(RuntimeError):
        with db.begin() as tx:
            tx.create_array("A", (10,), "f8")
            raise RuntimeError("boom")
    assert tx.state == "aborted" and tx.tid is None
    assert list(db.snapshot()) == []


def test_abort_and_drop_discard(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        tx.create_array("A", (10,), "f8")
    tx = db.begin()
    tx["A"][:] = 5.0
    tx.abort()
    assert db.snapshot()["A"][:].sum() == 0
    tx = db.begin()
    tx["A"][3] = 1.0
    del tx  # dropping an open transaction aborts it
    assert db.snapshot()["A"][:].sum() == 0
    assert db.last_tid == 1


def test_snapshot_isolation_and_time_travel(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        tx.create_array("A", (4,), "i8")[:] = [1, 2, 3, 4]
    t1 = tx.tid
    old = db.snapshot()
    with db.begin() as tx:
        tx["A"][0] = 100
    assert old.tid == t1 and old["A"][0] == 1  # unchanged by a later commit
    assert db.snapshot()["A"][0] == 100
    assert db.snapshot(at=t1)["A"][:].tolist() == [1, 2, 3, 4]
    with pytest.raises(wdb.SnapshotGoneError):
        db.snapshot(at=t1 + 100)


def test_transaction_sees_its_own_writes_and_lists_names(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        tx.create_array("B", (3,), "f4")
        tx.create_array("A", (3,), "f4")
        assert list(tx) == ["A", "B"] and len(tx) == 2 and "A" in tx and "C" not in tx
        tx["A"][1] = 2.5
        assert tx["A"][1] == 2.5
        del tx["B"]
        assert list(tx) == ["A"]
    assert list(db.snapshot()) == ["A"] and db.snapshot().keys() == ["A"]


def test_same_array_object_state_is_shared(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        tx.create_array("A", (0,), "i2")
        a1, a2 = tx["A"], tx["A"]
        a1.append(np.array([1, 2], dtype="i2"))
        assert a2.shape == (2,) and a2[:].tolist() == [1, 2]


@pytest.mark.parametrize(
    "dtype",
    ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16", "?", "<i8",
     np.float32, np.dtype("uint16"), bool, complex],
)
def test_scalar_dtypes_round_trip(db_path, dtype):
    dt = np.dtype(dtype)
    db = wdb.open(db_path)
    ref = (np.arange(50) * 3 - 7).astype(dt)
    with db.begin() as tx:
        a = tx.create_array("A", (50,), dtype)
        a[:] = ref
        a[5] = ref[6]
    ref[5] = ref[6]
    x = db.snapshot()["A"]
    assert x.dtype == dt
    np.testing.assert_array_equal(x[:], ref)


def test_structured_dtypes(db_path):
    packed = np.dtype([("t", "<i8"), ("x", "<f8"), ("flag", "u1")])
    aligned = np.dtype([("a", "u1"), ("b", "<f8"), ("c", "<i2")], align=True)
    nested = np.dtype([("p", [("x", "<f4"), ("y", "<f4")]), ("id", "<u4"), ("ok", "?"), ("z", "c16")])
    db = wdb.open(db_path)
    with db.begin() as tx:
        for name, dt in [("P", packed), ("A", aligned), ("N", nested)]:
            a = tx.create_array(name, (100,), dt)
            assert a.dtype == dt
            v = a[:]
            v[v.dtype.names[0]] = 1
            a[7] = np.zeros((), dt)
        tx["P"]["x"][3] = 2.5  # a field of a view is a view
        rows = np.zeros(2, packed)
        rows["t"] = [10, 11]
        tx["P"].append(rows)
    s = db.snapshot()
    assert s["A"].dtype == aligned and s["A"].dtype.itemsize == aligned.itemsize
    assert s["N"].dtype == nested
    p = s["P"][:]
    assert p.dtype == packed and len(p) == 102
    assert p["x"][3] == 2.5 and p["t"][7] == 0 and p["t"][8] == 1 and p["t"][-2:].tolist() == [10, 11]
    assert s["N"][:]["p"]["x"][0] == 1.0


def test_unsupported_dtypes_are_clear_errors(db_path):
    db = wdb.open(db_path)
    tx = db.begin()
    for bad in [object, ">f8", "U3", "S4", "M8[ns]", [("x", "f8", (3,))]]:
        with pytest.raises(wdb.InvalidArgumentError):
            tx.create_array("X", (3,), bad)
    with pytest.raises(TypeError):
        tx.create_array("X", (3,), "not a dtype")
    assert list(tx) == []


def test_multidimensional_c_order_indexing_matches_numpy(db_path):
    db = wdb.open(db_path)
    ref = np.arange(4 * 5 * 6, dtype="f8").reshape(4, 5, 6)
    with db.begin() as tx:
        a = tx.create_array("A", (4, 5, 6), "f8")
        a[:] = ref
        keys = [0, -1, 3, slice(1, 3), slice(None, None, 2), slice(None, None, -1), (1, 2), (1, 2, 3),
                (slice(0, 2), 4), (Ellipsis, 1), (slice(None), slice(1, 3), 0), np.int64(2), [0, 2],
                (1, [0, 4]), ref > 100]
        for k in keys:
            np.testing.assert_array_equal(a[k], ref[k], err_msg=repr(k))
        a[1, 2, 3] = -1.0
        ref[1, 2, 3] = -1.0
        a[2] = 7.0
        ref[2] = 7.0
        a[:, 0] = 3.0
        ref[:, 0] = 3.0
        a[[0, 3], 1, 1] = 9.0
        ref[[0, 3], 1, 1] = 9.0
        np.testing.assert_array_equal(np.asarray(a), ref)
        assert a.shape == (4, 5, 6) and a.ndim == 3 and len(a) == 4 and a.size == 120
        assert [r.tolist() for r in a] == [r.tolist() for r in ref]
    np.testing.assert_array_equal(db.snapshot()["A"][:], ref)
    with pytest.raises(IndexError):
        db.snapshot()["A"][4]


def test_fortran_order(db_path):
    db = wdb.open(db_path)
    ref = np.asfortranarray(np.arange(12, dtype="i4").reshape(3, 4))
    with db.begin() as tx:
        a = tx.create_array("F", (3, 4), "i4", order="F")
        assert a.order == "F"
        a[:] = ref
        v = np.asarray(a)
        assert v.flags.f_contiguous and not v.flags.c_contiguous
        np.testing.assert_array_equal(a[1], ref[1])  # numpy indexing: axis 0
        np.testing.assert_array_equal(a[:, 2], ref[:, 2])
        a.append(np.array([100, 101, 102], dtype="i4"))  # one column (major axis: last)
        a.append(np.ones((3, 2), dtype="i4"))
        assert a.shape == (3, 7)
        a.resize((3, 8))
    x = db.snapshot()["F"]
    got = np.asarray(x)
    assert got.shape == (3, 8) and got.flags.f_contiguous
    np.testing.assert_array_equal(got[:, :4], ref)
    assert got[:, 4].tolist() == [100, 101, 102]
    assert got[:, 5:7].tolist() == [[1, 1]] * 3 and got[:, 7].tolist() == [0, 0, 0]
    with pytest.raises(wdb.InvalidArgumentError):
        db.begin()["F"].append(np.ones((2, 1), dtype="i4"))


def test_append_and_resize_c_order(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        a = tx.create_array("A", (0, 3), "u2")
        a.append([[1, 2, 3]])
        a.append([4, 5, 6])  # one row
        a.append(np.zeros((0, 3), "u2"))
        assert a.shape == (2, 3)
        with pytest.raises(wdb.InvalidArgumentError):
            a.append(np.ones((1, 4)))
        with pytest.raises(wdb.InvalidArgumentError):
            a.resize((5, 4))
        a.resize((5, 3))
        assert a[4].tolist() == [0, 0, 0]
        with pytest.raises(wdb.InvalidArgumentError):
            a.resize(1)  # a 2-D array needs both axes
    x = db.snapshot()["A"]
    assert x.shape == (5, 3) and x[:2].tolist() == [[1, 2, 3], [4, 5, 6]] and x[2:].sum() == 0


def test_resize_shrink_then_grow_reads_zeros(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        a = tx.create_array("A", (100_000,), "f8", block_size=65536)
        a[:] = 1.0
    with db.begin() as tx:
        a = tx["A"]
        a.resize((10,))
        a.resize((100_000,))
        assert a[:10].sum() == 10 and a[10:].sum() == 0
    x = db.snapshot()["A"][:]
    assert x[:10].sum() == 10 and x[10:].sum() == 0


def test_errors_are_wdb_exceptions_with_messages(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        tx.create_array("A", (10,), "f8")
    tx = db.begin()
    with pytest.raises(wdb.AlreadyExistsError, match="already exists"):
        tx.create_array("A", (10,), "f8")
    with pytest.raises(wdb.NotFoundError) as e:
        tx["nope"]
    assert isinstance(e.value, KeyError) and isinstance(e.value, wdb.Error)
    assert str(e.value) == 'not found: array "nope"'
    with pytest.raises(KeyError):
        db.snapshot()["nope"]
    with pytest.raises(wdb.OutOfRangeError):
        tx["A"][10]
    with pytest.raises(wdb.InvalidArgumentError):
        tx.create_array("bad", (3,), "f8", order="Z")
    with pytest.raises(wdb.InvalidArgumentError):
        wdb.open(db_path + "2", durability="sometimes")
    with pytest.raises(wdb.InvalidArgumentError):
        wdb.open(db_path + "3", verify="always")
    with pytest.raises(wdb.ReadOnlyError):
        db.snapshot()["A"][0] = 1.0
    for cls in [wdb.ConflictError, wdb.CorruptionError, wdb.ReadOnlyError, wdb.NotFoundError,
                wdb.IoError, wdb.RamExhaustedError, wdb.BusyError, wdb.LoadError, wdb.ClosedError,
                wdb.TypeMismatchError, wdb.OutOfRangeError, wdb.PoisonedError, wdb.SnapshotGoneError,
                wdb.AlreadyExistsError, wdb.InvalidArgumentError]:
        assert issubclass(cls, wdb.Error)


def test_conflict(db_path):
    db = wdb.open(db_path)
    with db.begin() as tx:
        tx.create_array("A", (10,), "f8")
    t1, t2 = db.begin(), db.begin()
    t1["A"][0] = 1.0
    t2["A"][1] = 2.0  # same block
    t1.commit()
    with pytest.raises(wdb.ConflictError, match="conflict"):
        t2.commit()
    assert t2.state == "failed"
    assert db.snapshot()["A"][:2].tolist() == [1.0, 0.0]


def test_read_only_database(db_path):
    with wdb.open(db_path) as db:
        with db.begin() as tx:
            tx.create_array("A", (3,), "i8")[:] = [1, 2, 3]
    ro = wdb.open(db_path, read_only=True)
    with pytest.raises(wdb.ReadOnlyError):
        ro.begin()
    assert ro.snapshot()["A"][:].tolist() == [1, 2, 3]


def test_options_are_accepted(db_path):
    db = wdb.open(db_path, ram_budget=64 << 20, durability="buffered", verify="once-per-process",
                  block_size=1 << 16, zstd_level=1)
    with db.begin() as tx:
        tx.create_array("A", (10,), "f8", compression="none")
        tx.create_array("B", (10,), "f8", compression=5)
    assert db.memory_stats()["budget"] == 64 << 20
    assert db.path == db_path
    with pytest.raises(TypeError):
        wdb.open(db_path, no_such_option=1)


def test_ended_objects_raise_closed_error(db_path):
    db = wdb.open(db_path)
    tx = db.begin()
    a = tx.create_array("A", (10,), "f8")
    tx.commit()
    for f in [lambda: tx["A"], lambda: tx.create_array("B", (1,), "f8"), lambda: a[0],
              lambda: a.shape, lambda: a.append([1.0]), lambda: tx.commit()]:
        with pytest.raises(wdb.ClosedError):
            f()
    tx.abort()  # nothing happens
    assert tx.state == "committed"
    snap = db.snapshot()
    snap.close()
    with pytest.raises(wdb.ClosedError):
        snap["A"]
    with db.snapshot() as s2:
        assert s2["A"][0] == 0.0
    assert s2.closed
    db.close()
    assert db.closed
    with pytest.raises(wdb.ClosedError):
        db.begin()
    with wdb.open(db_path) as db2:
        assert db2.last_tid == 1
    assert db2.closed


def test_writing_more_than_the_budget_through_the_array_spills_and_commits(db_path):
    db = wdb.open(db_path, ram_budget=1 << 20, block_size=1 << 16)
    with db.begin() as tx:
        tx.create_array("A", (1 << 20,), "f8")  # 8 MiB: eight times the budget
    tx = db.begin()
    tx["A"][:] = 1.0  # dirty blocks past the budget go to the spill file
    tx.abort()
    assert db.snapshot()["A"][:].sum() == 0  # the abort left nothing behind
    with db.begin() as tx:
        tx["A"][:] = 2.0
    assert db.snapshot()["A"][:].sum() == 2.0 * (1 << 20)
    db.close()
    again = wdb.open(db_path, ram_budget=1 << 20)
    assert again.snapshot()["A"][:].sum() == 2.0 * (1 << 20)
