"""`python -m wdb.bench`: the benchmark workloads of wdb, run from Python with NumPy.

Speaks the protocol of `wdbtool bench` (one phase per call, on one directory; one JSON
object per line on stdout for each figure; anything else on stderr), so that a harness
can put the Python peers beside the Rust ones:

    python -m wdb.bench --phase PHASE --dir DIR --size-bytes N [--seed S]
        [--ram-budget B] [--verify MODE] [--compression none|zstd] [--block-size B]
        [--baseline] [--hold-ms MS]

The work is done the way a NumPy user would do it: `a[:].sum()` for the scan,
`a[o:o+512].copy()` for a random read, `a[p] = v` for a write, on `wdb.Array`s. With
`--baseline` the same phases run on `numpy.memmap` of a raw file (`flush()` standing in
for commit), so that the ratios of the targets come from one run of one harness.

Phases: ingest, scan, randread, sparse, small (in that order on one DIR) and bigtx (on
its own DIR). Data and positions follow the workloads exactly (element formula,
splitmix64 positions); only the calls under test are timed.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ARRAY = "bench"
DB_FILE = "wdb.db"
RAW_FILE = "baseline.raw"
READ_ELEMS = 512
READS = 10_000
SPARSE_WRITES = 1_000
SMALL_COMMITS = 100
PHASES = ("ingest", "scan", "randread", "sparse", "small", "bigtx")
MASK64 = (1 << 64) - 1


class BenchError(Exception):
    """Bad arguments or a failed call: printed to stderr, exit status 2 (as wdbtool)."""


# ------------------------------------------------------------------------------------
# Data and positions (workloads.md, "reproduce exactly")


def elements(lo, hi):
    """Elements [lo, hi): sin(2*pi*i/65536) + 1e-3*((((i*2654435761) mod 2^32)/2^32) - 0.5)."""
    i = np.arange(lo, hi, dtype=np.uint64)
    h = ((i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)).astype(np.float64) / 4294967296.0
    return np.sin(2.0 * np.pi * i.astype(np.float64) / 65536.0) + 1e-3 * (h - 0.5)


def splitmix64(seed, count):
    """splitmix64(seed, count) as in workloads.md (wrapping u64 arithmetic)."""
    out = []
    for k in range(1, count + 1):
        z = (seed + k * 0x9E3779B97F4A7C15) & MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out


def chunk_elems(k):
    """Elements in ingest chunk k: (2 + k mod 7) * 2^20 / 8."""
    return (2 + k % 7) * (1 << 20) // 8


def randread_offsets(seed, n):
    return [z % (n - (READ_ELEMS - 1)) for z in splitmix64(seed + 1, READS)]


def sparse_positions(seed, n):
    return sorted(set(z % n for z in splitmix64(seed + 2, SPARSE_WRITES)))


def small_positions(seed, n):
    return [z % n for z in splitmix64(seed + 3, SMALL_COMMITS)]


# ------------------------------------------------------------------------------------
# Figures


class Out:
    def __init__(self, peer):
        self.peer = peer

    def fig(self, workload, metric, value, unit):
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise BenchError(f"{workload} {metric} is not a finite number: {value}")
        line = json.dumps(
            {"peer": self.peer, "workload": workload, "metric": metric, "value": value, "unit": unit}
        )
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


    # The figures of each phase, the same for both peers.

    def ingest(self, size, s):
        self.fig("W1", "ingest_MBps", size / 1e6 / s, "MB/s")
        self.fig("W1", "ingest_s", s, "s")

    def scan(self, size, s, total):
        self.fig("W2", "scan_GBps", size / 1e9 / s, "GB/s")
        self.fig("W2", "sum", total, "")

    def reads(self, times):
        self.fig("W3", "median_us", median(times) * 1e6, "us")
        self.fig("W3", "p99_us", percentile(times, 99) * 1e6, "us")

    def sparse(self, update, commit):
        self.fig("W4", "total_ms", (update + commit) * 1e3, "ms")
        self.fig("W4", "update_ms", update * 1e3, "ms")
        self.fig("W4", "commit_ms", commit * 1e3, "ms")

    def small(self, times):
        self.fig("W5", "median_ms", median(times) * 1e3, "ms")

    def bigtx(self, size, s):
        self.fig("W7", "bigtx_MBps", size / 1e6 / s, "MB/s")
        self.fig("W7", "bigtx_s", s, "s")


def note(msg):
    print(msg, file=sys.stderr, flush=True)


def median(v):
    v = sorted(v)
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def percentile(v, p):
    """Nearest-rank percentile p (0 < p <= 100)."""
    v = sorted(v)
    rank = int(-(-p / 100.0 * len(v) // 1))
    return v[min(max(rank, 1), len(v)) - 1]


def default_ram_budget():
    """min(1 GiB, MemTotal/4) as `wdbtool bench` (at least 64 MiB)."""
    gib = 1 << 30
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kb = int(line.split()[1])
                    return min(max(kb * 1024 // 4, 64 << 20), gib)
    except OSError:
        pass
    return gib


# ------------------------------------------------------------------------------------
# The wdb peer


class WdbPeer:
    def __init__(self, args, n):
        import wdb

        self.wdb = wdb
        self.a = args
        self.n = n
        self.path = os.path.join(args.dir, DB_FILE)
        self.out = Out("wdb-python")

    def options(self, **kw):
        o = {"ram_budget": self.a.ram_budget or default_ram_budget()}
        if self.a.verify:
            o["verify"] = self.a.verify
        o.update(kw)
        return o

    def array_options(self):
        o = {"compression": self.a.compression}
        if self.a.block_size:
            o["block_size"] = self.a.block_size
        return o

    def need_db(self):
        if not os.path.exists(self.path):
            raise BenchError(
                f"{self.path} does not exist: run `python -m wdb.bench --phase ingest` on this --dir first"
            )

    def check_len(self, arr):
        if len(arr) != self.n:
            raise BenchError(
                f"array {ARRAY!r} in {self.path} has {len(arr)} elements, not --size-bytes/8 = {self.n}"
            )

    def ingest(self):
        if os.path.exists(self.path):
            raise BenchError(f"{self.path} already exists: ingest needs an empty --dir")
        n, timed = self.n, 0.0
        t = time.perf_counter()
        db = self.wdb.open(self.path, **self.options())
        timed += time.perf_counter() - t
        lo = k = 0
        while lo < n:
            hi = min(lo + chunk_elems(k), n)
            chunk = elements(lo, hi)
            t = time.perf_counter()
            tx = db.begin()
            if k == 0:
                a = tx.create_array(ARRAY, (0,), "f8", **self.array_options())
            else:
                a = tx[ARRAY]
            a.append(chunk)
            tx.commit()
            timed += time.perf_counter() - t
            lo, k = hi, k + 1
        t = time.perf_counter()
        db.close()
        del db, tx, a
        timed += time.perf_counter() - t
        note(f"wdb-python ingest: {n} elements in {k} commits, {timed:.3f} s")
        self.out.ingest(self.a.size_bytes, timed)

    def scan(self):
        self.need_db()
        t = time.perf_counter()
        db = self.wdb.open(self.path, **self.options(read_only=True))
        a = db.snapshot()[ARRAY]
        self.check_len(a)
        total = a[:].sum()
        s = time.perf_counter() - t
        note(f"wdb-python scan: {self.a.size_bytes} bytes in {s:.3f} s; {db.memory_stats()}")
        self.out.scan(self.a.size_bytes, s, total)
        hold(self.a)

    def randread(self):
        self.need_db()
        db = self.wdb.open(self.path, **self.options(read_only=True))
        a = db.snapshot()[ARRAY]
        self.check_len(a)
        randread_phase(self, lambda o: a[o : o + READ_ELEMS].copy())

    def sparse(self):
        self.need_db()
        db = self.wdb.open(self.path, **self.options())

        def begin():
            tx = db.begin()
            a = tx[ARRAY]
            self.check_len(a)
            return a, tx.commit

        sparse_phase(self, begin)

    def small(self):
        self.need_db()
        db = self.wdb.open(self.path, **self.options())

        def commit_one(p, v):
            tx = db.begin()
            tx[ARRAY][p] = v
            tx.commit()

        small_phase(self, "commits", commit_one)

    def bigtx(self):
        if os.path.exists(self.path):
            raise BenchError(f"{self.path} already exists: bigtx needs an empty --dir")
        n = self.n
        t = time.perf_counter()
        db = self.wdb.open(self.path, **self.options())
        tx = db.begin()
        a = tx.create_array(ARRAY, (n,), "f8", **self.array_options())
        v = a[:]
        step = 1 << 20
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            v[lo:hi] = elements(lo, hi)
        del v
        tx.commit()
        s = time.perf_counter() - t
        note(f"wdb-python bigtx: {n} elements in one transaction, {s:.3f} s")
        self.out.bigtx(self.a.size_bytes, s)


# ------------------------------------------------------------------------------------
# The numpy.memmap baseline


class MemmapPeer:
    def __init__(self, args, n):
        self.a = args
        self.n = n
        self.path = os.path.join(args.dir, RAW_FILE)
        self.out = Out("numpy-memmap")

    def need_file(self):
        if not os.path.exists(self.path):
            raise BenchError(
                f"{self.path} does not exist: run `python -m wdb.bench --baseline --phase ingest` on this --dir first"
            )
        size = os.path.getsize(self.path)
        if size != self.a.size_bytes:
            raise BenchError(f"{self.path} holds {size} bytes, not --size-bytes {self.a.size_bytes}")

    def ingest(self):
        """The same chunks, each written and fdatasync'ed ("commit") to a plain file."""
        if os.path.exists(self.path):
            raise BenchError(f"{self.path} already exists: ingest needs an empty --dir")
        n, timed = self.n, 0.0
        t = time.perf_counter()
        f = open(self.path, "xb", buffering=0)
        timed += time.perf_counter() - t
        lo = k = 0
        while lo < n:
            hi = min(lo + chunk_elems(k), n)
            chunk = elements(lo, hi)
            t = time.perf_counter()
            f.write(memoryview(chunk).cast("B"))
            os.fdatasync(f.fileno())
            timed += time.perf_counter() - t
            lo, k = hi, k + 1
        t = time.perf_counter()
        f.close()
        timed += time.perf_counter() - t
        note(f"numpy-memmap ingest: {n} elements in {k} write+fdatasync, {timed:.3f} s")
        self.out.ingest(self.a.size_bytes, timed)

    def scan(self):
        self.need_file()
        t = time.perf_counter()
        m = np.memmap(self.path, dtype=np.float64, mode="r")
        total = m.sum()
        s = time.perf_counter() - t
        note(f"numpy-memmap scan: {self.a.size_bytes} bytes in {s:.3f} s")
        self.out.scan(self.a.size_bytes, s, total)
        hold(self.a)

    def randread(self):
        self.need_file()
        m = np.memmap(self.path, dtype=np.float64, mode="r")
        randread_phase(self, lambda o: m[o : o + READ_ELEMS].copy())

    def sparse(self):
        self.need_file()
        m = np.memmap(self.path, dtype=np.float64, mode="r+")
        sparse_phase(self, lambda: (m, m.flush))

    def small(self):
        self.need_file()
        m = np.memmap(self.path, dtype=np.float64, mode="r+")

        def flush_one(p, v):
            m[p] = v
            m.flush()

        small_phase(self, "flushes", flush_one)

    def bigtx(self):
        if os.path.exists(self.path):
            raise BenchError(f"{self.path} already exists: bigtx needs an empty --dir")
        n = self.n
        t = time.perf_counter()
        m = np.memmap(self.path, dtype=np.float64, mode="w+", shape=(n,))
        step = 1 << 20
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            m[lo:hi] = elements(lo, hi)
        m.flush()
        del m
        s = time.perf_counter() - t
        note(f"numpy-memmap bigtx: {n} elements, {s:.3f} s")
        self.out.bigtx(self.a.size_bytes, s)


