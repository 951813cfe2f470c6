//! Bit commands on strings: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP.
//!
//! Bit 0 is the most significant bit of the first byte, as in Redis.

use super::flags::*;
use super::strings::{clamp_indexes, clamp_range};
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::store::{Store, Value, WRONGTYPE};
use crate::try_reply;

pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "setbit",
        arity: 4,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: setbit,
    },
    CommandSpec {
        name: "getbit",
        arity: 3,
        flags: READONLY | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: getbit,
    },
    CommandSpec {
        name: "bitcount",
        arity: -2,
        flags: READONLY,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: bitcount,
    },
    CommandSpec {
        name: "bitpos",
        arity: -3,
        flags: READONLY,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: bitpos,
    },
    CommandSpec {
        name: "bitop",
        arity: -4,
        flags: WRITE | DENYOOM,
        first_key: 2,
        last_key: -1,
        step: 1,
        handler: bitop,
    },
];

const ERR_BIT_OFFSET: &str = "ERR bit offset is not an integer or out of range";
const ERR_BIT_VALUE: &str = "ERR bit is not an integer or out of range";

/// A bit offset: its byte must lie within the largest string a client may
/// build (proto-max-bulk-len), so SETBIT allocates at most 512 MB.
fn bit_offset(args: &Args<'_>, i: usize) -> Result<u64, &'static str> {
    match super::parse_i64(args.get(i)) {
        Some(n) if n >= 0 && ((n as u64) >> 3) < crate::node::resp::MAX_BULK as u64 => Ok(n as u64),
        _ => Err(ERR_BIT_OFFSET),
    }
}

/// The string at `key` (empty when absent), or WRONGTYPE.
fn read<'s>(store: &'s mut Store, slot: u16, key: &[u8]) -> Result<Option<&'s [u8]>, &'static str> {
    match store.get(slot, key).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(_) => Err(WRONGTYPE),
    }
}

fn bit_at(s: &[u8], bit: u64) -> bool {
    let byte = (bit >> 3) as usize;
    s.get(byte).is_some_and(|b| b & (0x80 >> (bit & 7)) != 0)
}

fn setbit(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let offset = try_reply!(ctx, bit_offset(args, 2));
    let on = match super::parse_i64(args.get(3)) {
        Some(v @ (0 | 1)) => v == 1,
        _ => {
            ctx.out.error(ERR_BIT_VALUE);
            return;
        }
    };
    let (slot, key) = (ctx.slot(), args.get(1));
    try_reply!(ctx, read(ctx.store, slot, key));
    let byte = (offset >> 3) as usize;
    let mask = 0x80u8 >> (offset & 7);
    let (old, changed) = match ctx.store.get_mut(slot, key).map(|e| &mut e.value) {
        Some(Value::Str(s)) => {
            let old = s.get(byte).is_some_and(|b| b & mask != 0);
            let grows = s.len() <= byte;
            if grows {
                let mut v = std::mem::take(s).into_vec();
                v.resize(byte + 1, 0);
                *s = v.into_boxed_slice();
            }
            if on {
                s[byte] |= mask;
            } else {
                s[byte] &= !mask;
            }
            (old, grows || old != on)
        }
        _ => {
            // Bounded by bit_offset: at most proto-max-bulk-len bytes.
            let mut v = vec![0u8; byte + 1];
            if on {
                v[byte] |= mask;
            }
            ctx.store
                .set(slot, key, Value::Str(v.into_boxed_slice()), 0);
            (false, true)
        }
    };
    if changed {
        ctx.propagate(args);
    }
    ctx.out.bool_int(old);
}

fn getbit(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let offset = try_reply!(ctx, bit_offset(args, 2));
    let slot = ctx.slot();
    let s = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.bool_int(s.is_some_and(|s| bit_at(s, offset)));
}

