//! Backward compatibility: a small database written by format version 4
//! (`tests/data/v4-small.wdb`: the content of every golden file — typed arrays, a record
//! array, raw blocks with page CRC tables, zstd, hole and trimmed blocks, a delta chain,
//! a deleted array — plus a whole 2 MiB raw block, whose payload version 4 places at a
//! 2 MiB-aligned offset behind a hole) opens, reads back exactly at every tid and checks
//! clean — forever. Regenerate (only when starting a new format version's file) with
//! `WDB_WRITE_GOLDEN=1 cargo test --test format_golden_v4`; the content and the checks
//! are shared with the other versions' golden files (`tests/golden_util`).

mod golden_util;

#[test]
fn format_v4_database_reads_back() {
    golden_util::regenerate_if_asked("v4-small.wdb", true);
    let bytes = golden_util::golden_bytes("v4-small.wdb", 4);
    // A raw block record with page CRC table and the aligned flag (bits 1 and 2), whose
    // payload (after its 48-byte header and the table) starts at the next multiple of
    // 2 MiB, with only zeros before it.
    let huge = 2usize << 20;
    let rec = (4096..bytes.len() - 48)
        .step_by(8)
        .find(|&o| {
            bytes[o] == b'B' && bytes[o + 1] == 1 && bytes[o + 2] == 1 && bytes[o + 3] == 2 | 4
        })
        .expect("no raw block record with an aligned payload");
    let stored = u32::from_le_bytes(bytes[rec + 36..rec + 40].try_into().unwrap()) as usize;
    assert_eq!(stored, huge);
    let table_end = rec + 48 + 4 * stored / 4096 + 4;
    let payload = table_end.next_multiple_of(huge);
    assert!(bytes[table_end..payload].iter().all(|&b| b == 0));
    assert!(bytes[payload..payload + stored].iter().any(|&b| b != 0));
    golden_util::check_reads_back_with("v4-small.wdb", true);
}
