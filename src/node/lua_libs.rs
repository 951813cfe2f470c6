//! The libraries Redis gives scripts besides Lua's own: `bit` (LuaBitOp:
//! 32-bit operations on numbers), `cjson`, and `cmsgpack` (in
//! `lua_msgpack`).
//!
//! `cjson.encode` / `cjson.decode`, over serde_json: tables with
//! keys 1..n are arrays, other tables objects (an empty table is `{}`, as
//! cjson encodes it); numbers print as Lua prints them; JSON `null` decodes
//! to `nil` (cjson's `cjson.null` sentinel is not provided).

use mlua::{Lua, Table, Value};
use serde_json::Value as Json;

/// Deepest nesting encoded (cjson's default limit is 1000).
const MAX_DEPTH: usize = 1000;

pub fn install(lua: &Lua) -> mlua::Result<()> {
    install_bit(lua)?;
    super::lua_msgpack::install(lua)?;
    let cjson = lua.create_table()?;
    cjson.raw_set(
        "encode",
        lua.create_function(|_, v: Value| {
            let j = to_json(&v, 0)?;
            serde_json::to_string(&j).map_err(mlua::Error::external)
        })?,
    )?;
    cjson.raw_set(
        "decode",
        lua.create_function(|lua, s: mlua::String| {
            let j: Json = serde_json::from_slice(&s.as_bytes()).map_err(|e| {
                mlua::Error::runtime(format!("Expected value but found invalid token: {e}"))
            })?;
            from_json(lua, &j)
        })?,
    )?;
    lua.globals().raw_set("cjson", cjson)
}

fn number(n: f64) -> Json {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        Json::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

fn to_json(v: &Value, depth: usize) -> mlua::Result<Json> {
    if depth > MAX_DEPTH {
        return Err(mlua::Error::runtime(
            "Cannot serialise, excessive nesting (1001)",
        ));
    }
    Ok(match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::from(*i),
        Value::Number(n) => number(*n),
        Value::String(s) => Json::String(s.to_string_lossy()),
        Value::Table(t) => table_to_json(t, depth)?,
        other => {
            return Err(mlua::Error::runtime(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            )))
        }
    })
}

fn table_to_json(t: &Table, depth: usize) -> mlua::Result<Json> {
    let n = t.raw_len();
    let pairs: Vec<(Value, Value)> = t.pairs::<Value, Value>().collect::<mlua::Result<_>>()?;
    if n > 0 && pairs.len() == n {
        let mut a = Vec::with_capacity(n);
        for i in 1..=n {
            a.push(to_json(&t.raw_get::<Value>(i)?, depth + 1)?);
        }
        return Ok(Json::Array(a));
    }
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        let key = match &k {
            Value::String(s) => s.to_string_lossy(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => super::lua::fmt_number(*n),
            _ => {
                return Err(mlua::Error::runtime(
                    "Cannot serialise table: table key must be a number or string",
                ))
            }
        };
        m.insert(key, to_json(&v, depth + 1)?);
    }
    Ok(Json::Object(m))
}

fn from_json(lua: &Lua, j: &Json) -> mlua::Result<Value> {
    Ok(match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(a) => {
            let t = lua.create_table_with_capacity(a.len(), 0)?;
            for (i, v) in a.iter().enumerate() {
                t.raw_set(i + 1, from_json(lua, v)?)?;
            }
            Value::Table(t)
        }
        Json::Object(m) => {
            let t = lua.create_table_with_capacity(0, m.len())?;
            for (k, v) in m {
                t.raw_set(k.as_str(), from_json(lua, v)?)?;
            }
            Value::Table(t)
        }
    })
}

/// LuaBitOp's normalisation of a number to a signed 32-bit integer.
fn tobit(n: f64) -> i32 {
    // Modulo 2^32, as LuaBitOp's add-2^52 trick does for any finite number.
    let m = n.trunc().rem_euclid(4_294_967_296.0);
    (m as u64 as u32) as i32
}

fn install_bit(lua: &Lua) -> mlua::Result<()> {
    let bit = lua.create_table()?;
    bit.raw_set("tobit", lua.create_function(|_, n: f64| Ok(tobit(n)))?)?;
    bit.raw_set("bnot", lua.create_function(|_, n: f64| Ok(!tobit(n)))?)?;
    let fold = |lua: &Lua, f: fn(i32, i32) -> i32| {
        lua.create_function(move |_, (a, rest): (f64, mlua::Variadic<f64>)| {
            Ok(rest.iter().fold(tobit(a), |acc, &x| f(acc, tobit(x))))
        })
    };
    bit.raw_set("band", fold(lua, |a, b| a & b)?)?;
    bit.raw_set("bor", fold(lua, |a, b| a | b)?)?;
    bit.raw_set("bxor", fold(lua, |a, b| a ^ b)?)?;
    let shift = |lua: &Lua, f: fn(i32, u32) -> i32| {
        lua.create_function(move |_, (a, n): (f64, f64)| Ok(f(tobit(a), (tobit(n) & 31) as u32)))
    };
    bit.raw_set("lshift", shift(lua, |a, n| ((a as u32) << n) as i32)?)?;
    bit.raw_set("rshift", shift(lua, |a, n| ((a as u32) >> n) as i32)?)?;
    bit.raw_set("arshift", shift(lua, |a, n| a >> n)?)?;
    bit.raw_set("rol", shift(lua, |a, n| (a as u32).rotate_left(n) as i32)?)?;
    bit.raw_set("ror", shift(lua, |a, n| (a as u32).rotate_right(n) as i32)?)?;
    bit.raw_set(
        "bswap",
        lua.create_function(|_, a: f64| Ok((tobit(a) as u32).swap_bytes() as i32))?,
    )?;
    bit.raw_set(
        "tohex",
        lua.create_function(|_, (a, n): (f64, Option<f64>)| {
            let n = n.map_or(8, tobit);
            let (upper, width) = (n < 0, n.unsigned_abs().min(8) as usize);
            let v = tobit(a) as u32;
            let s = if upper {
                format!("{v:08X}")
            } else {
                format!("{v:08x}")
            };
            Ok(s[8 - width..].to_string())
        })?,
    )?;
    lua.globals().raw_set("bit", bit)
}

#[cfg(test)]
mod tests {
    use super::tobit;

    #[test]
    fn tobit_wraps_modulo_two_to_the_32() {
        assert_eq!(tobit(4_294_967_295.0), -1);
        assert_eq!(tobit(4_294_967_296.0), 0);
        assert_eq!(tobit(-1.0), -1);
        assert_eq!(tobit(2_147_483_648.0), i32::MIN);
        assert_eq!(tobit(7.9), 7);
    }
}
