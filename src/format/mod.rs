//! (layer format: see lib.rs)
