//! What the fuzz targets run, shared with `tests/reliability_fuzz_corpus.rs`, which replays
//! the corpus on stable. Each function must return (Ok or Err) on any input: a panic, an
//! abort or a hang is the bug a fuzzer looks for.

use std::path::Path;

use wdb::db::{ArrayInfo, Db};
use wdb::format::checkpoint::Checkpoint;
use wdb::format::{FileHeader, RecordHeader, TxEnd, TxHeader};

/// Every decoder of the format on `data` (and on each of its suffixes, so one input
/// reaches decoders at several alignments).
pub fn decoders(data: &[u8]) {
    for start in [0usize, 1, 8, 48] {
        let b = data.get(start..).unwrap_or(&[]);
        let _ = FileHeader::decode(b);
        let _ = TxHeader::decode(b, 0);
        let _ = RecordHeader::decode(b, 0);
        let _ = TxEnd::decode(b, 0, None);
        let _ = TxEnd::decode(b, 0, Some(wdb::verify::Crc32::new()));
        let _ = Checkpoint::decode(b);
        let _ = ArrayInfo::decode(b, 0);
        let mut dst = vec![0u8; 64 << 10];
        let _ = wdb::store::encode::decompress_into(b, &mut dst, 0);
    }
}

/// `data` as a database file in `dir`: fsck, open, read every block of every array at
/// every tid, fsck again. Removes the files afterwards.
pub fn open_db(dir: &Path, data: &[u8]) {
    let p = dir.join("fuzz.wdb");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    std::fs::write(&p, data).unwrap();
    let _ = Db::fsck_path(&p);
    if let Ok(db) = Db::open(&p) {
        if let Ok(h) = db.history() {
            for c in h.iter().rev().take(8) {
                let Ok(s) = db.snapshot_at(c.tid) else {
                    continue;
                };
                for name in s.array_names().unwrap_or_default() {
                    let Ok(info) = s.array_info(&name) else {
                        continue;
                    };
                    // The caller chooses the buffer: only sizes a test may allocate.
                    if info.block_size > (1 << 20) {
                        continue;
                    }
                    let mut buf = vec![0u8; info.block_size as usize];
                    for blk in 0..info.n_blocks().unwrap_or(0).min(16) {
                        let _ = s.read_block(info.id, blk, &mut buf);
                    }
                }
            }
        }
        let _ = db.fsck();
    }
}
