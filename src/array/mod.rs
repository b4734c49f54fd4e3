//! (layer array: see lib.rs)
