//! The scripts' `cmsgpack` library compared with redis-server's: packed
//! bytes identical for random nested values, unpacked values identical
//! (printed by a Lua serialiser with sorted keys), the same errors for
//! truncated and malformed input.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::differential::Pair;

/// Prints a value with its type, map keys sorted, so the comparison does
/// not depend on table traversal order.
const SHOW: &str = r#"
local function show(v)
  if type(v) ~= 'table' then return type(v) .. ':' .. tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return type(a) .. tostring(a) < type(b) .. tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = show(k) .. '=' .. show(v[k]) end
  return '{' .. table.concat(parts, ',') .. '}'
end
local function showall(...)
  local out = {}
  for i = 1, select('#', ...) do out[#out + 1] = show((select(i, ...))) end
  return table.concat(out, ' ')
end
"#;

/// A random Lua expression for a value, tables nested up to `depth`.
fn value(rng: &mut StdRng, depth: usize) -> String {
    let ints = [
        "0",
        "1",
        "127",
        "128",
        "255",
        "256",
        "65535",
        "65536",
        "4294967295",
        "4294967296",
        "-1",
        "-32",
        "-33",
        "-128",
        "-129",
        "-32768",
        "-32769",
        "-2147483648",
        "-2147483649",
        "2^53",
        "-2^53",
        "2^63",
        "-2^63",
        "2^64",
    ];
    let floats = [
        "0.5", "-1.25", "0.1", "1e300", "-1e-300", "3.4e38", "1/0", "-1/0", "1e20",
    ];
    match rng.gen_range(0..if depth == 0 { 6 } else { 8 }) {
        0 => ints[rng.gen_range(0..ints.len())].to_string(),
        1 => floats[rng.gen_range(0..floats.len())].to_string(),
        2 => format!("{}", rng.gen_range(-100_000i64..100_000) as f64 / 8.0),
        3 => {
            let len = [0usize, 1, 31, 32, 255, 256, 65535, 65536][rng.gen_range(0..8)];
            format!("string.rep('x', {len})")
        }
        4 => ["true", "false"][rng.gen_range(0..2)].to_string(),
        5 => format!("'s{}'", rng.gen_range(0..1000)),
        6 => {
            let n = [0usize, 1, 3, 15, 16][rng.gen_range(0..5)];
            let items: Vec<String> = (0..n).map(|_| value(rng, depth - 1)).collect();
            format!("{{{}}}", items.join(","))
        }
        _ => {
            // One key: the key order of a map cannot differ.
            let k = match rng.gen_range(0..3) {
                0 => format!("k{}", rng.gen_range(0..10)),
                1 => "[0.5]".to_string(),
                _ => "[7]".to_string(),
            };
            let k = if k.starts_with('[') {
                k
            } else {
                format!("['{k}']")
            };
            format!("{{{k}={}}}", value(rng, depth - 1))
        }
    }
}

#[test]
fn cmsgpack_pack_and_unpack_match_redis() {
    let mut p = Pair::start();
    let mut rng = StdRng::seed_from_u64(22);
    for _ in 0..300 {
        let n = rng.gen_range(1..4);
        let args: Vec<String> = (0..n).map(|_| value(&mut rng, 3)).collect();
        let args = args.join(", ");
        p.same(&["EVAL", &format!("return cmsgpack.pack({args})"), "0"]);
        p.same(&[
            "EVAL",
            &format!("{SHOW} return showall(cmsgpack.unpack(cmsgpack.pack({args})))"),
            "0",
        ]);
    }
    p.script(&[
        // Shapes: holes make maps, 16 levels of nesting and no more, big
        // arrays and maps take the 16- and 32-bit length forms.
        &["EVAL", "return cmsgpack.pack({1,nil,3})", "0"],
        &["EVAL", "return cmsgpack.pack({[1]=1,[3]=3})", "0"],
        &["EVAL", "return cmsgpack.pack({[1.5]=1})", "0"],
        &["EVAL", "return cmsgpack.pack({[-1]=1})", "0"],
        &[
            "EVAL",
            "local t = {} for i=1,20 do t = {t} end return cmsgpack.pack(t)",
            "0",
        ],
        &[
            "EVAL",
            "local t = {} for i=1,65536 do t[i]=i end return #cmsgpack.pack(t)",
            "0",
        ],
        &[
            "EVAL",
            "local t = {} for i=1,70000 do t['k'..i]=1 end return #cmsgpack.pack(t)",
            "0",
        ],
        &["EVAL", "return cmsgpack.pack(print)", "0"],
        &[
            "EVAL",
            "return cmsgpack.pack(0/0) == cmsgpack.pack(0/0)",
            "0",
        ],
        // Offsets and limits.
        &[
            "EVAL",
            &format!("{SHOW} return showall(cmsgpack.unpack_one(cmsgpack.pack(1, 'a', {{2}})))"),
            "0",
        ],
        &[
            "EVAL",
            &format!("{SHOW} return showall(cmsgpack.unpack_one(cmsgpack.pack(1, 'a', {{2}}), 1))"),
            "0",
        ],
        &[
            "EVAL",
            &format!(
                "{SHOW} return showall(cmsgpack.unpack_limit(cmsgpack.pack(1, 'a', {{2}}), 2))"
            ),
            "0",
        ],
        &[
            "EVAL",
            &format!(
                "{SHOW} return showall(cmsgpack.unpack_limit(cmsgpack.pack(1, 'a', {{2}}), 5, 1))"
            ),
            "0",
        ],
        // Forms pack never writes but unpack reads: str8, u64 (read as an
        // int64), i64, float 32, nil elements, a map16.
        &[
            "EVAL",
            &format!(
                "{SHOW} return showall(cmsgpack.unpack(string.char(0xd9,1,67, \
                 0xcf,255,255,255,255,255,255,255,255, 0xd3,128,0,0,0,0,0,0,0, \
                 0xca,0x3f,0xc0,0,0, 0x93,1,0xc0,3, 0xde,0,1,0xa1,97,0xc2)))"
            ),
            "0",
        ],
        // Bad input.
        &["EVAL", "return cmsgpack.unpack(string.char(0x92, 1))", "0"],
        &["EVAL", "return cmsgpack.unpack(string.char(0xc1))", "0"],
        &[
            "EVAL",
            "return cmsgpack.unpack(string.char(0xc4, 1, 65))",
            "0",
        ],
        &[
            "EVAL",
            "return cmsgpack.unpack(string.char(0x81, 0xc0, 1))",
            "0",
        ],
        &[
            "EVAL",
            "return cmsgpack.unpack(string.char(0xd4, 1, 1))",
            "0",
        ],
        &[
            "EVAL",
            "return cmsgpack.unpack(string.char(0xda, 0, 9, 65))",
            "0",
        ],
        &["EVAL", "return cmsgpack.unpack_one('\\1', 5)", "0"],
        &["EVAL", "return cmsgpack.unpack_limit('\\1', -1)", "0"],
        &["EVAL", "return cmsgpack.pack()", "0"],
    ]);
}