# ------------------------------------------------------------------------------------
# The phases W3 to W5, the same for both peers around the calls under test


def randread_phase(peer, read):
    """W3: `read(offset)` (a copy of READ_ELEMS elements) at each random offset, timed
    one by one."""
    offsets = randread_offsets(peer.a.seed, peer.n)
    times = time_reads(read, offsets)
    note(f"{peer.out.peer} randread: {len(times)} reads")
    peer.out.reads(times)


def sparse_phase(peer, begin):
    """W4: `target, commit = begin()`, then `target[p] = v` at each sparse position
    ("update", timed from the call of `begin`), then `commit()` ("commit")."""
    pos = sparse_positions(peer.a.seed, peer.n)
    vals = [-float(p) for p in pos]
    t = time.perf_counter()
    target, commit = begin()
    for p, v in zip(pos, vals):
        target[p] = v
    update = time.perf_counter() - t
    t = time.perf_counter()
    commit()
    committed = time.perf_counter() - t
    note(f"{peer.out.peer} sparse: {len(pos)} positions")
    peer.out.sparse(update, committed)


def small_phase(peer, what, commit_one):
    """W5: `commit_one(p, v)` (one durable write of `what`) at each position, timed one
    by one."""
    pos = small_positions(peer.a.seed, peer.n)
    times = []
    for k, p in enumerate(pos):
        v = 1e6 + k
        t = time.perf_counter()
        commit_one(p, v)
        times.append(time.perf_counter() - t)
    note(f"{peer.out.peer} small: {len(times)} {what}")
    peer.out.small(times)


