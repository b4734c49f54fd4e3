//! Backward compatibility: a small database written by format version 3
//! (`tests/data/v3-small.wdb`: typed arrays, a record array, raw blocks with page CRC
//! tables, zstd, hole and trimmed blocks, a delta chain, a deleted array) opens, reads
//! back exactly at every tid and checks clean — forever. The content and the checks
//! are shared with the other versions' golden files (`tests/golden_util`).

mod golden_util;

#[test]
fn format_v3_database_reads_back() {
    let bytes = golden_util::golden_bytes("v3-small.wdb", 3);
    // Raw blocks carry page CRC tables: some record header has flag bit 1 (page CRCs).
    assert!(
        (4096..bytes.len() - 48).step_by(8).any(|o| bytes[o] == b'B'
            && bytes[o + 1] == 1
            && bytes[o + 2] == 1
            && bytes[o + 3] == 2),
        "no raw block record with a page CRC table"
    );
    golden_util::check_reads_back("v3-small.wdb");
}
