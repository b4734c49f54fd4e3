//! (layer bigfile: see lib.rs)
