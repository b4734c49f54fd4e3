//! Backward compatibility: a small database written by format version 2
//! (`tests/data/v2-small.wdb`: typed arrays, a record array, raw, zstd, hole and trimmed
//! blocks, a delta chain, a deleted array) opens, reads back exactly at every tid and
//! checks clean — forever. The content and the checks are shared with the other
//! versions' golden files (`tests/golden_util`).

mod golden_util;

#[test]
fn format_v2_database_reads_back() {
    golden_util::golden_bytes("v2-small.wdb", 2);
    golden_util::check_reads_back("v2-small.wdb");
}
