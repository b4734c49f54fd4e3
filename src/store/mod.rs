//! (layer store: see lib.rs)
