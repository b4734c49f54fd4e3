"""wdb's SIGSEGV handler beside Python's faulthandler, in both orders, and a real
segfault in other native code still giving faulthandler's report (child processes)."""

import signal

import pytest

from conftest import run_py

USE_VIEWS = """
import sys, numpy as np, wdb
db = wdb.open(sys.argv[1], ram_budget=1 << 20, block_size=1 << 16)
with db.begin() as tx:
    tx.create_array("A", (1 << 18,), "f8")   # 2 MiB, twice the budget
for lo in range(0, 1 << 18, 1 << 15):         # 256 KiB per transaction, through views
    with db.begin() as tx:
        v = tx["A"][lo:lo + (1 << 15)]
        v[:] = 1.0
early = db.snapshot()["A"][:1000]
assert db.snapshot()["A"][:].sum() == 1 << 18
"""


def test_faulthandler_enabled_before_wdb(db_path):
    p = run_py("import faulthandler; faulthandler.enable()\n" + USE_VIEWS + "print('ok')", db_path)
    assert p.stdout.strip() == "ok" and "Fatal Python error" not in p.stderr


def test_faulthandler_enabled_after_wdb(db_path):
    # faulthandler.enable() after wdb's handler is installed and views exist: views
    # made before keep working, new ones too.
    p = run_py(
        USE_VIEWS
        + """
import faulthandler
faulthandler.enable()
assert early.sum() == 1000.0          # a view from before
assert db.snapshot()["A"][:].sum() == 1 << 18
print("ok")
""",
        db_path,
    )
    assert p.stdout.strip() == "ok" and "Fatal Python error" not in p.stderr


def test_handler_displaced_behind_the_wrapper(db_path):
    # The C-level function (not the module attribute wdb wraps): the next view puts
    # wdb's handler back on top.
    p = run_py(
        USE_VIEWS
        + """
wdb._faulthandler_enable()
with db.begin() as tx:
    tx["A"][:1000] = 2.0
assert db.snapshot()["A"][:].sum() == (1 << 18) + 1000
print("ok")
""",
        db_path,
    )
    assert p.stdout.strip() == "ok"


@pytest.mark.parametrize("order", ["faulthandler-first", "wdb-first", "no-faulthandler"])
def test_real_segfault_still_reports(db_path, order):
    pre = "import faulthandler; faulthandler.enable()\n" if order == "faulthandler-first" else ""
    post = "import faulthandler; faulthandler.enable()\n" if order == "wdb-first" else ""
    code = (
        pre
        + USE_VIEWS
        + post
        + """
import ctypes
print("about to crash", flush=True)
ctypes.string_at(0)
print("not reached")
"""
    )
    p = run_py(code, db_path, check=False)
    assert "about to crash" in p.stdout and "not reached" not in p.stdout
    assert p.returncode == -signal.SIGSEGV, (p.returncode, p.stderr)
    if order == "no-faulthandler":
        assert "Fatal Python error" not in p.stderr
    else:
        assert p.stderr.count("Fatal Python error: Segmentation fault") == 1, p.stderr
        assert "string_at" in p.stderr or "line" in p.stderr
