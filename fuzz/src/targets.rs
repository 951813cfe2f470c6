//! The targets' bodies. Inputs that need checksums to get past the first
//! check carry a mode byte: with its bit 0 set the harness rewrites the
//! CRCs before decoding, so the fuzzer spends its time in the decoders and
//! not on guessing CRC32C values.

use std::cell::RefCell;
use std::rc::Rc;

use tessera::node::cmd::{self, Args, Ctx, Effects};
use tessera::node::fuzzing::{self, AdminBody};
use tessera::node::resp::{parse_request, parse_request_as, Parsed, ReplyBuf};
use tessera::node::slots::SLOTS;
use tessera::node::store::Store;
use tessera::node::wal::{self, Wal};
use tessera::node::{ClientLimits, Node, NodeConfig};

/// Most commands one `commands` input runs (keeps an input's time bounded).
const MAX_COMMANDS: usize = 256;

/// Memory the in-process node is configured for: bounds replies
/// (`ClientLimits::for_memory`) and writes (`maxmemory`).
const NODE_MEMORY: u64 = 256 << 20;

/// Instruction-hook ticks (100k Lua instructions each) the scripts of one
/// `commands` input may use in all (EVAL, FCALL, FUNCTION LOAD, …): a
/// script may loop for ever by design (as in Redis, until SCRIPT KILL), so
/// past this budget it fails instead, and so does every script after it.
/// Per input, not per command: a loop of `redis.call`s costs ~5 µs per
/// 5 instructions, and 256 such loops must stay far below the 10 s timeout.
const SCRIPT_TICKS: u64 = 10;

