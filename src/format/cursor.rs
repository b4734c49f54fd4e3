//! The one checked little-endian cursor every decoder reads through, and its writer twin.
//!
//! Invariant: no method of [`Reader`] panics on any input; running past the end, or a
//! length that does not fit, is `Error::Corruption` naming the file offset of the field.

use crate::{Error, Result};

/// A checked little-endian reader over bytes that came from a file at `base` offset.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Reader<'a> {
    /// Reader over `buf`, which was read from file offset `base` (used in error messages).
    pub fn new(buf: &'a [u8], base: u64) -> Self {
        Reader { buf, pos: 0, base }
    }

    /// File offset of the next byte to read.
    pub fn offset(&self) -> u64 {
        self.base.saturating_add(self.pos as u64)
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Position within the buffer.
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn err(&self, what: &str) -> Error {
        Error::corruption(self.offset(), what.to_string())
    }

    /// Take the next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(&format!(
                "{what}: needs {n} bytes, only {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Take `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.bytes(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Read a `u8`.
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    /// Read a little-endian `u16`.
    pub fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    /// Read a little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    /// Read a little-endian `u64`.
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Read a length-prefixed (u32) UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize, what: &str) -> Result<String> {
        let at = self.offset();
        let n = self.len_u32(max, what)?;
        let b = self.bytes(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::corruption(at, format!("{what}: not UTF-8")))
    }

    /// Read a length-prefixed (u32) byte string of at most `max` bytes.
    pub fn blob(&mut self, max: usize, what: &str) -> Result<Vec<u8>> {
        let n = self.len_u32(max, what)?;
        Ok(self.bytes(n, what)?.to_vec())
    }

    /// Read a u32 count/length and bound it by `max` and by the bytes left (each counted
    /// item takes at least one byte), so it can be used to size an allocation.
    pub fn len_u32(&mut self, max: usize, what: &str) -> Result<usize> {
        let at = self.offset();
        let n = self.u32(what)?;
        let n =
            usize::try_from(n).map_err(|_| Error::corruption(at, format!("{what}: too large")))?;
        if n > max || n > self.remaining() {
            return Err(Error::corruption(
                at,
                format!(
                    "{what}: length {n} exceeds the limit {max} or the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    /// Skip bytes that must all be zero (padding, reserved fields).
    pub fn zeros(&mut self, n: usize, what: &str) -> Result<()> {
        let at = self.offset();
        let b = self.bytes(n, what)?;
        if b.iter().any(|&x| x != 0) {
            return Err(Error::corruption(at, format!("{what}: must be zero")));
        }
        Ok(())
    }
}

/// Little-endian writer into a `Vec<u8>` (encoders cannot fail except on limits they check).
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// Empty writer.
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    /// Append a `u8`.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Append a `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append a `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append a `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Append raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Append `n` zero bytes.
    pub fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
    /// Append a u32 length then the bytes; errors if longer than `max`.
    pub fn blob(&mut self, b: &[u8], max: usize, what: &str) -> Result<()> {
        if b.len() > max {
            return Err(Error::InvalidArgument(format!(
                "{what} is {} bytes, the limit is {max}",
                b.len()
            )));
        }
        let n = u32::try_from(b.len())
            .map_err(|_| Error::InvalidArgument(format!("{what} too long")))?;
        self.u32(n);
        self.bytes(b);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_errors_instead_of_panicking() {
        let b = [1u8, 2, 3];
        let mut r = Reader::new(&b, 100);
        assert_eq!(r.u16("x").unwrap(), 0x0201);
        let e = r.u32("y").unwrap_err();
        assert!(matches!(e, Error::Corruption { offset: 102, .. }), "{e}");
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff], 0);
        assert!(r.len_u32(10, "n").is_err());
    }

    #[test]
    fn writer_roundtrips_through_reader() {
        let mut w = Writer::new();
        w.u8(7);
        w.u64(u64::MAX - 1);
        w.blob(b"abc", 10, "s").unwrap();
        let mut r = Reader::new(&w.buf, 0);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u64("b").unwrap(), u64::MAX - 1);
        assert_eq!(r.string(10, "s").unwrap(), "abc");
        assert_eq!(r.remaining(), 0);
    }
}
