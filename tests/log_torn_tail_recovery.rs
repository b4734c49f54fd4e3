//! Recovery cuts a torn tail: the file cut at every byte offset inside the last
//! transaction reopens at the previous commit with its data intact, the cut bytes are
//! kept in a side file, fsck is clean afterwards and new commits append normally.

use wdb::db::{ArraySpec, Compression, Db, Order};

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
        // Compressed: the last transaction is a few hundred bytes, so every cut is cheap.
        compression: Compression::Zstd { level: 3 },
    }
}

fn small_block(v: u8) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    b[..100].fill(v); // trimmed to one page
    b
}

#[test]
fn cutting_the_last_transaction_at_every_byte_recovers_the_previous_commit() {
    // tmpfs when there is one: each case syncs a side file and the log.
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let p = dir.path().join("t.wdb");
    let (t1, id) = {
        let db = Db::open(&p).unwrap();
        let tx = db.begin().unwrap();
        let id = tx.create_array_raw(spec()).unwrap().id;
        tx.write_block(id, 0, &small_block(1)).unwrap();
        let t1 = tx.commit().unwrap();
        (t1, id)
    };
    let len1 = std::fs::metadata(&p).unwrap().len();
    {
        let db = Db::open(&p).unwrap();
        let tx = db.begin().unwrap();
        tx.write_block(id, 0, &small_block(2)).unwrap();
        tx.write_block(id, 1, &small_block(3)).unwrap();
        tx.commit_with("me", "second").unwrap();
    }
    let full = std::fs::read(&p).unwrap();
    let last_tx = full.len() as u64 - len1;
    assert!(last_tx >= 150, "last transaction is {last_tx} bytes");
    let case = dir.path().join("case.wdb");
    for cut in len1..full.len() as u64 {
        // Remove what the previous iteration left (side files, lock, checkpoint).
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap().path();
            if e.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("case.wdb")
            {
                std::fs::remove_file(e).unwrap();
            }
        }
        std::fs::write(&case, &full[..cut as usize]).unwrap();
        let db = Db::open(&case).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(db.last_tid().unwrap(), t1, "cut at {cut}");
        let mut buf = vec![0u8; BS];
        db.snapshot().unwrap().read_block(id, 0, &mut buf).unwrap();
        assert_eq!(buf, small_block(1), "cut at {cut}");
        assert_eq!(
            std::fs::metadata(&case).unwrap().len(),
            len1,
            "cut at {cut}"
        );
        if cut > len1 {
            let side = dir.path().join(format!("case.wdb.torn.{len1}"));
            assert_eq!(
                std::fs::read(&side).unwrap(),
                &full[len1 as usize..cut as usize],
                "cut at {cut}"
            );
        }
        // Every 97th case: the database keeps working and checks clean.
        if cut % 97 == 0 {
            let tx = db.begin().unwrap();
            tx.write_block(id, 2, &small_block(4)).unwrap();
            tx.commit().unwrap();
            assert!(db.fsck().unwrap().is_clean(), "cut at {cut}");
        }
    }
}

#[test]
fn fsck_repair_cuts_only_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.wdb");
    {
        let db = Db::open(&p).unwrap();
        let tx = db.begin().unwrap();
        tx.create_array_raw(spec()).unwrap();
        tx.commit().unwrap();
    }
    let len = std::fs::metadata(&p).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::io::Write::write_all(&mut f, b"TORN-WRITE-GARBAGE").unwrap();
    drop(f);
    let rep = Db::fsck_path(&p).unwrap();
    assert_eq!(rep.torn_tail, Some(len));
    assert!(!rep.is_clean());
    let (_, cut) = Db::repair_path(&p).unwrap();
    assert_eq!(cut.unwrap().0, len);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}

#[test]
fn a_crash_while_creating_the_file_is_recovered_but_foreign_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let header = {
        let p = dir.path().join("ref.wdb");
        Db::open(&p).unwrap();
        std::fs::read(&p).unwrap()
    };
    for cut in [0usize, 1, 7, 8, 100, 4095, 4096] {
        let p = dir.path().join(format!("c{cut}.wdb"));
        let mut b = header[..cut].to_vec();
        if cut == 4096 {
            b[70] = 1; // a torn header page: bad padding
        }
        std::fs::write(&p, &b).unwrap();
        let db = Db::open(&p).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let tx = db.begin().unwrap();
        tx.create_array_raw(spec()).unwrap();
        tx.commit().unwrap();
        assert!(db.fsck().unwrap().is_clean());
    }
    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, b"my notes").unwrap();
    assert!(matches!(
        Db::open(&foreign),
        Err(wdb::Error::Corruption { .. })
    ));
    assert_eq!(std::fs::read(&foreign).unwrap(), b"my notes");
}

#[test]
fn fsck_waits_out_a_commit_in_flight_instead_of_calling_it_torn() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.wdb");
    let db = Db::open(&p).unwrap();
    let tx = db.begin().unwrap();
    tx.create_array_raw(spec()).unwrap();
    tx.commit().unwrap();
    // Simulate a writer mid-append: hold the writer lock and leave partial bytes.
    let guard = db.store().lock_file().writer().unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::io::Write::write_all(&mut f, b"T\x01partial").unwrap();
    let checker = std::thread::spawn({
        let p = p.clone();
        move || Db::fsck_path(&p).unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    // The "writer" finishes: here it takes its bytes back (a failed append).
    f.set_len(len).unwrap();
    drop(guard);
    let rep = checker.join().unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}
