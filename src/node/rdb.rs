//! Redis' RDB serialization of one value, as DUMP writes and RESTORE reads
//! it: a type byte, the value, the RDB version (u16 LE) and a CRC-64
//! (Jones polynomial, Redis' `crc64`, u64 LE) of everything before it.
//!
//! Written: strings (type 0), lists (1), sets (2), hashes (4) and sorted
//! sets (5, binary scores) with plain length-prefixed strings, RDB version
//! 10 — the generic forms every Redis since 5 loads. Read: those, and what
//! Redis 7.0 writes for small values — LZF-compressed and integer-encoded
//! strings, quicklist-of-listpacks lists (18), intsets (11), listpack
//! hashes (16) and sorted sets (17), sorted sets with text scores (3).
//! Streams are refused either way ([`RdbError::Stream`]).

use std::collections::VecDeque;

use hashbrown::HashSet;

use super::store::{Bytes, Hash, Value, ZSet};

/// The RDB version written, and the newest one read (Redis 7.0's).
pub const RDB_VERSION: u16 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RdbError {
    #[error("DUMP payload version or checksum are wrong")]
    Checksum,
    #[error("Bad data format")]
    Format,
    #[error("stream values cannot be dumped or restored by this node")]
    Stream,
    /// FUNCTION RESTORE: an entry other than a function library.
    #[error("given type is not a function")]
    NotAFunction,
    /// FUNCTION RESTORE: a library entry cut short.
    #[error("Failed loading library payload")]
    Library,
}

const T_STRING: u8 = 0;
const T_LIST: u8 = 1;
const T_SET: u8 = 2;
const T_ZSET: u8 = 3;
const T_HASH: u8 = 4;
const T_ZSET_2: u8 = 5;
const T_SET_INTSET: u8 = 11;
const T_HASH_LISTPACK: u8 = 16;
const T_ZSET_LISTPACK: u8 = 17;
const T_LIST_QUICKLIST_2: u8 = 18;
/// Stream encodings (RDB 5 to 7.2's).
const T_STREAMS: [u8; 3] = [15, 19, 21];

/// Redis' CRC-64 of `b`.
pub fn crc64(b: &[u8]) -> u64 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, b)
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u32::MAX as usize {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len());
    out.extend_from_slice(s);
}

/// A value's DUMP payload.
pub fn dump(v: &Value) -> Result<Vec<u8>, RdbError> {
    let mut out = Vec::new();
    match v {
        Value::Str(s) => {
            out.push(T_STRING);
            put_str(&mut out, s);
        }
        Value::List(l) => {
            out.push(T_LIST);
            put_len(&mut out, l.len());
            l.iter().for_each(|e| put_str(&mut out, e));
        }
        Value::Set(s) => {
            out.push(T_SET);
            put_len(&mut out, s.len());
            s.iter().for_each(|e| put_str(&mut out, e));
        }
        Value::Hash(h) => {
            out.push(T_HASH);
            put_len(&mut out, h.len());
            for (f, v) in h.iter() {
                put_str(&mut out, f);
                put_str(&mut out, v);
            }
        }
        Value::ZSet(z) => {
            out.push(T_ZSET_2);
            put_len(&mut out, z.len());
            // Highest first, as Redis writes (its loader inserts at the head).
            for (m, score) in z.iter().rev() {
                put_str(&mut out, m);
                out.extend_from_slice(&score.to_le_bytes());
            }
        }
        Value::Stream(_) => return Err(RdbError::Stream),
    }
    Ok(seal(out))
}

/// The RDB opcode of a function library (Redis 7's `RDB_OPCODE_FUNCTION2`).
const OPCODE_FUNCTION: u8 = 245;

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// FUNCTION DUMP's payload: each library's code after the function
/// opcode, as Redis writes them in an RDB file, then version and CRC.
pub fn dump_libraries<'a>(codes: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for code in codes {
        out.push(OPCODE_FUNCTION);
        put_str(&mut out, code);
    }
    seal(out)
}

