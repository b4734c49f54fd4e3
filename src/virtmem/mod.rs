//! (layer virtmem: see lib.rs)
