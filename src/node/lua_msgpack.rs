//! The `cmsgpack` library Redis gives scripts (lua_cmsgpack): `pack`,
//! `unpack`, `unpack_one`, `unpack_limit`, with Redis' choices of encoding
//! so that packed bytes are the ones redis-server would produce:
//!
//! - a table whose keys are exactly 1..n is an array (an empty table too),
//!   any other table a map, in `next` order; tables nested deeper than 16
//!   levels, functions and other values pack as nil;
//! - a number that is a whole 64-bit integer packs as the smallest integer
//!   form, any other as a 32-bit float when that loses nothing, else a
//!   64-bit float;
//! - strings pack as `str` (fixstr/str8/str16/str32).
//!
//! Unpacking gives Lua numbers for every integer and float (a uint64 is
//! read as an int64, as lua_cmsgpack does), strings for `str`, tables for
//! arrays (1..n, nil elements leave holes) and maps; `bin`, extension
//! types and the reserved byte are bad input, as in Redis.

use mlua::{Lua, MultiValue, Table, Value};
use rmp::Marker;

/// Tables deeper than this pack as nil (LUACMSGPACK_MAX_NESTING).
const MAX_NESTING: usize = 16;
/// Deepest nesting unpacked; deeper input is refused as bad data instead
/// of exhausting the native stack.
const MAX_UNPACK_DEPTH: usize = 1000;

pub fn install(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    // The arguments reach Rust through a table: mlua reads a Lua 5.1
    // number within f64::EPSILON of an integer as that integer, and only a
    // value read from a table can be read again exactly (see `exact`).
    let pack_args = lua.create_function(|lua, (n, args): (usize, Table)| {
        if n == 0 {
            return Err(script_error(
                lua,
                "bad argument #0 to 'pack' (MessagePack pack needs input.)",
            ));
        }
        let mut buf = Vec::new();
        for i in 1..=n {
            let v = exact(&args, i, args.raw_get::<Value>(i)?);
            encode(&mut buf, &v, 0)?;
        }
        lua.create_string(&buf)
    })?;
    lua.set_named_registry_value(PACK_ARGS, pack_args)?;
    // SAFETY: `pack_entry` only moves values on the Lua stack (after
    // checking its size) and calls a Lua function; it holds nothing that
    // needs dropping if that call raises an error.
    let pack = unsafe { lua.create_c_function(pack_entry) }?;
    m.raw_set("pack", pack)?;
    m.raw_set(
        "unpack",
        lua.create_function(|lua, s: mlua::String| unpack(lua, &s.as_bytes(), 0, 0))?,
    )?;
    m.raw_set(
        "unpack_one",
        lua.create_function(|lua, (s, offset): (mlua::String, Option<i64>)| {
            unpack(lua, &s.as_bytes(), 1, offset.unwrap_or(0))
        })?,
    )?;
    m.raw_set(
        "unpack_limit",
        lua.create_function(
            |lua, (s, limit, offset): (mlua::String, i64, Option<i64>)| {
                unpack(lua, &s.as_bytes(), limit, offset.unwrap_or(0))
            },
        )?,
    )?;
    lua.globals().raw_set("cmsgpack", m)
}

/// Where the Rust half of `pack` is kept in the registry.
const PACK_ARGS: &str = "tessera.cmsgpack.pack_args";
const PACK_ARGS_C: &std::ffi::CStr = c"tessera.cmsgpack.pack_args";

/// `cmsgpack.pack(...)`: calls the Rust half with the argument count and
/// a table of the arguments. A C function (not a Lua wrapper), so that a
/// script's `return cmsgpack.pack(...)` keeps the script's frame for the
/// error position, as a tail call to a C function does in Lua 5.1.
unsafe extern "C-unwind" fn pack_entry(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    let n = ffi::lua_gettop(state);
    ffi::luaL_checkstack(state, 4, c"cmsgpack.pack".as_ptr());
    ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, PACK_ARGS_C.as_ptr());
    ffi::lua_pushinteger(state, n as ffi::lua_Integer);
    ffi::lua_createtable(state, n, 0);
    for i in 1..=n {
        ffi::lua_pushvalue(state, i);
        ffi::lua_rawseti(state, -2, i as ffi::lua_Integer);
    }
    ffi::lua_call(state, 2, 1);
    1
}

