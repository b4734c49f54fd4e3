//! Transaction ids.

use std::fmt;

/// A transaction id: 64-bit, strictly increasing with every commit of a database.
///
/// `Tid(0)` is the empty database, before the first commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tid(pub u64);

impl Tid {
    /// The tid of an empty database (no commit yet).
    pub const ZERO: Tid = Tid(0);

    /// The raw 64-bit value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Tid {
    fn from(v: u64) -> Self {
        Tid(v)
    }
}