def time_reads(read, offsets):
    """Time each read(offset); keep the copies alive so nothing is optimised away."""
    times = []
    clock = time.perf_counter
    sink = None
    for o in offsets:
        t = clock()
        sink = read(o)
        times.append(clock() - t)
    del sink
    return times


def hold(args):
    if args.hold_ms:
        time.sleep(args.hold_ms / 1000.0)


# ------------------------------------------------------------------------------------
# Entry


def parse(argv):
    p = argparse.ArgumentParser(
        prog="python -m wdb.bench",
        description="One phase of the wdb benchmark workloads, from Python (JSON lines on stdout).",
    )
    p.add_argument("--phase", required=True, choices=PHASES)
    p.add_argument("--dir", required=True, help="directory holding everything; empty before ingest")
    p.add_argument("--size-bytes", required=True, type=int, help="array size (n = N/8 float64 elements)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--ram-budget", type=int, default=None, help="wdb RAM budget [min(1 GiB, RAM/4)]")
    p.add_argument("--verify", choices=("once-per-boot", "once-per-process", "off"), default=None)
    p.add_argument("--compression", choices=("none", "zstd"), default="zstd")
    p.add_argument("--block-size", type=int, default=None, help="block size of the array (ingest, bigtx)")
    p.add_argument("--baseline", action="store_true", help="run the phase on numpy.memmap of a raw file")
    p.add_argument("--hold-ms", type=int, default=0, help="scan: stay alive this long after the figures")
    return p.parse_args(argv)


def run(args):
    if args.size_bytes % 8 != 0:
        raise BenchError(f"--size-bytes {args.size_bytes} is not a multiple of 8 (float64 elements)")
    if args.size_bytes < READ_ELEMS * 8:
        raise BenchError(f"--size-bytes {args.size_bytes} is too small: at least {READ_ELEMS * 8}")
    if not os.path.isdir(args.dir):
        raise BenchError(f"--dir {args.dir}: not an existing directory")
    bs = args.block_size
    if bs is not None and (bs < 65536 or bs & (bs - 1)):
        raise BenchError(f"--block-size {bs}: must be a power of two of at least 65536")
    if args.ram_budget is not None and args.ram_budget <= 0:
        raise BenchError(f"--ram-budget {args.ram_budget}: must be positive")
    n = args.size_bytes // 8
    peer = MemmapPeer(args, n) if args.baseline else WdbPeer(args, n)
    getattr(peer, args.phase)()


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except BenchError as e:
        print(f"python -m wdb.bench: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a wdb error: the message is the engine's
        print(f"python -m wdb.bench: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
