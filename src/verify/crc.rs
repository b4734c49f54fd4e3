//! The CRC-32 of the storage format (ISO-HDLC, reflected polynomial 0xEDB88320, the
//! values `crc32fast` computes): one-shot, streaming, and the combination of two CRCs.
//! Every CRC wdb computes or checks goes through this file, so the implementation is
//! chosen in one place: `crc32fast`, measured as fast as `crc-fast` (VPCLMULQDQ) at
//! every size wdb checks (`benches/crc.rs`).

/// CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A streaming CRC-32: `update` with the bytes in order, then `finalize`.
#[derive(Clone, Debug, Default)]
pub struct Crc32 {
    h: crc32fast::Hasher,
}

impl Crc32 {
    /// A CRC of no bytes yet.
    pub fn new() -> Crc32 {
        Crc32 {
            h: crc32fast::Hasher::new(),
        }
    }

    /// The state after `len` bytes whose CRC-32 is `crc` (to be combined with
    /// [`Crc32::combine`]).
    pub fn new_with_initial_len(crc: u32, len: u64) -> Crc32 {
        Crc32 {
            h: crc32fast::Hasher::new_with_initial_len(crc, len),
        }
    }

    /// Feed `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.h.update(bytes);
    }

    /// Append the bytes `other` has seen, by their CRC and length alone.
    pub fn combine(&mut self, other: &Crc32) {
        self.h.combine(&other.h);
    }

    /// The CRC-32 of everything fed.
    pub fn finalize(self) -> u32 {
        self.h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_combination() {
        // The check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for cut in [0, 1, 4095, 4096, 50_000, 100_000] {
            let (a, b) = data.split_at(cut);
            let mut s = Crc32::new();
            s.update(a);
            s.update(b);
            assert_eq!(s.finalize(), crc32(&data));
            let mut c = Crc32::new_with_initial_len(crc32(a), a.len() as u64);
            c.combine(&Crc32::new_with_initial_len(crc32(b), b.len() as u64));
            assert_eq!(c.finalize(), crc32(&data));
        }
    }
}
