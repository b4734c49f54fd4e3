"""wdb: NumPy arrays bigger than RAM, zero-copy, with transactions and snapshots.

    import numpy as np, wdb

    db = wdb.open("sensors.wdb", ram_budget=256 << 20)
    with db.begin() as tx:                      # commits at the end of the block
        a = tx.create_array("A", (1_000_000,), "f8")
        a[10:20] = 1.0
        v = a[:]                                # a numpy.ndarray over wdb memory
        v *= 2
    snap = db.snapshot()
    print(snap["A"][:].mean())

Indexing a `wdb.Array` gives real `numpy.ndarray` objects whose memory is wdb's: data
loads lazily on first touch, clean data is dropped again under `ram_budget`, writes
in a transaction are tracked and committed atomically. See `docs/python.md` for what
an ndarray shows after its transaction or snapshot ends.
"""

import faulthandler as _faulthandler
import os as _os

from . import _wdb
from ._errors import *  # noqa: F401,F403
from ._errors import __all__ as _errors_all
from ._wdb import Array, Db, Memory, Snapshot, Transaction

__version__ = "0.1.0"


def open(path_or_url, **options):
    """Open (or create) the database at `path_or_url`.

    Options, as in the engine's `Options`: `ram_budget` (bytes of RAM for loaded and
    dirty blocks), `read_only` (bool), `durability` ("full": a commit survives power
    loss; "buffered": a process crash), `verify` ("once-per-boot", "once-per-process"
    or "off": when a stored block's checksum is checked), `block_size` (default block
    size of new arrays), `zstd_level`.
    """
    return _wdb.open(_os.fspath(path_or_url), **options)


# Python's faulthandler installs its own SIGSEGV handler; installed after wdb's, it
# would see wdb's ordinary page faults first and report them as crashes. wdb puts its
# handler back on top (chaining real crashes to faulthandler) whenever it hands out
# memory, and, through this wrapper, right after faulthandler.enable().
_faulthandler_enable = _faulthandler.enable


def _enable_then_keep_wdb_on_top(*args, **kwargs):
    result = _faulthandler_enable(*args, **kwargs)
    _wdb._ensure_fault_handler()
    return result


_enable_then_keep_wdb_on_top.__doc__ = _faulthandler_enable.__doc__
_faulthandler.enable = _enable_then_keep_wdb_on_top

__all__ = ["open", "Db", "Transaction", "Snapshot", "Array", "Memory"] + list(_errors_all)
