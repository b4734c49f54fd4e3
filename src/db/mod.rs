//! (layer db: see lib.rs)
