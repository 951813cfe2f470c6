//! A stream's snapshot encoding (types 5 and 6, see the parent's format
//! comment): its entries, counters and consumer groups.

use super::{put_bytes, put_u64, Cursor};
use crate::node::groups::Group;
use crate::node::store::{Stream, StreamId};

fn put_id(b: &mut Vec<u8>, id: StreamId) {
    put_u64(b, id.ms);
    put_u64(b, id.seq);
}

pub(super) fn encode_stream(b: &mut Vec<u8>, s: &Stream) {
    put_id(b, s.last_id);
    put_u64(b, s.entries_added);
    put_id(b, s.max_deleted_id);
    put_u64(b, s.entries.len() as u64);
    for (id, fields) in s.entries.iter() {
        put_id(b, *id);
        put_u64(b, fields.len() as u64);
        for f in fields {
            put_bytes(b, f);
        }
    }
    put_u64(b, s.groups.len() as u64);
    for (name, g) in &s.groups {
        put_bytes(b, name);
        put_id(b, g.last_id);
        put_u64(b, g.entries_read as u64);
        put_u64(b, g.consumers.len() as u64);
        for (cname, c) in &g.consumers {
            put_bytes(b, cname);
            put_u64(b, c.seen_time);
        }
        put_u64(b, g.pel.len() as u64);
        for (id, p) in &g.pel {
            put_id(b, *id);
            put_bytes(b, &p.consumer);
            put_u64(b, p.delivery_time);
            put_u64(b, p.delivery_count);
        }
    }
}

fn decode_id(c: &mut Cursor<'_>) -> Result<StreamId, String> {
    Ok(StreamId {
        ms: c.u64()?,
        seq: c.u64()?,
    })
}

/// A stream; `groups`: the type 6 layout (counters and consumer groups).
pub(super) fn decode_stream(c: &mut Cursor<'_>, groups: bool) -> Result<Stream, String> {
    let mut s = Stream {
        last_id: decode_id(c)?,
        ..Stream::default()
    };
    if groups {
        s.entries_added = c.u64()?;
        s.max_deleted_id = decode_id(c)?;
    }
    let n = c.count(24)?;
    for _ in 0..n {
        let id = decode_id(c)?;
        let m = c.count(4)?;
        let mut fields = Vec::with_capacity(m);
        for _ in 0..m {
            fields.push(c.bytes()?);
        }
        s.entries.insert(id, fields);
    }
    if !groups {
        s.entries_added = s.entries.len() as u64;
        return Ok(s);
    }
    let ng = c.count(36)?;
    for _ in 0..ng {
        let name = c.bytes()?;
        let last = decode_id(c)?;
        let mut g = Group::new(last, c.u64()? as i64);
        let nc = c.count(12)?;
        for _ in 0..nc {
            let cname = c.bytes()?;
            let seen = c.u64()?;
            g.consumer(&cname, seen);
        }
        let np = c.count(36)?;
        for _ in 0..np {
            let id = decode_id(c)?;
            let owner = c.bytes()?;
            let (time, count) = (c.u64()?, c.u64()?);
            g.set_pending(id, &owner, time, count);
        }
        s.groups.insert(name, g);
    }
    Ok(s)
}