fn io_err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(format!("cmsgpack: {e}"))
}

/// `v` read from `t[key]` again as a float when mlua may have rounded it
/// to an integer (it does so for any Lua 5.1 number within f64::EPSILON of
/// one, e.g. 1e-300 or 1 - 2^-53); a float read is exact.
fn exact<K: mlua::IntoLua>(t: &Table, key: K, v: Value) -> Value {
    match v {
        Value::Integer(i) if i.unsigned_abs() <= 1 => t
            .raw_get::<f64>(key)
            .map_or(Value::Integer(i), Value::Number),
        v => v,
    }
}

/// Whether `n` is a whole number a C cast to int64 keeps exactly
/// (IS_INT64_EQUIVALENT).
fn as_int64(n: f64) -> Option<i64> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    (n.is_finite() && n.trunc() == n && (-TWO_63..TWO_63).contains(&n)).then_some(n as i64)
}

fn encode_number(buf: &mut Vec<u8>, n: f64) -> mlua::Result<()> {
    if let Some(i) = as_int64(n) {
        rmp::encode::write_sint(buf, i).map_err(io_err)?;
    } else if (n as f32) as f64 == n {
        rmp::encode::write_f32(buf, n as f32).map_err(io_err)?;
    } else {
        rmp::encode::write_f64(buf, n).map_err(io_err)?;
    }
    Ok(())
}

fn encode(buf: &mut Vec<u8>, v: &Value, level: usize) -> mlua::Result<()> {
    match v {
        Value::String(s) => {
            let b = s.as_bytes();
            let len = u32::try_from(b.len()).map_err(io_err)?;
            rmp::encode::write_str_len(buf, len).map_err(io_err)?;
            buf.extend_from_slice(&b);
        }
        Value::Boolean(b) => rmp::encode::write_bool(buf, *b).map_err(io_err)?,
        Value::Integer(i) => encode_number(buf, *i as f64)?,
        Value::Number(n) => encode_number(buf, *n)?,
        Value::Table(t) if level < MAX_NESTING => encode_table(buf, t, level)?,
        _ => rmp::encode::write_nil(buf).map_err(io_err)?,
    }
    Ok(())
}

/// A positive whole key (as table_is_an_array counts them), or None.
fn array_key(k: &Value) -> Option<f64> {
    let n = match k {
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        _ => return None,
    };
    (n > 0.0 && n.trunc() == n && n <= i32::MAX as f64).then_some(n)
}

/// Tables are walked with `for_each`, never collected: every value held
/// from Lua takes a slot of mlua's reference stack, which a table of
/// many thousand keys would exhaust.
fn encode_table(buf: &mut Vec<u8>, t: &Table, level: usize) -> mlua::Result<()> {
    // lua_cmsgpack's table_is_an_array: every key a positive whole number
    // and the largest equal to the count.
    let (mut count, mut max, mut array) = (0usize, 0f64, true);
    t.for_each(|k: Value, _: Value| {
        count += 1;
        match array_key(&k) {
            Some(n) => max = max.max(n),
            None => array = false,
        }
        Ok(())
    })?;
    let len = u32::try_from(count).map_err(io_err)?;
    if array && max == count as f64 {
        rmp::encode::write_array_len(buf, len).map_err(io_err)?;
        for i in 1..=count {
            encode(buf, &exact(t, i, t.raw_get::<Value>(i)?), level + 1)?;
        }
    } else {
        rmp::encode::write_map_len(buf, len).map_err(io_err)?;
        t.for_each(|k: Value, v: Value| {
            // A key mlua rounded cannot be read back (documented).
            let v = match &k {
                Value::Integer(i) if i.unsigned_abs() <= 1 => v,
                _ => exact(t, k.clone(), v),
            };
            encode(buf, &k, level + 1)?;
            encode(buf, &v, level + 1)
        })?;
    }
    Ok(())
}

