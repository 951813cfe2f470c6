//! BITFIELD and BITFIELD_RO: signed and unsigned integers of 1-64 bits at
//! any bit offset of a string, with Redis' overflow rules (WRAP, SAT,
//! FAIL). Bit 0 is the most significant bit of the first byte.

use super::flags::*;
use super::{parse_i64, Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::store::{Value, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "bitfield", arity: -2, flags: WRITE | DENYOOM, first_key: 1, last_key: 1, step: 1, handler: bitfield },
    CommandSpec { name: "bitfield_ro", arity: -2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: bitfield_ro },
];

const ERR_TYPE: &str =
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";
const ERR_OFFSET: &str = "ERR bit offset is not an integer or out of range";

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Get,
    Set,
    Incr,
}

struct Op {
    kind: Kind,
    signed: bool,
    bits: u32,
    offset: u64,
    value: i64,
    overflow: Overflow,
}

/// `i1`…`i64` or `u1`…`u63`.
fn parse_type(b: &[u8]) -> Result<(bool, u32), &'static str> {
    let signed = match b.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(ERR_TYPE),
    };
    match parse_i64(&b[1..]) {
        Some(n) if n >= 1 && n <= if signed { 64 } else { 63 } => Ok((signed, n as u32)),
        _ => Err(ERR_TYPE),
    }
}

/// A bit offset, or `#n` for the n-th field of this width; its byte must
/// lie within proto-max-bulk-len.
fn parse_offset(b: &[u8], bits: u32) -> Result<u64, &'static str> {
    let (hash, digits) = match b.strip_prefix(b"#") {
        Some(rest) => (true, rest),
        None => (false, b),
    };
    let n = parse_i64(digits).ok_or(ERR_OFFSET)?;
    let n = if hash {
        n.checked_mul(i64::from(bits)).ok_or(ERR_OFFSET)?
    } else {
        n
    };
    if n < 0 || ((n as u64) >> 3) >= crate::node::resp::MAX_BULK as u64 {
        return Err(ERR_OFFSET);
    }
    Ok(n as u64)
}

/// The operations, in Redis' order of checks: subcommand, type, offset,
/// value.
fn parse(args: &Args<'_>) -> Result<Vec<Op>, &'static str> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < args.len() {
        let rem = args.len() - j - 1;
        let kind = if args.is(j, "get") && rem >= 2 {
            Kind::Get
        } else if args.is(j, "set") && rem >= 3 {
            Kind::Set
        } else if args.is(j, "incrby") && rem >= 3 {
            Kind::Incr
        } else if args.is(j, "overflow") && rem >= 1 {
            overflow = match args.get(j + 1).to_ascii_lowercase().as_slice() {
                b"wrap" => Overflow::Wrap,
                b"sat" => Overflow::Sat,
                b"fail" => Overflow::Fail,
                _ => return Err("ERR Invalid OVERFLOW type specified"),
            };
            j += 2;
            continue;
        } else {
            return Err(ERR_SYNTAX);
        };
        let (signed, bits) = parse_type(args.get(j + 1))?;
        let offset = parse_offset(args.get(j + 2), bits)?;
        let value = if kind == Kind::Get {
            0
        } else {
            args.int(j + 3)?
        };
        ops.push(Op {
            kind,
            signed,
            bits,
            offset,
            value,
            overflow,
        });
        j += if kind == Kind::Get { 3 } else { 4 };
    }
    Ok(ops)
}

/// The `bits`-wide field at `offset` as an unsigned number (missing bytes
/// read as zeros).
fn get_bits(s: &[u8], offset: u64, bits: u32) -> u64 {
    (0..u64::from(bits)).fold(0u64, |acc, i| {
        let bit = offset + i;
        let set = s
            .get((bit >> 3) as usize)
            .is_some_and(|b| b & (0x80 >> (bit & 7)) != 0);
        (acc << 1) | u64::from(set)
    })
}

fn set_bits(s: &mut [u8], offset: u64, bits: u32, v: u64) {
    for i in 0..u64::from(bits) {
        let bit = offset + i;
        let mask = 0x80u8 >> (bit & 7);
        let on = (v >> (u64::from(bits) - 1 - i)) & 1 == 1;
        if let Some(b) = s.get_mut((bit >> 3) as usize) {
            if on {
                *b |= mask;
            } else {
                *b &= !mask;
            }
        }
    }
}

/// Overflow of `value + incr` in a field, computed as Redis' C code does
/// it (`checkSignedBitfieldOverflow`), wrapping arithmetic included: SET
/// of -2^63 into a narrow signed field counts as an overflow upwards.
/// Some(true) above the range, Some(false) below, None within.
fn signed_overflow(value: i64, incr: i64, bits: u32) -> Option<bool> {
    let max: i64 = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    if value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
        Some(true)
    } else if value < min
        || (bits != 64 && incr < minincr)
        || (value < 0 && incr < 0 && incr < minincr)
    {
        Some(false)
    } else {
        None
    }
}

