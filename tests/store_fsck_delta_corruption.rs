//! fsck and readers catch a damaged delta record: a flipped bit in its header, in its
//! page index list or in its pages (CRC mismatches), and — with every CRC recomputed so
//! only the structure is wrong — a back pointer that is not the block's previous
//! version or a page index past the block. Reading the block then fails with
//! `Corruption` instead of returning wrong bytes.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use wdb::db::{ArraySpec, Compression, Db, Order};
use wdb::format::{self, RecordHeader, TxHeader};
use wdb::{Error, Tid};

const BS: usize = 64 << 10;

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    id: u64,
    /// (tx offset, tx length, record offset, header) of the delta record.
    tx_off: u64,
    tx_len: u64,
    rec_off: u64,
    rh: RecordHeader,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.wdb");
    let id;
    {
        let db = Db::open(&path).unwrap();
        let tx = db.begin().unwrap();
        id = tx
            .create_array_raw(ArraySpec {
                name: "A".into(),
                dtype: b"<u1".to_vec(),
                dtype_name: "u8".into(),
                elem_size: 1,
                shape: vec![4 * BS as u64],
                order: Order::C,
                block_size: BS as u32,
                compression: Compression::None,
            })
            .unwrap()
            .id;
        let mut b: Vec<u8> = (0..BS).map(|i| (i % 251) as u8 + 1).collect();
        tx.write_block(id, 0, &b).unwrap();
        tx.commit().unwrap();
        let tx = db.begin().unwrap();
        b[3 * 4096 + 5] = 0;
        tx.write_block(id, 0, &b).unwrap();
        tx.commit().unwrap();
        // A later transaction, so damage to the delta's is not a torn tail.
        let tx = db.begin().unwrap();
        tx.write_block(id, 1, &b).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            db.snapshot()
                .unwrap()
                .array_stats("A")
                .unwrap()
                .delta_blocks,
            1
        );
        assert!(db.fsck().unwrap().is_clean());
    }
    let log = wdb::log::Log::open(&path, true).unwrap();
    let scan = log.scan(format::FILE_HEADER_SIZE, Tid::ZERO, true).unwrap();
    let (tx, (rec_off, rh)) = scan
        .txs
        .iter()
        .find_map(|t| {
            t.records
                .iter()
                .find(|(_, rh)| rh.encoding.is_delta())
                .map(|r| (t, *r))
        })
        .expect("a delta record");
    assert_eq!(rh.encoding, format::Encoding::DeltaRaw);
    Setup {
        tx_off: tx.off,
        tx_len: tx.header.total_len,
        rec_off,
        rh,
        path,
        id,
        _dir: dir,
    }
}

fn patch(p: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn flip(p: &Path, off: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x04;
    f.write_all_at(&b, off).unwrap();
}

/// Recompute the transaction CRC in the trailer of the transaction at `off`.
fn fix_tx_crc(p: &Path, off: u64, len: u64) {
    let bytes = std::fs::read(p).unwrap();
    let tx = &bytes[off as usize..(off + len) as usize];
    let h = TxHeader::decode(tx, off).unwrap();
    let prefix = h.prefix_len() as usize;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&tx[..prefix]);
    let mut pos = prefix;
    for _ in 0..h.n_records {
        let rh = RecordHeader::decode(&tx[pos..pos + format::RECORD_HEADER_SIZE], off + pos as u64)
            .unwrap();
        crc.update(&tx[pos..pos + format::RECORD_HEADER_SIZE]);
        pos += rh.span() as usize;
    }
    let end = len as usize - format::TX_END_SIZE;
    crc.update(&tx[end..end + format::TX_END_CRC_AT]);
    patch(
        p,
        off + (end + format::TX_END_CRC_AT) as u64,
        &crc.finalize().to_le_bytes(),
    );
}

/// Rewrite the delta record with a changed header and payload, every CRC valid.
fn rewrite(s: &Setup, prev_off: u64, payload_edit: impl FnOnce(&mut Vec<u8>)) {
    let bytes = std::fs::read(&s.path).unwrap();
    let at = (s.rec_off + s.rh.payload_rel()) as usize;
    let mut payload = bytes[at..at + s.rh.stored_len as usize].to_vec();
    payload_edit(&mut payload);
    let rh = RecordHeader {
        prev_off,
        data_crc: crc32fast::hash(&payload),
        ..s.rh
    };
    patch(&s.path, s.rec_off, &rh.encode());
    patch(&s.path, at as u64, &payload);
    fix_tx_crc(&s.path, s.tx_off, s.tx_len);
}

/// fsck reports a problem containing `what` at the delta record, and a reader of the
/// block gets `Corruption`.
fn assert_caught(s: &Setup, what: &str) {
    let rep = Db::fsck_path(&s.path).unwrap();
    assert!(
        rep.problems.iter().any(|p| p.what.contains(what)),
        "fsck did not report {what:?}: {rep}"
    );
    // The index checkpoint still matches the (intact) last transaction: open works, and
    // the read of the damaged chain fails.
    let db = Db::open_with(&s.path, wdb::Options::default().read_only(true)).unwrap();
    let mut buf = vec![0u8; BS];
    match db.snapshot().unwrap().read_block(s.id, 0, &mut buf) {
        Err(Error::Corruption { .. }) => {}
        other => panic!("reading the damaged block gave {other:?}"),
    }
    // The block the later transaction wrote is intact.
    db.snapshot()
        .unwrap()
        .read_block(s.id, 1, &mut buf)
        .unwrap();
}

#[test]
fn a_flipped_bit_in_the_delta_header_is_caught() {
    let s = setup();
    flip(&s.path, s.rec_off + 33); // logical length
    assert_caught(&s, "record header CRC mismatch");
}

#[test]
fn a_flipped_bit_in_the_page_list_is_caught() {
    let s = setup();
    flip(&s.path, s.rec_off + s.rh.payload_rel() + 16);
    assert_caught(&s, "data CRC mismatch");
}

#[test]
fn a_flipped_bit_in_the_pages_is_caught() {
    let s = setup();
    flip(&s.path, s.rec_off + s.rh.payload_rel() + 20 + 1000);
    assert_caught(&s, "data CRC mismatch");
}

#[test]
fn a_back_pointer_to_another_record_is_caught() {
    let s = setup();
    // The first record of the first transaction (the names marker), not block 0's
    // previous version.
    let bad = format::FILE_HEADER_SIZE + 48;
    assert_ne!(bad, s.rh.prev_off);
    rewrite(&s, bad, |_| {});
    assert_caught(&s, "back pointer");
}

#[test]
fn a_page_index_past_the_block_is_caught() {
    let s = setup();
    let prev = s.rh.prev_off;
    rewrite(&s, prev, |p| {
        p[16..20].copy_from_slice(&9999u32.to_le_bytes())
    });
    assert_caught(&s, "delta page index");
}

#[test]
fn a_wrong_page_count_is_caught() {
    let s = setup();
    let prev = s.rh.prev_off;
    rewrite(&s, prev, |p| p[8..12].copy_from_slice(&2u32.to_le_bytes()));
    assert_caught(&s, "delta of 2 pages");
}
