//! (layer log: see lib.rs)