/// BYTE (false) or BIT (true) from argument `i`.
fn unit(args: &Args<'_>, i: usize) -> Result<bool, &'static str> {
    if args.is(i, "bit") {
        Ok(true)
    } else if args.is(i, "byte") {
        Ok(false)
    } else {
        Err(ERR_SYNTAX)
    }
}

/// A byte or bit range in bits: the inclusive range [first, last].
fn bit_range(start: i64, end: i64, len: usize, in_bits: bool) -> Option<(u64, u64)> {
    // Strings are at most 512 MB: the length in bits fits an i64.
    let total = if in_bits { len as i64 * 8 } else { len as i64 };
    let (a, b) = clamp_range(start, end, total)?;
    let (a, b) = (a as u64, b as u64);
    Some(if in_bits { (a, b) } else { (a * 8, b * 8 + 7) })
}

fn popcount(s: &[u8], first: u64, last: u64) -> u64 {
    let mut n = 0u64;
    let mut b = first;
    while b <= last {
        if b & 7 == 0 && b + 7 <= last {
            n += s[(b >> 3) as usize].count_ones() as u64;
            b += 8;
        } else {
            n += bit_at(s, b) as u64;
            b += 1;
        }
    }
    n
}

fn bitcount(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    // Redis 7.0 looks the key up first: a missing key is 0 whatever follows.
    let Some(s) = try_reply!(ctx, read(ctx.store, slot, args.get(1))) else {
        ctx.out.int(0);
        return;
    };
    let range = match args.len() {
        2 => bit_range(0, -1, s.len(), false),
        4 | 5 => {
            let start = try_reply!(ctx, args.int(2));
            let end = try_reply!(ctx, args.int(3));
            if start < 0 && end < 0 && start > end {
                ctx.out.int(0);
                return;
            }
            let in_bits = if args.len() == 5 {
                try_reply!(ctx, unit(args, 4))
            } else {
                false
            };
            bit_range(start, end, s.len(), in_bits)
        }
        _ => {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
    };
    let n = range.map_or(0, |(a, b)| popcount(s, a, b));
    ctx.out.int(n as i64);
}

/// First bit equal to `bit` in [first, last], if any.
fn find_bit(s: &[u8], bit: bool, first: u64, last: u64) -> Option<u64> {
    let skip = if bit { 0x00 } else { 0xff };
    let mut b = first;
    while b <= last {
        if b & 7 == 0 && b + 7 <= last && s[(b >> 3) as usize] == skip {
            b += 8;
            continue;
        }
        if bit_at(s, b) == bit {
            return Some(b);
        }
        b += 1;
    }
    None
}

fn bitpos(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let bit = match try_reply!(ctx, args.int(2)) {
        0 => false,
        1 => true,
        _ => {
            ctx.out.error("ERR The bit argument must be 1 or 0.");
            return;
        }
    };
    let slot = ctx.slot();
    let Some(s) = try_reply!(ctx, read(ctx.store, slot, args.get(1))) else {
        ctx.out.int(if bit { -1 } else { 0 });
        return;
    };
    if args.len() > 6 {
        ctx.out.error(ERR_SYNTAX);
        return;
    }
    let start = if args.len() >= 4 {
        try_reply!(ctx, args.int(3))
    } else {
        0
    };
    let in_bits = if args.len() == 6 {
        try_reply!(ctx, unit(args, 5))
    } else {
        false
    };
    let end_given = args.len() >= 5;
    let end = if end_given {
        try_reply!(ctx, args.int(4))
    } else {
        -1
    };
    // BITPOS has no "both negative and start > end" shortcut.
    let total = if in_bits {
        s.len() as i64 * 8
    } else {
        s.len() as i64
    };
    let range = clamp_indexes(start, end, total).map(|(a, b)| {
        let (a, b) = (a as u64, b as u64);
        if in_bits {
            (a, b)
        } else {
            (a * 8, b * 8 + 7)
        }
    });
    let Some((first, last)) = range else {
        ctx.out.int(-1);
        return;
    };
    let pos = match find_bit(s, bit, first, last) {
        Some(p) => p as i64,
        // No clear bit: without an explicit end the string counts as
        // padded with zeros, so the answer is the bit after the range.
        None if !bit && !end_given => last as i64 + 1,
        None => -1,
    };
    ctx.out.int(pos);
}

/// BITOP AND|OR|XOR|NOT dst src…: missing sources are empty strings, the
/// shorter ones padded with zero bytes; an empty result deletes `dst`.
fn bitop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Op {
        And,
        Or,
        Xor,
        Not,
    }
    let op = match args.get(1).to_ascii_lowercase().as_slice() {
        b"and" => Op::And,
        b"or" => Op::Or,
        b"xor" => Op::Xor,
        b"not" => Op::Not,
        _ => return ctx.out.error(ERR_SYNTAX),
    };
    if op == Op::Not && args.len() != 4 {
        return ctx
            .out
            .error("ERR BITOP NOT must be called with a single source key.");
    }
    let slot = ctx.slot();
    // Expire lazily and check every type first, then read in place.
    for key in args.iter().skip(3) {
        try_reply!(ctx, read(ctx.store, slot, key));
    }
    let store = &*ctx.store;
    let sources: Vec<&[u8]> = args
        .iter()
        .skip(3)
        .map(|k| match store.peek(slot, k).map(|e| &e.value) {
            Some(Value::Str(s)) => &s[..],
            _ => &[][..],
        })
        .collect();
    let len = sources.iter().map(|s| s.len()).max().unwrap_or(0);
    let byte = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let result: Vec<u8> = (0..len)
        .map(|i| {
            let mut it = sources.iter().map(|s| byte(s, i));
            let first = it.next().unwrap_or(0);
            match op {
                Op::And => it.fold(first, |a, b| a & b),
                Op::Or => it.fold(first, |a, b| a | b),
                Op::Xor => it.fold(first, |a, b| a ^ b),
                Op::Not => !first,
            }
        })
        .collect();
    let dst = args.get(2);
    let existed = ctx.store.get(slot, dst).is_some();
    if result.is_empty() {
        ctx.store.remove(slot, dst);
    } else {
        ctx.store
            .set(slot, dst, Value::Str(result.into_boxed_slice()), 0);
    }
    if len > 0 || existed {
        // The sources are in the same slot: replay computes the same bytes.
        ctx.propagate(args);
    }
    ctx.out.int(len as i64);
}
