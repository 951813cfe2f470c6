//! The packed encoding of small aggregates (Redis calls its own "listpack"):
//! one exactly sized heap buffer per value holding every element back to
//! back, instead of a table with an allocation per element.
//!
//! Layout: a 4-byte little-endian element count, then the elements, each a
//! LEB128 length followed by that many bytes. An empty buffer (no
//! allocation at all) is an empty aggregate. What the elements mean (hash
//! field/value pairs, sorted-set members with their scores) is up to
//! [`super::hash`] and [`super::zset`].
//!
//! The buffer is rewritten on every change (an O(n) copy), which is why it
//! holds only small aggregates: past the thresholds in [`Limits`] a value
//! becomes its full structure, for good.

use std::sync::atomic::{AtomicUsize, Ordering};

const HEADER: usize = 4;

/// When a packed aggregate becomes its full structure: more than `entries`
/// elements (pairs for a hash), or an element longer than `value` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub entries: usize,
    pub value: usize,
}

impl Limits {
    /// Redis 7's defaults for hashes and sorted sets.
    pub const DEFAULT: Limits = Limits {
        entries: 128,
        value: 64,
    };
}

// The node's settings (CONFIG SET hash-max-listpack-*, zset-max-listpack-*).
// Process-wide: one process serves one node.
static HASH_ENTRIES: AtomicUsize = AtomicUsize::new(Limits::DEFAULT.entries);
static HASH_VALUE: AtomicUsize = AtomicUsize::new(Limits::DEFAULT.value);
static ZSET_ENTRIES: AtomicUsize = AtomicUsize::new(Limits::DEFAULT.entries);
static ZSET_VALUE: AtomicUsize = AtomicUsize::new(Limits::DEFAULT.value);

/// The thresholds new and growing hashes are judged by.
pub fn hash_limits() -> Limits {
    Limits {
        entries: HASH_ENTRIES.load(Ordering::Relaxed),
        value: HASH_VALUE.load(Ordering::Relaxed),
    }
}

/// The thresholds new and growing sorted sets are judged by.
pub fn zset_limits() -> Limits {
    Limits {
        entries: ZSET_ENTRIES.load(Ordering::Relaxed),
        value: ZSET_VALUE.load(Ordering::Relaxed),
    }
}

/// Applies one of the four settings by its Redis name; false when `name`
/// is not one of them. Values already encoded keep their encoding.
pub fn set_limit(name: &str, v: usize) -> bool {
    let cell = match name {
        "hash-max-listpack-entries" => &HASH_ENTRIES,
        "hash-max-listpack-value" => &HASH_VALUE,
        "zset-max-listpack-entries" => &ZSET_ENTRIES,
        "zset-max-listpack-value" => &ZSET_VALUE,
        _ => return false,
    };
    cell.store(v, Ordering::Relaxed);
    true
}

/// Elements in a packed buffer.
pub fn count(buf: &[u8]) -> usize {
    match buf.get(..HEADER) {
        Some(h) => u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize,
        None => 0,
    }
}

fn set_count(buf: &mut [u8], n: usize) {
    // Thresholds above u32::MAX elements are not meaningful for a buffer
    // rewritten on every change; the count saturates rather than wraps.
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    buf[..HEADER].copy_from_slice(&n.to_le_bytes());
}

/// Bytes the element `data` takes, its length prefix included.
pub fn elem_size(data: &[u8]) -> usize {
    varint_size(data.len()) + data.len()
}

fn varint_size(mut n: usize) -> usize {
    let mut size = 1;
    while n >= 0x80 {
        n >>= 7;
        size += 1;
    }
    size
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends one element (length prefix and bytes).
pub fn put_elem(out: &mut Vec<u8>, data: &[u8]) {
    put_varint(out, data.len());
    out.extend_from_slice(data);
}

/// The elements of a buffer in order, each with its byte range.
pub struct Elems<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Elems<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: HEADER.min(buf.len()),
        }
    }
    /// The position of the next element.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// The next `n` raw bytes (a fixed-size element part such as a score).
    pub fn fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        let b = self.buf.get(self.pos..self.pos + N)?;
        self.pos += N;
        b.try_into().ok()
    }
}

