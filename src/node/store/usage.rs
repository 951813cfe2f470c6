//! What OBJECT ENCODING and MEMORY USAGE say about a value.

use super::{Bytes, Key, Store, Value};

impl Value {
    /// OBJECT ENCODING's answer: Redis' name for the encoding this value
    /// has, or for the nearest one (lists and sets have one encoding here).
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) => {
                let int = s.len() <= 20
                    && std::str::from_utf8(s)
                        .ok()
                        .and_then(|t| t.parse::<i64>().ok())
                        .is_some_and(|n| n.to_string().as_bytes() == &s[..]);
                if int {
                    "int"
                } else if s.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }
            }
            Value::Hash(h) => h.encoding(),
            Value::List(_) => "quicklist",
            Value::Set(_) => "hashtable",
            Value::ZSet(z) => z.encoding(),
            Value::Stream(_) => "stream",
        }
    }
    /// Heap bytes the value holds, estimated from `samples` elements of a
    /// large aggregate (0: all), as MEMORY USAGE reports them.
    pub fn heap_bytes(&self, samples: usize) -> usize {
        let sampled = |n: usize, sizes: &mut dyn Iterator<Item = usize>| {
            let take = if samples == 0 { n } else { samples };
            let (mut seen, mut bytes) = (0usize, 0usize);
            for b in sizes.take(take) {
                seen += 1;
                bytes += b;
            }
            (bytes * n).checked_div(seen).unwrap_or(0)
        };
        let boxed = std::mem::size_of::<Bytes>();
        match self {
            Value::Str(s) => s.len(),
            Value::Hash(h) => h.heap_bytes(samples),
            Value::List(l) => {
                l.capacity() * boxed + sampled(l.len(), &mut l.iter().map(|x| x.len()))
            }
            Value::Set(s) => {
                s.capacity() * (boxed + 1) + sampled(s.len(), &mut s.iter().map(|x| x.len()))
            }
            Value::ZSet(z) => z.heap_bytes(samples),
            Value::Stream(st) => {
                let entry = 64;
                st.entries.len() * entry
                    + sampled(
                        st.entries.len(),
                        &mut st
                            .entries
                            .values()
                            .map(|f| f.iter().map(|x| x.len() + boxed).sum::<usize>()),
                    )
            }
        }
    }
}

impl Store {
    /// What MEMORY USAGE reports for a key: its place in the slot's table
    /// (key and entry, and its index slot at 7/8 load), the key's
    /// own allocation when it is too long to live inline, the value's box
    /// and the value's heap bytes (see [`Value::heap_bytes`]).
    pub fn key_bytes(key: &Key, value: &Value, samples: usize) -> usize {
        let bucket = super::slot_map::SlotMap::bytes_per_pair();
        let heap_key = if key.len() > super::INLINE_KEY {
            key.len()
        } else {
            0
        };
        let boxed = match value {
            Value::Str(_) | Value::Hash(_) | Value::ZSet(_) => 0,
            Value::List(l) => std::mem::size_of_val(&**l),
            Value::Set(s) => std::mem::size_of_val(&**s),
            Value::Stream(s) => std::mem::size_of_val(&**s),
        };
        bucket + heap_key + boxed + value.heap_bytes(samples)
    }
}