pub fn resp(data: &[u8]) {
    let mut args = Vec::new();
    for authenticated in [true, false] {
        let mut pos = 0;
        while pos < data.len() {
            match parse_request_as(&data[pos..], &mut args, authenticated) {
                Ok(Parsed::Incomplete) => break,
                Ok(Parsed::Command(n)) | Ok(Parsed::Empty(n)) => {
                    assert!(n > 0 && pos + n <= data.len(), "no progress or overrun");
                    for r in &args {
                        assert!(
                            r.start <= r.end && r.end <= n,
                            "argument outside the request"
                        );
                    }
                    pos += n;
                }
                Err(e) => match e.skip {
                    Some(s) => {
                        assert!(s > 0, "an error that skips nothing");
                        pos += s;
                    }
                    None => break,
                },
            }
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Rewrites the CRC of each well-framed log record in `b[start..]`.
fn fix_record_crcs(b: &mut [u8], start: usize) {
    let mut at = start;
    while let Some(len) = u32_at(b, at) {
        let len = len as usize;
        let Some(body) = b.get(at + 8..(at + 8).saturating_add(len)) else {
            return;
        };
        let crc = crc32c::crc32c(body);
        b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += 8 + len;
    }
}

pub fn wal(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut b = rest.to_vec();
    let fix = mode & 1 != 0;
    if mode & 2 == 0 {
        // A segment file: header, then records.
        let header = wal::SEGMENT_HEADER_LEN;
        if fix && b.len() >= header {
            let crc = crc32c::crc32c(&b[..header - 4]);
            b[header - 4..header].copy_from_slice(&crc.to_le_bytes());
            fix_record_crcs(&mut b, header);
        }
        // Named as its header says (or one off), as recovery finds it.
        let named = u64_at(&b, 12).unwrap_or(1);
        let name_lsn = if mode & 4 != 0 {
            named.wrapping_add(1)
        } else {
            named
        };
        if let Ok((_, valid)) = fuzzing::wal_segment(&b, name_lsn, mode & 8 != 0) {
            assert!(valid as usize <= b.len(), "valid length past the file");
        }
    } else {
        // Records back to back, as a frame carries them.
        if fix {
            fix_record_crcs(&mut b, 0);
        }
        let (mut views, mut ranges) = (Vec::new(), Vec::new());
        if wal::decode_records_in_place(&b, &mut views, &mut ranges).is_ok() {
            for v in &views {
                for r in &ranges[v.args.clone()] {
                    assert!(r.start <= r.end && r.end <= b.len(), "argument outside");
                }
            }
        }
        if let Ok((_, n)) = wal::decode_record(&b) {
            assert!(n <= b.len(), "record past the input");
        }
        let through = views.get(usize::from(mode >> 4)).map_or(0, |v| v.lsn);
        assert!(wal::skip_records_through(&b, through) <= b.len());
    }
}

thread_local! {
    static STORE: RefCell<Store> = RefCell::new(Store::new());
}

pub fn snapshot(data: &[u8]) {
    // The slot the section claims (so the slot check passes), as the
    // loader would read it in its place in the file.
    let slot = match data.get(..2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]) as usize,
        None => 0,
    };
    let slot = if slot < SLOTS { slot } else { 0 };
    STORE.with(|s| {
        let mut store = s.borrow_mut();
        let _ = tessera::node::snapshot::load_section(data, slot, &mut store);
        store.flush_slot(slot as u16);
        // The same bytes as a scripts section (counts, lengths, names).
        let _ = tessera::node::snapshot::load_scripts_section(data, &mut store.scripts);
        store.scripts.flush_scripts();
        store.scripts.flush_libraries();
    });
}

/// Bytes of an empty slot's section in a snapshot file: len, crc, then
/// the body (slot u16, watermark u64, count u64).
fn empty_section(slot: usize) -> [u8; 26] {
    let mut s = [0u8; 26];
    s[0..4].copy_from_slice(&18u32.to_le_bytes());
    s[8..10].copy_from_slice(&(slot as u16).to_le_bytes());
    let crc = crc32c::crc32c(&s[8..]);
    s[4..8].copy_from_slice(&crc.to_le_bytes());
    s
}

/// A whole snapshot file through `load_bytes`: header, 16384 sections, the
/// scripts section, the footer, and every checksum between them. Input:
/// a mode byte, then a file given up to its first sections (those that
/// name slots 0, 1, 2, … in order). Mode bit 1
/// fills the slots after the sections the input holds with empty ones (a
/// whole file would not fit the fuzzer's input size), the rest of the input
/// then follows as the scripts section and the footer; bit 0 rewrites the
/// header's, each section's and the footer's CRC.
pub fn snapshot_file(data: &[u8]) {
    let Some(b) = snapshot_file_bytes(data) else {
        return;
    };
    STORE.with(|s| {
        let mut store = s.borrow_mut();
        let _ = tessera::node::snapshot::load_bytes(&b, &mut store);
        for slot in 0..SLOTS {
            store.flush_slot(slot as u16);
        }
        store.scripts.flush_scripts();
        store.scripts.flush_libraries();
    });
}

/// The file [`snapshot_file`] loads for `data`.
pub fn snapshot_file_bytes(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    let id_len = rest
        .get(12..14)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let head = (14 + id_len).min(rest.len());
    let mut b = rest[..head].to_vec();
    let mut at = head;
    if rest.len() >= head + 4 {
        let crc = if mode & 1 != 0 {
            crc32c::crc32c(&b).to_le_bytes()
        } else {
            [rest[head], rest[head + 1], rest[head + 2], rest[head + 3]]
        };
        b.extend_from_slice(&crc);
        at += 4;
    }
    // The sections the input holds, each well framed.
    let mut slots = 0;
    while slots < SLOTS {
        let Some(len) = u32_at(rest, at) else { break };
        let end = (at + 8).saturating_add(len as usize);
        // A section names its slot first; anything else is the tail.
        let slot = rest
            .get(at + 8..at + 10)
            .map(|b| u16::from_le_bytes([b[0], b[1]]));
        if end > rest.len() || len < 18 || slot != Some(slots as u16) {
            break;
        }
        let start = b.len();
        b.extend_from_slice(&rest[at..end]);
        if mode & 1 != 0 {
            let crc = crc32c::crc32c(&b[start + 8..]);
            b[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
        at = end;
        slots += 1;
    }
    if mode & 2 != 0 {
        for slot in slots..SLOTS {
            b.extend_from_slice(&empty_section(slot));
        }
    }
    let tail = b.len();
    b.extend_from_slice(&rest[at.min(rest.len())..]);
    if mode & 1 != 0 {
        // The scripts section's CRC, when it is framed, then the footer's
        // (the file's last 4 bytes: CRC of everything before them).
        if let Some(len) = u32_at(&b, tail) {
            let end = (tail + 8).saturating_add(len as usize);
            if end <= b.len() {
                let crc = crc32c::crc32c(&b[tail + 8..end]);
                b[tail + 4..tail + 8].copy_from_slice(&crc.to_le_bytes());
            }
        }
        if b.len() >= tail + 4 {
            let n = b.len() - 4;
            let crc = crc32c::crc32c(&b[..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
        }
    }
    Some(b)
}

/// A node with no data directory, as a test or the fuzzer runs it.
fn node() -> Rc<Node> {
    let mut cfg = NodeConfig::for_tests(std::path::PathBuf::new());
    cfg.persistence = false;
    cfg.maxmemory = NODE_MEMORY;
    cfg.limits = ClientLimits::for_memory(Some(NODE_MEMORY));
    let node = Rc::new(Node::new(
        cfg,
        "0000000000000000000000000000000000000000".into(),
        Wal::disabled(),
        Store::new(),
    ));
    node.ready.set(true);
    node
}

/// Runs `f` on a current-thread runtime in a fresh `LocalSet`: the node's
/// code may spawn local tasks; dropping the set drops them with the input.
fn in_runtime(f: impl FnOnce()) {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| {
        let local = tokio::task::LocalSet::new();
        local.block_on(rt, async { f() });
    });
}

pub fn replication(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut b = rest.to_vec();
    if mode & 1 != 0 {
        // Records frames: `R`, len u32, records.
        let mut at = 0;
        while let Some(len) = u32_at(&b, at + 1) {
            let end = (at + 5).saturating_add(len as usize);
            if end > b.len() {
                break;
            }
            if b[at] == b'R' {
                fix_record_crcs(&mut b[at + 5..end], 0);
            }
            at = end;
        }
    }
    // After a full resync, the loaded snapshot's per-slot LSNs.
    let watermarks = (mode & 2 != 0).then(|| vec![u64::from(mode >> 2); SLOTS]);
    in_runtime(|| {
        let node = node();
        let _ = fuzzing::replication_stream(&node, &b, watermarks);
    });
}

pub fn admin(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let kind = match kind % 6 {
        0 => AdminBody::Topology,
        1 => AdminBody::RoleCall,
        2 => AdminBody::Archived,
        3 => AdminBody::MigrationStart,
        4 => AdminBody::MigrationLimits,
        _ => AdminBody::SlotRanges,
    };
    thread_local! {
        static NODE: Rc<Node> = node();
    }
    NODE.with(|node| {
        let _ = fuzzing::admin_body(node, kind, body);
    });
}

pub fn commands(data: &[u8]) {
    run_commands(data, &mut |_| {});
}

/// The replies [`commands`] gives for `data`, one per command run.
#[cfg(test)]
pub(crate) fn command_replies(data: &[u8]) -> Vec<Vec<u8>> {
    let mut replies = Vec::new();
    run_commands(data, &mut |r| replies.push(r.to_vec()));
    replies
}

fn run_commands(data: &[u8], on_reply: &mut dyn FnMut(&[u8])) {
    in_runtime(|| {
        let node = node();
        fuzzing::bound_scripts(&node, SCRIPT_TICKS);
        let mut conn = node.new_conn("127.0.0.1:1".into());
        let mut out = ReplyBuf::new();
        let mut ranges = Vec::new();
        let mut pos = 0;
        for _ in 0..MAX_COMMANDS {
            if pos >= data.len() {
                break;
            }
            let pending = &data[pos..];
            let used = match parse_request(pending, &mut ranges) {
                Ok(Parsed::Command(n)) => n,
                Ok(Parsed::Empty(n)) => {
                    pos += n;
                    continue;
                }
                Ok(Parsed::Incomplete) => break,
                Err(e) => match e.skip {
                    Some(n) => {
                        pos += n;
                        continue;
                    }
                    None => break,
                },
            };
            pos += used;
            let args = Args {
                buf: pending,
                ranges: &ranges,
            };
            let mut effects = Effects::default();
            let mut store = node.store.borrow_mut();
            store.now_ms = tessera::node::now_ms();
            out.limit = node.cfg.limits.max_reply;
            let mut ctx = Ctx::new(&node, &mut store, &mut out, &mut conn, &mut effects);
            cmd::dispatch(&mut ctx, &args);
            drop(store);
            assert!(
                out.overflowed || out.buf.len() <= node.cfg.limits.max_reply,
                "a reply past the per-command limit"
            );
            on_reply(&out.buf);
            out.buf.clear();
            out.overflowed = false;
            out.limit = usize::MAX;
            if conn.close_after_reply {
                break;
            }
        }
    });
}