impl<'a> Iterator for Elems<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let (mut len, mut shift) = (0usize, 0u32);
        loop {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            len |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let data = self.buf.get(self.pos..self.pos + len)?;
        self.pos += len;
        Some(data)
    }
}

/// A buffer being rewritten: exactly `size` bytes of elements are expected,
/// so the finished buffer needs no shrinking copy.
pub struct Builder(Vec<u8>);

impl Builder {
    pub fn with_body(size: usize) -> Self {
        let mut v = Vec::with_capacity(HEADER + size);
        v.extend_from_slice(&[0; HEADER]);
        Builder(v)
    }
    pub fn elem(&mut self, data: &[u8]) {
        put_elem(&mut self.0, data);
    }
    pub fn raw(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
    }
    pub fn finish(mut self, count: usize) -> Box<[u8]> {
        if count == 0 {
            return Box::default();
        }
        set_count(&mut self.0, count);
        self.0.into_boxed_slice()
    }
}

/// Bytes of the body (everything after the header).
pub fn body_len(buf: &[u8]) -> usize {
    buf.len().saturating_sub(HEADER)
}

/// Appends raw bytes (whole elements) to `buf`, reallocating it exactly.
pub fn append(buf: &mut Box<[u8]>, added: usize, bytes: &[u8]) {
    let mut v = std::mem::take(buf).into_vec();
    if v.is_empty() {
        v.reserve_exact(HEADER + bytes.len());
        v.extend_from_slice(&[0; HEADER]);
    } else {
        v.reserve_exact(bytes.len());
    }
    v.extend_from_slice(bytes);
    let n = count(&v) + added;
    set_count(&mut v, n);
    *buf = v.into_boxed_slice();
}

/// Removes the bytes `range` (whole elements, `removed` of them).
pub fn cut(buf: &mut Box<[u8]>, range: std::ops::Range<usize>, removed: usize) {
    let n = count(buf).saturating_sub(removed);
    if n == 0 {
        *buf = Box::default();
        return;
    }
    let mut v = std::mem::take(buf).into_vec();
    v.drain(range);
    set_count(&mut v, n);
    // into_boxed_slice gives the spare capacity back.
    *buf = v.into_boxed_slice();
}

/// Replaces the bytes `range` by `with` (same number of elements).
pub fn splice(buf: &mut Box<[u8]>, range: std::ops::Range<usize>, with: &[u8]) {
    if range.len() == with.len() {
        buf[range].copy_from_slice(with);
        return;
    }
    let mut b = Builder(Vec::with_capacity(buf.len() - range.len() + with.len()));
    b.raw(&buf[..range.start]);
    b.raw(with);
    b.raw(&buf[range.end..]);
    *buf = b.0.into_boxed_slice();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_round_trip_with_long_lengths() {
        let long = vec![7u8; 300];
        let mut buf: Box<[u8]> = Box::default();
        let mut one = Vec::new();
        put_elem(&mut one, b"a");
        put_elem(&mut one, &long);
        append(&mut buf, 2, &one);
        assert_eq!(count(&buf), 2);
        let got: Vec<&[u8]> = Elems::new(&buf).collect();
        assert_eq!(got, vec![&b"a"[..], &long[..]]);
        // 300 needs a two-byte length.
        assert_eq!(elem_size(&long), 302);
        assert_eq!(buf.len(), HEADER + 2 + 302);
    }

    #[test]
    fn cutting_every_element_frees_the_buffer() {
        let mut buf: Box<[u8]> = Box::default();
        let mut one = Vec::new();
        put_elem(&mut one, b"xyz");
        append(&mut buf, 1, &one);
        let end = buf.len();
        cut(&mut buf, HEADER..end, 1);
        assert_eq!(buf.len(), 0);
        assert_eq!(count(&buf), 0);
        assert_eq!(Elems::new(&buf).count(), 0);
    }
}
