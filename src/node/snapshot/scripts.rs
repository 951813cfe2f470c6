//! The scripts section of a snapshot (format version 2): the loaded
//! scripts and function libraries (`node::script_registry`).

use super::{put_bytes, put_u64, Cursor};
use crate::node::script_registry::ScriptRegistry;

/// Appends the framed scripts section: the loaded scripts and function
/// libraries that reached the log (`node::script_registry`).
pub(super) fn encode_scripts(b: &mut Vec<u8>, reg: &ScriptRegistry) {
    let start = b.len();
    b.extend_from_slice(&[0u8; 8]);
    let scripts: Vec<&[u8]> = reg.logged_scripts().collect();
    put_u64(b, scripts.len() as u64);
    for body in scripts {
        put_bytes(b, body);
    }
    let libs: Vec<&[u8]> = reg.libraries().map(|(_, code)| code).collect();
    put_u64(b, libs.len() as u64);
    for code in libs {
        put_bytes(b, code);
    }
    let body = &b[start + 8..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    b[start..start + 4].copy_from_slice(&len.to_le_bytes());
    b[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a scripts section's body (CRC checked) into `reg`; the offset in
/// the body where decoding failed and why.
pub(super) fn load_scripts(body: &[u8], reg: &mut ScriptRegistry) -> Result<(), (usize, String)> {
    let mut c = Cursor { b: body, at: 0 };
    let res = (|| {
        for _ in 0..c.count(4)? {
            let script = c.bytes()?;
            reg.add_script(crate::node::lua::sha1_hex(&script), &script, true);
        }
        for _ in 0..c.count(4)? {
            let code = c.bytes()?;
            let name = crate::node::script_registry::library_name(&code)
                .map_err(|e| format!("a function library without a valid name: {e}"))?;
            reg.set_library(name, &code);
        }
        if c.at != body.len() {
            return Err(format!(
                "{} trailing bytes in the scripts section",
                body.len() - c.at
            ));
        }
        Ok(())
    })();
    res.map_err(|reason| (c.at, reason))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{encode_all, encode_all_version, sample};
    use super::super::*;

    #[test]
    fn scripts_and_libraries_round_trip_and_a_version_1_file_loads_without_them() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut st = sample();
        let body: &[u8] = b"return redis.call('GET', KEYS[1])";
        let sha = crate::node::lua::sha1_hex(body);
        st.scripts.add_script(sha.clone(), body, true);
        // Loaded on a replica by its own client: not in the snapshot.
        st.scripts.add_script("local".into(), b"return 2", false);
        let code: &[u8] = b"#!lua name=lib1\nredis.register_function('f', function() return 1 end)";
        st.scripts.set_library("lib1".into(), code);
        let path = tmp.path().join(snapshot_name(20000));
        std::fs::write(&path, encode_all(&st, |s| 100 + s as u64)).expect("write");
        let mut loaded = Store::new();
        load_file(&path, &mut loaded).expect("valid");
        let e = loaded.scripts.script(&sha).expect("the script is loaded");
        assert_eq!((&*e.body, e.logged), (body, true));
        assert!(loaded.scripts.script("local").is_none());
        assert_eq!(loaded.scripts.script_count(), 1);
        assert_eq!(loaded.scripts.library("lib1"), Some(code));

        let old = tmp.path().join(snapshot_name(30000));
        std::fs::write(&old, encode_all_version(&st, |s| 100 + s as u64, 1)).expect("write");
        let mut loaded = Store::new();
        let l = load_file(&old, &mut loaded).expect("a version 1 file is valid");
        assert_eq!((l.info.keys, loaded.len()), (7, 7));
        assert_eq!(loaded.scripts.script_count(), 0);
    }

    #[test]
    fn a_flipped_bit_in_the_scripts_section_is_corruption() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut st = Store::new();
        st.scripts.add_script("x".into(), b"return 1", true);
        let mut b = encode_all(&st, |_| 1);
        // The scripts section's last byte: the body's last byte.
        let at = b.len() - FOOTER_LEN - 1;
        b[at] ^= 1;
        let path = tmp.path().join(snapshot_name(1));
        std::fs::write(&path, &b).expect("write");
        match load_file(&path, &mut Store::new()) {
            Err(SnapshotError::Corrupt { reason, .. }) => {
                assert!(reason.contains("scripts section"), "{reason}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a corrupt scripts section loads"),
        }
    }
}
