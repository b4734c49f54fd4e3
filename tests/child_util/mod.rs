//! Tests that need a second process re-run their own test binary with only the test
//! `child_entry` selected; the environment tells that test which role to play
//! (`WDB_CHILD`) and on which database (`WDB_CHILD_DB`). A `child_entry` test returns at
//! once when `WDB_CHILD` is unset, so in the parent run it passes and does nothing.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Run this test binary's `child_entry` test as role `role` on the database at `path`.
pub fn run_child(role: &str, path: &Path) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("WDB_CHILD", role)
        .env("WDB_CHILD_DB", path)
        .output()
        .unwrap()
}

/// [`run_child`], and fail the test with the child's output unless it succeeded.
pub fn run_child_ok(role: &str, path: &Path) {
    let out = run_child(role, path);
    assert!(
        out.status.success(),
        "child {role} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The role this process plays, when it is a child started by [`run_child`], and the
/// database path it was given.
pub fn role() -> Option<(String, String)> {
    let role = std::env::var("WDB_CHILD").ok()?;
    let path = std::env::var("WDB_CHILD_DB").ok()?;
    Some((role, path))
}
