//! I/O errors during commit: an injected fsync failure (or EIO, ENOSPC, a torn write)
//! fails the commit, poisons the writer until reopen, and after reopen the database
//! holds exactly the acknowledged commits.

use wdb::db::{ArraySpec, Compression, Db, Options, Order};
use wdb::log::io::{Fault, FaultyIo, FileIo};
use wdb::store::{Store, StoreOptions};
use wdb::Error;

const BS: usize = 64 << 10;

fn spec() -> ArraySpec {
    ArraySpec {
        name: "A".into(),
        dtype: vec![],
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![BS as u64 * 8],
        order: Order::C,
        block_size: BS as u32,
        compression: Compression::None,
    }
}

fn run(fault: Fault) {
    run_nth(fault, 1);
}

/// Inject `fault` at the `nth` write (or sync) of one commit of a 2-block transaction.
fn run_nth(fault: Fault, nth: u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.wdb");
    let (t1, id) = {
        let db = Db::open(&p).unwrap();
        let tx = db.begin().unwrap();
        let id = tx.create_array_raw(spec()).unwrap().id;
        tx.write_block(id, 0, &vec![1u8; BS]).unwrap();
        (tx.commit().unwrap(), id)
    };
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let (io, plan) = FaultyIo::new(FileIo(f));
        let store = Store::open_with_io(&p, Box::new(io), StoreOptions::default()).unwrap();
        let db = Db::from_store(store, Options::default());
        plan.arm(fault, nth);
        let tx = db.begin().unwrap();
        tx.write_block(id, 0, &vec![2u8; BS]).unwrap();
        tx.write_block(id, 3, &vec![4u8; BS]).unwrap();
        let e = tx.commit().unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{fault:?}: {e}");
        plan.disarm();
        let e = db.begin().map(|_| ()).unwrap_err();
        assert!(matches!(e, Error::Poisoned(_)), "{fault:?}: {e}");
    }
    let db = Db::open(&p).unwrap();
    assert_eq!(db.last_tid().unwrap(), t1, "{fault:?}");
    let mut buf = vec![0u8; BS];
    db.snapshot().unwrap().read_block(id, 0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 1), "{fault:?}");
    let tx = db.begin().unwrap();
    tx.write_block(id, 1, &vec![3u8; BS]).unwrap();
    tx.commit().unwrap();
    let rep = db.fsck().unwrap();
    assert!(rep.is_clean(), "{fault:?}: {:?}", rep.problems);
}

#[test]
fn failed_fsync_poisons_the_writer_until_reopen() {
    run(Fault::SyncEio);
}

#[test]
fn eio_enospc_and_torn_writes_fail_cleanly() {
    run(Fault::WriteEio);
    run(Fault::WriteEnospc);
    run(Fault::TearWrite(100));
    run(Fault::TearWrite(5000));
}

#[test]
fn a_fault_at_every_write_of_a_commit_leaves_the_last_acknowledged_state() {
    // A 2-block commit is 4 writes (headers, payload, header+pad, payload+trailer).
    for nth in 1..=4 {
        for fault in [
            Fault::WriteEio,
            Fault::WriteEnospc,
            Fault::TearWrite(1),
            Fault::TearWrite(4097),
        ] {
            run_nth(fault, nth);
        }
    }
}