/// The libraries' code a FUNCTION DUMP payload holds (Redis' or ours).
pub fn restore_libraries(p: &[u8]) -> Result<Vec<Bytes>, RdbError> {
    let body = checked_body(p)?;
    let mut r = Reader { b: body, at: 0 };
    let mut codes = Vec::new();
    while r.at < body.len() {
        if r.byte()? != OPCODE_FUNCTION {
            return Err(RdbError::NotAFunction);
        }
        codes.push(r.string().map_err(|_| RdbError::Library)?);
    }
    Ok(codes)
}

/// A payload's body, once its version and CRC are checked.
fn checked_body(p: &[u8]) -> Result<&[u8], RdbError> {
    if p.len() < 10 {
        return Err(RdbError::Checksum);
    }
    let (body, footer) = p.split_at(p.len() - 10);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    let mut crc = [0u8; 8];
    crc.copy_from_slice(&footer[2..]);
    if version > RDB_VERSION || crc64(&p[..p.len() - 8]) != u64::from_le_bytes(crc) {
        return Err(RdbError::Checksum);
    }
    Ok(body)
}

/// Reads a payload back into a value (after checking version and CRC).
pub fn restore(p: &[u8]) -> Result<Value, RdbError> {
    let body = checked_body(p)?;
    let mut r = Reader { b: body, at: 0 };
    let v = r.value()?;
    if r.at != body.len() {
        return Err(RdbError::Format);
    }
    Ok(v)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

/// A length, or a string's special encoding.
enum Len {
    Plain(usize),
    Special(u8),
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RdbError> {
        let end = self.at.checked_add(n).ok_or(RdbError::Format)?;
        let s = self.b.get(self.at..end).ok_or(RdbError::Format)?;
        self.at = end;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8, RdbError> {
        Ok(self.take(1)?[0])
    }
    fn raw_len(&mut self) -> Result<Len, RdbError> {
        let b = self.byte()?;
        Ok(match b >> 6 {
            0 => Len::Plain((b & 0x3f) as usize),
            1 => Len::Plain((((b & 0x3f) as usize) << 8) | self.byte()? as usize),
            2 if b == 0x80 => {
                let s = self.take(4)?;
                Len::Plain(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
            }
            2 if b == 0x81 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(self.take(8)?);
                Len::Plain(usize::try_from(u64::from_be_bytes(a)).map_err(|_| RdbError::Format)?)
            }
            3 => Len::Special(b & 0x3f),
            _ => return Err(RdbError::Format),
        })
    }
    fn len(&mut self) -> Result<usize, RdbError> {
        match self.raw_len()? {
            Len::Plain(n) => Ok(n),
            Len::Special(_) => Err(RdbError::Format),
        }
    }
    /// A count of items each at least `min` bytes: refused when the rest of
    /// the payload could not hold them (no allocation on a lie).
    fn count(&mut self, min: usize) -> Result<usize, RdbError> {
        let n = self.len()?;
        if n == 0 || n > (self.b.len() - self.at) / min.max(1) {
            return Err(RdbError::Format);
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<Bytes, RdbError> {
        match self.raw_len()? {
            Len::Plain(n) => Ok(Bytes::from(self.take(n)?)),
            Len::Special(0) => Ok(int_text(self.take(1)?[0] as i8 as i64)),
            Len::Special(1) => {
                let s = self.take(2)?;
                Ok(int_text(i16::from_le_bytes([s[0], s[1]]) as i64))
            }
            Len::Special(2) => {
                let s = self.take(4)?;
                Ok(int_text(i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64))
            }
            Len::Special(3) => {
                let clen = self.len()?;
                let ulen = self.len()?;
                let data = self.take(clen)?;
                lzf_decompress(data, ulen).map(Bytes::from)
            }
            Len::Special(_) => Err(RdbError::Format),
        }
    }

    fn value(&mut self) -> Result<Value, RdbError> {
        let t = self.byte()?;
        Ok(match t {
            T_STRING => Value::Str(self.string()?),
            T_LIST => {
                let n = self.count(1)?;
                let mut l = VecDeque::with_capacity(n);
                for _ in 0..n {
                    l.push_back(self.string()?);
                }
                Value::List(Box::new(l))
            }
            T_SET => {
                let n = self.count(1)?;
                let mut s = HashSet::with_capacity(n);
                for _ in 0..n {
                    s.insert(self.string()?);
                }
                Value::Set(Box::new(s))
            }
            T_HASH => {
                let n = self.count(2)?;
                let mut h = Hash::with_capacity(n);
                for _ in 0..n {
                    let f = self.string()?;
                    h.insert(&f, &self.string()?);
                }
                Value::Hash(h)
            }
            T_ZSET | T_ZSET_2 => {
                let n = self.count(2)?;
                let mut z = ZSet::with_capacity(n);
                for _ in 0..n {
                    let m = self.string()?;
                    let score = if t == T_ZSET_2 {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(self.take(8)?);
                        f64::from_le_bytes(a)
                    } else {
                        self.text_score()?
                    };
                    if score.is_nan() {
                        return Err(RdbError::Format);
                    }
                    z.insert(&m, score);
                }
                Value::ZSet(z)
            }
            T_SET_INTSET => Value::Set(Box::new(intset(&self.string()?)?)),
            T_HASH_LISTPACK => {
                let items = listpack(&self.string()?)?;
                if items.is_empty() || items.len() % 2 != 0 {
                    return Err(RdbError::Format);
                }
                let mut h = Hash::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    h.insert(&f, &v);
                }
                Value::Hash(h)
            }
            T_ZSET_LISTPACK => {
                let items = listpack(&self.string()?)?;
                if items.is_empty() || items.len() % 2 != 0 {
                    return Err(RdbError::Format);
                }
                let mut z = ZSet::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(m), Some(s)) = (it.next(), it.next()) {
                    let score = super::cmd::parse_f64(&s).ok_or(RdbError::Format)?;
                    z.insert(&m, score);
                }
                Value::ZSet(z)
            }
            T_LIST_QUICKLIST_2 => {
                let nodes = self.count(2)?;
                let mut l = VecDeque::new();
                for _ in 0..nodes {
                    let container = self.len()?;
                    let data = self.string()?;
                    match container {
                        // PLAIN: one element as it is.
                        1 => l.push_back(data),
                        2 => l.extend(listpack(&data)?),
                        _ => return Err(RdbError::Format),
                    }
                }
                if l.is_empty() {
                    return Err(RdbError::Format);
                }
                Value::List(Box::new(l))
            }
            t if T_STREAMS.contains(&t) => return Err(RdbError::Stream),
            _ => return Err(RdbError::Format),
        })
    }

    /// RDB type 3's score: a length byte (253 NaN, 254 +inf, 255 -inf)
    /// and the number as text.
    fn text_score(&mut self) -> Result<f64, RdbError> {
        match self.byte()? {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let t = self.take(n as usize)?;
                super::cmd::parse_f64(t).ok_or(RdbError::Format)
            }
        }
    }
}

fn int_text(n: i64) -> Bytes {
    Bytes::from(n.to_string().as_bytes())
}

/// LZF (liblzf's format, as Redis compresses strings).
fn lzf_decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, RdbError> {
    let mut out: Vec<u8> = Vec::with_capacity(out_len.min(input.len().saturating_mul(64)));
    let mut i = 0;
    let next = |i: &mut usize| -> Result<u8, RdbError> {
        let b = *input.get(*i).ok_or(RdbError::Format)?;
        *i += 1;
        Ok(b)
    };
    while i < input.len() {
        let ctrl = next(&mut i)? as usize;
        if ctrl < 32 {
            let run = input.get(i..i + ctrl + 1).ok_or(RdbError::Format)?;
            out.extend_from_slice(run);
            i += ctrl + 1;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += next(&mut i)? as usize;
            }
            let back = ((ctrl & 0x1f) << 8) + next(&mut i)? as usize + 1;
            let from = out.len().checked_sub(back).ok_or(RdbError::Format)?;
            // Overlapping copies repeat bytes: one at a time.
            for k in 0..len + 2 {
                out.push(out[from + k]);
            }
        }
        if out.len() > out_len {
            return Err(RdbError::Format);
        }
    }
    if out.len() != out_len {
        return Err(RdbError::Format);
    }
    Ok(out)
}

