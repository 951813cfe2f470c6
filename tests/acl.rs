//! ACL users against a real node: a read-only and a read-write application
//! user beside the `default` (requirepass) user.

mod common;

use common::TestNode;

fn node_with_users() -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("requirepass"), "admin-pw\n").unwrap();
    let users = dir.path().join("users");
    std::fs::create_dir(&users).unwrap();
    std::fs::write(users.join("reader"), "reader-pw\n").unwrap();
    std::fs::write(users.join("writer"), "writer-pw").unwrap();
    let n = TestNode::start(&[
        "--requirepass-file",
        dir.path().join("requirepass").to_str().unwrap(),
        "--acl-user",
        "reader on ~* +@read",
        "--acl-user",
        "writer on ~* +@read +@write",
        "--acl-password-dir",
        users.to_str().unwrap(),
    ]);
    (n, dir)
}

fn as_user(n: &TestNode, user: &str, pw: &str) -> redis::Connection {
    let mut c = n.conn();
    let r: String = redis::cmd("AUTH").arg(user).arg(pw).query(&mut c).unwrap();
    assert_eq!(r, "OK");
    c
}

fn err(r: redis::RedisResult<redis::Value>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => format!("{:?} {}", e.kind(), e),
    }
}

#[test]
fn read_only_user_reads_and_gets_noperm_on_writes() {
    let (n, _d) = node_with_users();
    let mut admin = as_user(&n, "default", "admin-pw");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut admin)
        .unwrap();

    let mut ro = as_user(&n, "reader", "reader-pw");
    let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut ro).unwrap();
    assert_eq!(who, "reader");
    let v: String = redis::cmd("GET").arg("k").query(&mut ro).unwrap();
    assert_eq!(v, "v");
    let _: String = redis::cmd("PING").query(&mut ro).unwrap();
    for cmd in [
        &["SET", "k", "x"][..],
        &["DEL", "k"],
        &["FLUSHALL"],
        &["CONFIG", "GET", "maxmemory"],
    ] {
        let e = err(redis::cmd(cmd[0]).arg(&cmd[1..]).query(&mut ro));
        assert!(e.contains("NOPERM"), "{cmd:?}: {e}");
    }
    let e = err(redis::cmd("ACL").arg("LIST").query(&mut ro));
    assert!(e.contains("NOPERM"), "{e}");
    // Nothing changed.
    let v: String = redis::cmd("GET").arg("k").query(&mut admin).unwrap();
    assert_eq!(v, "v");
}

#[test]
fn read_write_user_writes_but_runs_no_admin_command() {
    let (n, _d) = node_with_users();
    let mut rw = as_user(&n, "writer", "writer-pw");
    let _: () = redis::cmd("SET").arg("k").arg("w").query(&mut rw).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut rw).unwrap();
    assert_eq!(v, "w");
    for cmd in [
        &["CONFIG", "GET", "maxmemory"][..],
        &["SHUTDOWN"],
        &["TREPLICATE", "a", "b", "c", "d", "e"],
        &["TMIGRATE", "ABORT", "x"],
        &["TPUBLISH", "news", "forged"],
    ] {
        let e = err(redis::cmd(cmd[0]).arg(&cmd[1..]).query(&mut rw));
        assert!(e.contains("NOPERM"), "{cmd:?}: {e}");
    }
}

#[test]
fn wrong_passwords_and_unknown_users_are_refused() {
    let (n, _d) = node_with_users();
    let mut c = n.conn();
    for (u, p) in [
        ("reader", "writer-pw"),
        ("nobody", "x"),
        ("default", "reader-pw"),
    ] {
        let e = err(redis::cmd("AUTH").arg(u).arg(p).query(&mut c));
        assert!(e.contains("WRONGPASS"), "{u}: {e}");
    }
    let e = err(redis::cmd("GET").arg("k").query(&mut c));
    assert!(e.contains("NOAUTH"), "{e}");
}

#[test]
fn acl_setuser_list_and_deluser_at_run_time() {
    let (n, _d) = node_with_users();
    let mut admin = as_user(&n, "default", "admin-pw");
    let ok: String = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "cache",
            "on",
            ">cache-pw",
            "~cache:*",
            "+@all",
            "-@admin",
        ])
        .query(&mut admin)
        .unwrap();
    assert_eq!(ok, "OK");
    let list: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut admin).unwrap();
    assert_eq!(list.len(), 4, "{list:?}");
    assert!(
        list.iter()
            .any(|l| l.starts_with("user reader on #") && l.ends_with("~* +@read")),
        "{list:?}"
    );
    assert!(
        !list
            .iter()
            .any(|l| l.contains("reader-pw") || l.contains("cache-pw")),
        "{list:?}"
    );
    let mut cache = as_user(&n, "cache", "cache-pw");
    let _: () = redis::cmd("SET")
        .arg("cache:1")
        .arg("x")
        .query(&mut cache)
        .unwrap();
    let e = err(redis::cmd("SET").arg("users:1").arg("x").query(&mut cache));
    assert!(e.contains("NOPERM"), "{e}");
    let removed: i64 = redis::cmd("ACL")
        .arg(&["DELUSER", "cache"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(removed, 1);
    // The deleted user's open connection is refused from then on.
    let e = err(redis::cmd("GET").arg("cache:1").query(&mut cache));
    assert!(e.contains("NOPERM"), "{e}");
    let e = err(redis::cmd("ACL")
        .arg(&["SETUSER", "default", "off"])
        .query(&mut admin));
    assert!(e.contains("default user"), "{e}");
}

#[test]
fn function_load_delete_flush_and_restore_need_write_permission() {
    let (n, _d) = node_with_users();
    let lib = "#!lua name=acl\nredis.register_function{function_name='get', callback=function(k) return redis.call('GET', k[1]) end, flags={'no-writes'}}";
    let mut ro = as_user(&n, "reader", "reader-pw");
    for args in [
        &["FUNCTION", "LOAD", lib][..],
        &["FUNCTION", "DELETE", "acl"],
        &["FUNCTION", "FLUSH"],
    ] {
        let e = err(redis::cmd(args[0]).arg(&args[1..]).query(&mut ro));
        assert!(e.contains("NOPERM"), "{args:?}: {e}");
    }
    let mut rw = as_user(&n, "writer", "writer-pw");
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query(&mut rw)
        .unwrap();
    assert_eq!(name, "acl");
    // Listing, dumping and read-only calls stay open to the reader;
    // FUNCTION RESTORE is a write.
    let libs: Vec<redis::Value> = redis::cmd("FUNCTION").arg("LIST").query(&mut ro).unwrap();
    assert_eq!(libs.len(), 1);
    let dump: Vec<u8> = redis::cmd("FUNCTION").arg("DUMP").query(&mut ro).unwrap();
    let e = err(redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&dump)
        .arg("REPLACE")
        .query(&mut ro));
    assert!(e.contains("NOPERM"), "FUNCTION RESTORE by the reader: {e}");
    let _: () = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&dump)
        .arg("REPLACE")
        .query(&mut rw)
        .unwrap();
    let v: Option<String> = redis::cmd("FCALL_RO")
        .arg("get")
        .arg(1)
        .arg("k")
        .query(&mut ro)
        .unwrap();
    assert_eq!(v, None);
    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut rw).unwrap();
}