/// The same for unsigned fields (`checkUnsignedBitfieldOverflow`).
fn unsigned_overflow(value: u64, incr: i64, bits: u32) -> Option<bool> {
    let max = (1u64 << bits) - 1;
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = value.wrapping_neg() as i64;
    if value > max || (incr > 0 && incr > maxincr) {
        Some(true)
    } else if incr < 0 && incr < minincr {
        Some(false)
    } else {
        None
    }
}

/// `value + incr` cut to `bits` bits: sign-extended for signed fields.
fn wrapped(value: u64, incr: i64, signed: bool, bits: u32) -> u64 {
    let c = value.wrapping_add(incr as u64);
    if bits == 64 {
        return c;
    }
    let mask = u64::MAX << bits;
    if signed && c & (1u64 << (bits - 1)) != 0 {
        c | mask
    } else {
        c & !mask
    }
}

/// The value an op stores, or None when it overflows under FAIL; and the
/// value it answers. `old` is the field's current value.
fn apply(op: &Op, old: i64) -> Option<(i64, i64)> {
    // SET checks its value alone; INCRBY the current value plus its own.
    let (value, incr) = match op.kind {
        Kind::Incr => (old, op.value),
        _ => (op.value, 0),
    };
    let over = if op.signed {
        signed_overflow(value, incr, op.bits)
    } else {
        unsigned_overflow(value as u64, incr, op.bits)
    };
    let new = match (over, op.overflow) {
        (None, _) => value.wrapping_add(incr),
        (Some(_), Overflow::Wrap) => wrapped(value as u64, incr, op.signed, op.bits) as i64,
        (Some(true), Overflow::Sat) if op.signed => {
            if op.bits == 64 {
                i64::MAX
            } else {
                (1i64 << (op.bits - 1)) - 1
            }
        }
        (Some(true), Overflow::Sat) => ((1u64 << op.bits) - 1) as i64,
        (Some(false), Overflow::Sat) if op.signed => {
            if op.bits == 64 {
                i64::MIN
            } else {
                -(1i64 << (op.bits - 1))
            }
        }
        (Some(false), Overflow::Sat) => 0,
        (Some(_), Overflow::Fail) => return None,
    };
    Some((new, if op.kind == Kind::Set { old } else { new }))
}

/// A field's current value (sign-extended when signed).
fn field(s: &[u8], op: &Op) -> i64 {
    let raw = get_bits(s, op.offset, op.bits);
    if op.signed {
        wrapped(raw, 0, true, op.bits) as i64
    } else {
        raw as i64
    }
}

fn bitfield_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, read_only: bool) {
    let ops = try_reply!(ctx, parse(args));
    let (slot, key) = (ctx.slot(), args.get(1));
    let writes = ops.iter().any(|o| o.kind != Kind::Get);
    if writes && read_only {
        return ctx
            .out
            .error("ERR BITFIELD_RO only supports the GET subcommand");
    }
    match ctx.store.get(slot, key).map(|e| &e.value) {
        None | Some(Value::Str(_)) => {}
        Some(_) => return ctx.out.error(WRONGTYPE),
    }
    if !writes {
        let s: &[u8] = match ctx.store.get(slot, key).map(|e| &e.value) {
            Some(Value::Str(s)) => s,
            _ => &[],
        };
        let values: Vec<i64> = ops.iter().map(|op| field(s, op)).collect();
        ctx.out.array(values.len());
        for v in values {
            ctx.out.int(v);
        }
        return;
    }
    // As Redis: the string grows to the farthest bit any write names, even
    // a write that FAIL then skips.
    let end = ops
        .iter()
        .filter(|o| o.kind != Kind::Get)
        .map(|o| ((o.offset + u64::from(o.bits) - 1) >> 3) as usize + 1)
        .max()
        .unwrap_or(0);
    // Bounded by parse_offset: at most proto-max-bulk-len bytes.
    match ctx.store.get_mut(slot, key).map(|e| &mut e.value) {
        Some(Value::Str(s)) => {
            if s.len() < end {
                let mut v = std::mem::take(s).into_vec();
                v.resize(end, 0);
                *s = v.into_boxed_slice();
            }
        }
        _ => {
            ctx.store
                .set(slot, key, Value::Str(vec![0u8; end].into_boxed_slice()), 0);
        }
    }
    let Some(Value::Str(s)) = ctx.store.get_mut(slot, key).map(|e| &mut e.value) else {
        return ctx.out.error("ERR the string was not created");
    };
    let mut replies: Vec<Option<i64>> = Vec::with_capacity(ops.len());
    for op in &ops {
        let old = field(s, op);
        if op.kind == Kind::Get {
            replies.push(Some(old));
            continue;
        }
        match apply(op, old) {
            Some((new, reply)) => {
                set_bits(s, op.offset, op.bits, new as u64);
                replies.push(Some(reply));
            }
            None => replies.push(None),
        }
    }
    // Replay runs the same operations on the same bytes.
    ctx.propagate(args);
    ctx.out.array(replies.len());
    for r in replies {
        match r {
            Some(v) => ctx.out.int(v),
            None => ctx.out.null(),
        }
    }
}

fn bitfield(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    bitfield_generic(ctx, args, false);
}

fn bitfield_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    bitfield_generic(ctx, args, true);
}