/// Why decoding stopped, with Redis' messages.
#[derive(Debug, PartialEq)]
enum DecodeError {
    Missing,
    BadFormat,
}

/// An error raised as lua_cmsgpack's `luaL_error` is: prefixed with the
/// calling script line (`user_script:<n>: `), found on the Lua stack.
fn script_error(lua: &Lua, msg: &str) -> mlua::Error {
    let at = (0..64)
        .map_while(|level| lua.inspect_stack(level))
        .find_map(|d| {
            let src = d.source().source.map(|s| s.into_owned());
            super::lua::is_user_source(src.as_deref()).then(|| (src, d.curr_line()))
        });
    match at {
        Some((Some(src), n)) => mlua::Error::runtime(format!("{}:{n}: {msg}", &src[1..])),
        _ => mlua::Error::runtime(msg),
    }
}

impl DecodeError {
    fn message(&self) -> &'static str {
        match self {
            DecodeError::Missing => "Missing bytes in input.",
            DecodeError::BadFormat => "Bad data format in input.",
        }
    }
}

/// A read position in the packed bytes.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Missing)?;
        let s = self.data.get(self.pos..end).ok_or(DecodeError::Missing)?;
        self.pos = end;
        Ok(s)
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.be::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.be()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.be()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.be()?))
    }

    fn left(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// One value, or why there is none; Lua errors (memory) pass through.
fn decode(lua: &Lua, c: &mut Cursor, depth: usize) -> Result<Value, mlua::Error> {
    let bad = |e: DecodeError| script_error(lua, e.message());
    if depth > MAX_UNPACK_DEPTH {
        return Err(bad(DecodeError::BadFormat));
    }
    let num = |n: f64| Ok(Value::Number(n));
    let marker = Marker::from_u8(c.u8().map_err(bad)?);
    match marker {
        Marker::FixPos(n) => num(n as f64),
        Marker::FixNeg(n) => num(n as f64),
        Marker::U8 => num(c.u8().map_err(bad)? as f64),
        Marker::U16 => num(c.u16().map_err(bad)? as f64),
        Marker::U32 => num(c.u32().map_err(bad)? as f64),
        // lua_cmsgpack reads a uint64 as an int64 (2^64-1 is -1).
        Marker::U64 => num(c.u64().map_err(bad)? as i64 as f64),
        Marker::I8 => num(c.u8().map_err(bad)? as i8 as f64),
        Marker::I16 => num(c.u16().map_err(bad)? as i16 as f64),
        Marker::I32 => num(c.u32().map_err(bad)? as i32 as f64),
        Marker::I64 => num(c.u64().map_err(bad)? as i64 as f64),
        Marker::F32 => num(f32::from_bits(c.u32().map_err(bad)?) as f64),
        Marker::F64 => num(f64::from_bits(c.u64().map_err(bad)?)),
        Marker::Null => Ok(Value::Nil),
        Marker::True => Ok(Value::Boolean(true)),
        Marker::False => Ok(Value::Boolean(false)),
        Marker::FixStr(n) => bytes(lua, c, n as usize),
        Marker::Str8 => {
            let n = c.u8().map_err(bad)? as usize;
            bytes(lua, c, n)
        }
        Marker::Str16 => {
            let n = c.u16().map_err(bad)? as usize;
            bytes(lua, c, n)
        }
        Marker::Str32 => {
            let n = c.u32().map_err(bad)? as usize;
            bytes(lua, c, n)
        }
        Marker::FixArray(n) => array(lua, c, n as usize, depth),
        Marker::Array16 => {
            let n = c.u16().map_err(bad)? as usize;
            array(lua, c, n, depth)
        }
        Marker::Array32 => {
            let n = c.u32().map_err(bad)? as usize;
            array(lua, c, n, depth)
        }
        Marker::FixMap(n) => map(lua, c, n as usize, depth),
        Marker::Map16 => {
            let n = c.u16().map_err(bad)? as usize;
            map(lua, c, n, depth)
        }
        Marker::Map32 => {
            let n = c.u32().map_err(bad)? as usize;
            map(lua, c, n, depth)
        }
        // bin, ext and the reserved byte: lua_cmsgpack reads none of them.
        _ => Err(bad(DecodeError::BadFormat)),
    }
}

fn bytes(lua: &Lua, c: &mut Cursor, n: usize) -> mlua::Result<Value> {
    let s = c.take(n).map_err(|e| script_error(lua, e.message()))?;
    Ok(Value::String(lua.create_string(s)?))
}

fn array(lua: &Lua, c: &mut Cursor, n: usize, depth: usize) -> mlua::Result<Value> {
    // Every element takes at least one byte: a length past the input is
    // missing bytes, found before allocating for it.
    if n > c.left() {
        return Err(script_error(lua, DecodeError::Missing.message()));
    }
    let t = lua.create_table_with_capacity(n, 0)?;
    for i in 1..=n {
        let v = decode(lua, c, depth + 1)?;
        t.raw_set(i, v)?;
    }
    Ok(Value::Table(t))
}

fn map(lua: &Lua, c: &mut Cursor, n: usize, depth: usize) -> mlua::Result<Value> {
    if n > c.left() / 2 {
        return Err(script_error(lua, DecodeError::Missing.message()));
    }
    let t = lua.create_table_with_capacity(0, n)?;
    for _ in 0..n {
        let k = decode(lua, c, depth + 1)?;
        let v = decode(lua, c, depth + 1)?;
        if k.is_nil() {
            // Raised by lua_settable, without a position.
            return Err(mlua::Error::runtime("table index is nil"));
        }
        t.raw_set(k, v)?;
    }
    Ok(Value::Table(t))
}

/// mp_unpack_full: `limit` 0 and `offset` 0 decode everything and return
/// the values; otherwise at most `limit` values from `offset`, preceded by
/// the offset to continue from (-1 at the end).
fn unpack(lua: &Lua, s: &[u8], limit: i64, offset: i64) -> mlua::Result<MultiValue> {
    let decode_all = limit == 0 && offset == 0;
    if offset < 0 || limit < 0 {
        return Err(script_error(
            lua,
            &format!(
                "Invalid request to unpack with offset of {offset} and limit of {}.",
                // lua_cmsgpack prints the input's length as the limit.
                s.len()
            ),
        ));
    }
    if offset as u64 > s.len() as u64 {
        return Err(script_error(
            lua,
            &format!(
                "Start offset {offset} greater than input length {}.",
                s.len()
            ),
        ));
    }
    let limit = if decode_all { i64::MAX } else { limit };
    let mut c = Cursor {
        data: s,
        pos: offset as usize,
    };
    let mut out = Vec::new();
    while c.left() > 0 && (out.len() as i64) < limit {
        out.push(decode(lua, &mut c, 0)?);
    }
    if !decode_all {
        let next = if c.left() == 0 { -1 } else { c.pos as i64 };
        out.insert(0, Value::Integer(next));
    }
    Ok(MultiValue::from_iter(out))
}

#[cfg(test)]
mod tests {
    use mlua::{Lua, LuaOptions, StdLib};

    fn lua() -> Lua {
        let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING, LuaOptions::default())
            .expect("a Lua state");
        super::install(&lua).expect("cmsgpack installs");
        lua
    }

    fn pack(lua: &Lua, expr: &str) -> Vec<u8> {
        let s: mlua::String = lua
            .load(format!("return cmsgpack.pack({expr})"))
            .eval()
            .expect("pack runs");
        s.as_bytes().to_vec()
    }

    #[test]
    fn integers_take_the_smallest_form_redis_picks() {
        let l = lua();
        assert_eq!(pack(&l, "1"), [0x01]);
        assert_eq!(pack(&l, "-1"), [0xff]);
        assert_eq!(pack(&l, "-33"), [0xd0, 0xdf]);
        assert_eq!(pack(&l, "200"), [0xcc, 200]);
        assert_eq!(pack(&l, "65536"), [0xce, 0, 1, 0, 0]);
        assert_eq!(pack(&l, "2^40")[0], 0xcf);
        assert_eq!(pack(&l, "-2^40")[0], 0xd3);
    }

    #[test]
    fn fractions_are_floats_and_singles_when_exact() {
        let l = lua();
        assert_eq!(pack(&l, "1.5"), [0xca, 0x3f, 0xc0, 0, 0]);
        assert_eq!(pack(&l, "0.1")[0], 0xcb);
        assert_eq!(pack(&l, "2^63")[0], 0xca, "2^63 does not fit int64");
        assert_eq!(pack(&l, "-2^63")[0], 0xd3, "-2^63 does");
    }

    #[test]
    fn tables_are_arrays_only_with_keys_one_to_n() {
        let l = lua();
        assert_eq!(pack(&l, "{}"), [0x90]);
        assert_eq!(pack(&l, "{1,2}"), [0x92, 1, 2]);
        assert_eq!(pack(&l, "{[1]=1,[3]=3}")[0], 0x82, "a hole makes a map");
        assert_eq!(pack(&l, "{a=1}"), [0x81, 0xa1, b'a', 1]);
        assert_eq!(pack(&l, "'x', true, nil"), [0xa1, b'x', 0xc3, 0xc0]);
    }

    #[test]
    fn nesting_past_sixteen_packs_as_nil() {
        let l = lua();
        let b = pack(
            &l,
            "(function() local t = {} for i=1,20 do t = {t} end return t end)()",
        );
        assert_eq!(b[..16], [0x91; 16]);
        assert_eq!(b[16], 0xc0);
        assert_eq!(b.len(), 17);
    }

    #[test]
    fn unpack_round_trips_nested_values() {
        let l = lua();
        let ok: bool = l
            .load(
                r#"
                local v = {1, -2, 3.25, "s", {a = {true, false}, b = "x"}, {}}
                local a, b = cmsgpack.unpack(cmsgpack.pack(v, 7))
                return b == 7 and a[1] == 1 and a[2] == -2 and a[3] == 3.25
                  and a[4] == "s" and a[5].a[1] == true and a[5].a[2] == false
                  and a[5].b == "x" and next(a[6]) == nil
                "#,
            )
            .eval()
            .expect("round trip runs");
        assert!(ok);
    }

    #[test]
    fn unpack_one_and_limit_return_the_next_offset() {
        let l = lua();
        let (o1, v1, o2, v2): (i64, i64, i64, i64) = l
            .load(
                r#"
                local s = cmsgpack.pack(1, 2)
                local o1, v1 = cmsgpack.unpack_one(s)
                local o2, v2 = cmsgpack.unpack_limit(s, 1, o1)
                return o1, v1, o2, v2
                "#,
            )
            .eval()
            .expect("runs");
        assert_eq!((o1, v1, o2, v2), (1, 1, -1, 2));
    }

    #[test]
    fn truncated_and_malformed_input_get_redis_errors() {
        let l = lua();
        let err = |src: &str| l.load(src).exec().expect_err("must fail").to_string();
        assert!(err(r#"cmsgpack.unpack("\146\1")"#).contains("Missing bytes in input."));
        assert!(err(r#"cmsgpack.unpack("\193")"#).contains("Bad data format in input."));
        assert!(err(r#"cmsgpack.unpack("\221\255\255\255\255")"#).contains("Missing bytes"));
        assert!(err(r#"cmsgpack.unpack("\212\1\1")"#).contains("Bad data format"));
    }
}