/// An intset: encoding (2, 4 or 8 bytes per integer), count, integers LE.
fn intset(b: &[u8]) -> Result<HashSet<Bytes>, RdbError> {
    let u32_at = |at: usize| -> Result<u32, RdbError> {
        let s = b.get(at..at + 4).ok_or(RdbError::Format)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let width = u32_at(0)? as usize;
    let n = u32_at(4)? as usize;
    if ![2, 4, 8].contains(&width) || n == 0 || b.len() != 8 + n * width {
        return Err(RdbError::Format);
    }
    let mut s = HashSet::with_capacity(n);
    for c in b[8..].chunks_exact(width) {
        let v = match width {
            2 => i16::from_le_bytes([c[0], c[1]]) as i64,
            4 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
            _ => {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                i64::from_le_bytes(a)
            }
        };
        s.insert(int_text(v));
    }
    Ok(s)
}

/// The entries of a listpack: header (total bytes u32, count u16), then
/// each entry's encoding and data followed by its back-length, then 0xFF.
fn listpack(b: &[u8]) -> Result<Vec<Bytes>, RdbError> {
    if b.len() < 7 || u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize != b.len() {
        return Err(RdbError::Format);
    }
    let mut out = Vec::new();
    let mut at = 6;
    loop {
        let e = *b.get(at).ok_or(RdbError::Format)?;
        if e == 0xFF {
            break;
        }
        let get = |from: usize, n: usize| b.get(from..from + n).ok_or(RdbError::Format);
        let sign = |v: i64, bits: u32| {
            if v >= 1 << (bits - 1) {
                v - (1 << bits)
            } else {
                v
            }
        };
        let (item, size) = if e & 0x80 == 0 {
            (int_text((e & 0x7f) as i64), 1)
        } else if e & 0xC0 == 0x80 {
            let n = (e & 0x3f) as usize;
            (Bytes::from(get(at + 1, n)?), 1 + n)
        } else if e & 0xE0 == 0xC0 {
            let v = (((e & 0x1f) as i64) << 8) | get(at + 1, 1)?[0] as i64;
            (int_text(sign(v, 13)), 2)
        } else if e & 0xF0 == 0xE0 {
            let n = (((e & 0x0f) as usize) << 8) | get(at + 1, 1)?[0] as usize;
            (Bytes::from(get(at + 2, n)?), 2 + n)
        } else {
            match e {
                0xF0 => {
                    let l = get(at + 1, 4)?;
                    let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                    (Bytes::from(get(at + 5, n)?), 5 + n)
                }
                0xF1 => {
                    let d = get(at + 1, 2)?;
                    (int_text(i16::from_le_bytes([d[0], d[1]]) as i64), 3)
                }
                0xF2 => {
                    let d = get(at + 1, 3)?;
                    let v = d[0] as i64 | (d[1] as i64) << 8 | (d[2] as i64) << 16;
                    (int_text(sign(v, 24)), 4)
                }
                0xF3 => {
                    let d = get(at + 1, 4)?;
                    (
                        int_text(i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64),
                        5,
                    )
                }
                0xF4 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(get(at + 1, 8)?);
                    (int_text(i64::from_le_bytes(a)), 9)
                }
                _ => return Err(RdbError::Format),
            }
        };
        let back = match size {
            0..=127 => 1,
            128..=16382 => 2,
            16383..=2097150 => 3,
            2097151..=268435454 => 4,
            _ => 5,
        };
        out.push(item);
        at += size + back;
    }
    if at + 1 != b.len() {
        return Err(RdbError::Format);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What redis-server 7.0 answers FUNCTION DUMP with one library.
    const REDIS_FUNCTION_DUMP: &[u8] = b"\xf5\x40\x4a#!lua name=mylib\nredis.register_function('f1', function(k,a) return 1 end)\x0a\x00\xd5\xae\x5e\xf4\x58\xe7\x24\xa0";

    #[test]
    fn function_dump_payloads_match_redis_byte_for_byte() {
        let code: &[u8] =
            b"#!lua name=mylib\nredis.register_function('f1', function(k,a) return 1 end)";
        assert_eq!(dump_libraries(std::iter::once(code)), REDIS_FUNCTION_DUMP);
        let back = restore_libraries(REDIS_FUNCTION_DUMP).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(&back[0][..], code);
        // No libraries: version and CRC only, as Redis writes.
        assert_eq!(
            dump_libraries(std::iter::empty()),
            b"\x0a\x00\x5d\x9b\x5c\x40\x0f\x7f\xa2\xda"
        );
    }

    #[test]
    fn function_restore_refuses_other_entries_and_cut_libraries() {
        let entry = |body: &[u8]| seal(body.to_vec());
        assert_eq!(
            restore_libraries(&entry(b"\x00\x01a")),
            Err(RdbError::NotAFunction)
        );
        assert_eq!(
            restore_libraries(&entry(b"\xf5\x05hel")),
            Err(RdbError::Library)
        );
        let mut bad = REDIS_FUNCTION_DUMP.to_vec();
        bad[5] ^= 1;
        assert_eq!(restore_libraries(&bad), Err(RdbError::Checksum));
    }

    #[test]
    fn crc64_is_redis_jones_crc() {
        // Redis' crc64.c test vector.
        assert_eq!(crc64(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn every_written_type_reads_back() {
        let k = |s: &str| Bytes::from(s.as_bytes());
        let mut z = ZSet::default();
        z.insert(b"a", 1.5);
        z.insert(b"b", f64::NEG_INFINITY);
        let mut h = Hash::default();
        h.insert(b"f", "v".repeat(300).as_bytes());
        let values = [
            Value::Str(k("")),
            Value::Str(k(&"x".repeat(70000))),
            Value::List(Box::new(VecDeque::from(vec![k("1"), k("two")]))),
            Value::Set(Box::new([k("a"), k("-5")].into_iter().collect())),
            Value::Hash(h),
            Value::ZSet(z),
        ];
        for v in &values {
            let p = dump(v).expect("dumpable");
            let back = restore(&p).expect("restorable");
            assert_eq!(
                format!("{back:?}").len(),
                format!("{v:?}").len(),
                "{}",
                v.type_name()
            );
            assert_eq!(back.type_name(), v.type_name());
        }
        let mut bad = dump(&values[2]).expect("dumpable");
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(restore(&bad).err(), Some(RdbError::Checksum));
        assert_eq!(restore(b"short").err(), Some(RdbError::Checksum));
    }

    #[test]
    fn lzf_back_references_repeat_bytes() {
        // "abcabcabc": literal "abc", then a 6-byte copy from 3 back.
        let data = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(lzf_decompress(&data, 9).expect("valid"), b"abcabcabc");
        assert!(lzf_decompress(&data, 8).is_err());
        assert!(
            lzf_decompress(&[(4 << 5), 9], 6).is_err(),
            "a reference before the start"
        );
    }

    #[test]
    fn listpack_entries_of_every_encoding() {
        let mut lp = vec![0u8; 6];
        let entries: &[&[u8]] = &[
            &[5],                // 7-bit uint
            &[0x82, b'h', b'i'], // 6-bit string
            &[0xDF, 0xFF],       // 13-bit int: -1
            &[0xF1, 0x00, 0x80], // int16: -32768
            &[0xF3, 1, 0, 0, 0], // int32: 1
        ];
        for e in entries {
            lp.extend_from_slice(e);
            lp.push(e.len() as u8);
        }
        lp.push(0xFF);
        let total = lp.len() as u32;
        lp[..4].copy_from_slice(&total.to_le_bytes());
        let got: Vec<String> = listpack(&lp)
            .expect("valid")
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(got, ["5", "hi", "-1", "-32768", "1"]);
    }
}
