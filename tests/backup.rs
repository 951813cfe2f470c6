//! Backups with real nodes: `tessera backup run|archive|list|verify|prune|
//! restore` against a directory target (a PVC's stand-in) and a real
//! S3-compatible server (versitygw, scripts/s3-server.sh), then nodes
//! started on the restored data directories.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::{http, TestNode};
use redis::Commands;
use serde_json::{json, Value};
use sha2::Digest;

fn small_segments() {
    // 64 KiB segments: every test spans several (set before any node starts;
    // every test sets the same value).
    std::env::set_var("TESSERA_WAL_SEGMENT_BYTES", "65536");
}

fn tessera(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .envs(envs.iter().copied())
        // The backup's admin calls carry the nodes' token (as the Job's
        // mounted Secret gives it).
        .env(
            tessera::client::auth::TOKEN_FILE_ENV,
            common::admin_token_file(),
        )
        .env("RUST_LOG", "info")
        .output()
        .expect("the tessera binary runs")
}

/// Runs `tessera backup <args> --target T --cluster C`; panics on failure.
fn backup_ok(t: &Tgt, args: &[&str]) -> Value {
    let out = backup(t, args);
    assert!(
        out.status.success(),
        "tessera backup {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    // verify prints one JSON document per backup: take the first.
    serde_json::Deserializer::from_str(&s)
        .into_iter::<Value>()
        .next()
        .and_then(|v| v.ok())
        .unwrap_or(Value::Null)
}

fn backup(t: &Tgt, args: &[&str]) -> Output {
    let mut a = vec!["backup"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--target", &t.spec, "--cluster", "db"]);
    let mut envs: Vec<(&str, &str)> = Vec::new();
    if let Some(ep) = &t.endpoint {
        a.extend_from_slice(&["--s3-endpoint", ep]);
        envs.push(("AWS_ACCESS_KEY_ID", "tessera"));
        envs.push(("AWS_SECRET_ACCESS_KEY", "tessera-secret"));
    }
    tessera(&a, &envs)
}

/// A backup target: a directory, or a bucket on a real S3 server.
struct Tgt {
    spec: String,
    endpoint: Option<String>,
    /// Where the objects are on disk (both targets keep files).
    root: PathBuf,
    _tmp: tempfile::TempDir,
    server: Option<Child>,
}

impl Drop for Tgt {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn dir_target() -> Tgt {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("backups");
    Tgt {
        spec: root.display().to_string(),
        endpoint: None,
        root,
        _tmp: tmp,
        server: None,
    }
}

/// versitygw on 127.0.0.1 serving a directory; bucket "backups" (a
/// directory in its posix backend), objects under the prefix "pfx".
fn s3_target() -> Tgt {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-server.sh");
    let out = Command::new(&script)
        .arg("path")
        .output()
        .expect("scripts/s3-server.sh runs");
    assert!(
        out.status.success(),
        "installing the S3 server failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("s3");
    std::fs::create_dir_all(data.join("backups")).expect("bucket dir");
    let port = common::free_port();
    let server = Command::new(bin)
        .args(["--port", &format!("127.0.0.1:{port}"), "posix"])
        .arg(&data)
        .env("ROOT_ACCESS_KEY", "tessera")
        .env("ROOT_SECRET_KEY", "tessera-secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("versitygw starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "versitygw did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Tgt {
        spec: "s3://backups/pfx".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        root: data.join("backups").join("pfx"),
        _tmp: tmp,
        server: Some(server),
    }
}

fn addr(n: &TestNode) -> String {
    format!("127.0.0.1:{}", n.admin_port)
}

fn write_range(n: &TestNode, prefix: &str, range: std::ops::Range<usize>) {
    let mut c = n.conn();
    let mut p = redis::pipe();
    for i in range {
        p.set(
            format!("{prefix}{i}"),
            format!("value-{prefix}-{i}-{}", "x".repeat(64)),
        )
        .ignore();
    }
    let _: () = p.query(&mut c).expect("writes succeed");
}

fn count(n: &TestNode, prefix: &str, range: std::ops::Range<usize>) -> usize {
    let mut c = n.conn();
    range
        .filter(|i| {
            let v: Option<String> = c.get(format!("{prefix}{i}")).expect("get");
            v == Some(format!("value-{prefix}-{i}-{}", "x".repeat(64)))
        })
        .count()
}

/// Restores into a fresh directory and starts a node on it.
fn restore_and_start(t: &Tgt, extra: &[&str]) -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let mut args = vec!["restore", "--data-dir", &data_s];
    args.extend_from_slice(extra);
    let r = backup_ok(t, &args);
    assert!(r["lastLsn"].as_u64().is_some(), "{r}");
    let n = TestNode::start_in(dir.path(), &[]);
    (n, dir)
}

/// `extra`: more arguments of `run` and `archive`.
fn roundtrip(t: &Tgt, extra: &[&str]) {
    small_segments();
    let src = TestNode::start(&[]);
    write_range(&src, "a", 0..3000);
    let a = addr(&src);
    let run = backup_ok(t, &[&["run", "--nodes", &a][..], extra].concat());
    assert_eq!(run["shards"], 1, "{run}");
    // Written after the backup, archived by the next archive pass.
    write_range(&src, "b", 0..2000);
    backup_ok(t, &[&["archive", "--nodes", &a][..], extra].concat());
    let list = backup_ok(t, &["list", "--json"]);
    assert_eq!(
        list["backups"].as_array().map(|a| a.len()),
        Some(1),
        "{list}"
    );
    let v = backup_ok(t, &["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    drop(src); // the cluster is gone
    let (n, _d) = restore_and_start(t, &[]);
    assert_eq!(count(&n, "a", 0..3000), 3000);
    assert_eq!(count(&n, "b", 0..2000), 2000);
    let mut c = n.conn();
    let size: usize = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
    assert_eq!(size, 5000);
}

#[test]
fn pvc_backup_then_restore_latest_has_every_key() {
    roundtrip(&dir_target(), &[]);
}

/// With 64 KiB checksum parts, the snapshot and the segments that outgrow
/// one part are checked part by part through S3's streamed GETs; a flipped
/// byte is refused naming the part.
#[test]
fn s3_backup_then_restore_latest_has_every_key() {
    let t = s3_target();
    roundtrip(&t, &["--part-bytes", "65536"]);
    let m = manifest(&t);
    let snap = &m["shards"][0]["snapshot"];
    let parts = snap["partSha256"].as_array().map_or(0, Vec::len);
    assert!(parts >= 3, "the snapshot has parts: {snap}");
    assert_eq!(snap["partBytes"], 65536, "{snap}");
    let key = snap["key"].as_str().expect("key");
    let path = t.root.join(key);
    let mid = flip_in_part(&path, parts / 2, 65536);
    let out = backup(&t, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "checksum mismatch in {key}, part {} of {parts}",
        parts / 2 + 1
    );
    assert!(!out.status.success() && report.contains(&want), "{report}");
    flip(&path, mid);
    backup_ok(&t, &["verify"]);
}

/// Flips one byte in the middle of part `part` (0-based) of a file;
/// returns its offset.
fn flip_in_part(path: &Path, part: usize, part_bytes: u64) -> u64 {
    let at = part as u64 * part_bytes + part_bytes / 2;
    flip(path, at);
    at
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).expect("read");
    b[at as usize] ^= 0x40;
    std::fs::write(path, &b).expect("write");
}

fn manifest_path(t: &Tgt) -> PathBuf {
    find(&t.root, "manifest.json").pop().expect("a manifest")
}

fn manifest(t: &Tgt) -> Value {
    serde_json::from_slice(&std::fs::read(manifest_path(t)).expect("read")).expect("json")
}

/// A snapshot of several 1 MiB checksum parts: backup, verify, restore;
/// a byte flipped in the middle part is refused by verify and restore,
/// naming the file and the part, with nothing restored; the same backup
/// described the old way (no parts: a whole-file SHA-256, format 1) still
/// verifies and restores, and is still checked.
#[test]
fn multi_part_snapshot_is_checked_part_by_part() {
    small_segments();
    let t = dir_target();
    let src = TestNode::start(&[]);
    let mut c = src.conn();
    let mut p = redis::pipe();
    for i in 0..3000 {
        p.set(format!("big{i}"), format!("{i}:{}", "v".repeat(1000)))
            .ignore();
    }
    let _: () = p.query(&mut c).expect("writes succeed");
    let run = backup_ok(
        &t,
        &["run", "--nodes", &addr(&src), "--part-bytes", "1048576"],
    );
    assert_eq!(run["shards"], 1, "{run}");
    drop(src);
    let m = manifest(&t);
    assert_eq!(m["formatVersion"], 2, "{m}");
    let snap = m["shards"][0]["snapshot"].clone();
    let bytes = snap["bytes"].as_u64().expect("bytes");
    let parts: Vec<String> = snap["partSha256"]
        .as_array()
        .expect("part checksums")
        .iter()
        .map(|v| v.as_str().expect("hex").to_string())
        .collect();
    assert_eq!(snap["partBytes"], 1048576, "{snap}");
    assert_eq!(parts.len() as u64, bytes.div_ceil(1 << 20), "{snap}");
    assert!(parts.len() >= 3, "{bytes} bytes: at least 3 parts");
    assert!(
        snap["sha256"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("-{}", parts.len()))),
        "composite: {snap}"
    );
    let key = snap["key"].as_str().expect("key").to_string();
    let snap_path = t.root.join(&key);
    // The part checksums are those of the bytes on the target.
    let data = std::fs::read(&snap_path).expect("read");
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        let d: [u8; 32] = sha2::Sha256::digest(chunk).into();
        assert_eq!(hex(&d), parts[i], "part {i}");
    }
    assert_eq!(backup_ok(&t, &["verify"])["ok"], true);
    let (n, _d) = restore_and_start(&t, &[]);
    let mut c = n.conn();
    let size: usize = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
    assert_eq!(size, 3000);
    let v: String = c.get("big2999").expect("get");
    assert_eq!(v, format!("2999:{}", "v".repeat(1000)));
    drop(n);

    // One byte flipped in the middle part.
    let middle = parts.len() / 2;
    let at = flip_in_part(&snap_path, middle, 1 << 20);
    let named = format!(
        "checksum mismatch in {key}, part {} of {}",
        middle + 1,
        parts.len()
    );
    let out = backup(&t, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && report.contains(&named), "{report}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let data_s = data_dir.display().to_string();
    let out = backup(&t, &["restore", "--data-dir", &data_s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&named), "{err}");
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        !data_dir.join("snapshots").exists() && !data_dir.join("wal").exists(),
        "nothing half-restored"
    );
    assert!(
        std::fs::read_dir(data_dir.join(".restore/snapshots"))
            .map_or(true, |mut d| d.next().is_none()),
        "the refused copy is removed"
    );
    flip(&snap_path, at);

    // The old manifest form: no part fields, the whole file's SHA-256.
    let mut old = manifest(&t);
    old["formatVersion"] = json!(1);
    let e = old["shards"][0]["snapshot"]
        .as_object_mut()
        .expect("snapshot entry");
    e.remove("partBytes");
    e.remove("partSha256");
    e.insert("sha256".into(), json!(hex(&sha2::Sha256::digest(&data))));
    std::fs::write(manifest_path(&t), old.to_string()).expect("write manifest");
    assert_eq!(backup_ok(&t, &["verify"])["ok"], true);
    let (n, _d) = restore_and_start(&t, &[]);
    let mut c = n.conn();
    let size: usize = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
    assert_eq!(size, 3000);
    drop(n);
    flip(&snap_path, at);
    let out = backup(&t, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && report.contains(&format!("checksum mismatch in {key}: expected SHA-256")),
        "{report}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn point_in_time_restore_brings_back_exactly_the_first_batch() {
    small_segments();
    let t = dir_target();
    let src = TestNode::start(&[]);
    write_range(&src, "base", 0..500);
    backup_ok(&t, &["run", "--nodes", &addr(&src)]);
    std::thread::sleep(Duration::from_millis(300));
    write_range(&src, "one", 0..2000);
    std::thread::sleep(Duration::from_millis(600));
    let between = jiff::Timestamp::now().to_string();
    std::thread::sleep(Duration::from_millis(600));
    write_range(&src, "two", 0..2000);
    backup_ok(&t, &["archive", "--nodes", &addr(&src)]);
    // Another backup after both batches, with a snapshot of its own (not
    // the first backup's, reused): the restore must pick the older one.
    backup_ok(
        &t,
        &[
            "run",
            "--nodes",
            &addr(&src),
            "--reuse-snapshot-within",
            "0",
        ],
    );
    let (n, _d) = restore_and_start(&t, &["--target-time", &between]);
    assert_eq!(count(&n, "base", 0..500), 500);
    assert_eq!(count(&n, "one", 0..2000), 2000);
    assert_eq!(
        count(&n, "two", 0..2000),
        0,
        "the second batch is after the target"
    );
    drop(n);
    // `plan` pins the backup and the time (what the operator gives every
    // node); a restore pinned to it brings back the same data.
    let plan = backup_ok(&t, &["plan", "--target-time", &between]);
    let first_id = backup_ok(&t, &["list", "--json"])["backups"][0]["id"].clone();
    assert_eq!(plan["backupId"], first_id, "{plan}");
    assert_eq!(plan["shards"], 1, "{plan}");
    assert_eq!(plan["slots"][0], "0-16383", "{plan}");
    let pinned_time = plan["targetTime"].as_str().expect("targetTime").to_string();
    let pinned_id = plan["backupId"].as_str().expect("backupId").to_string();
    let (n, _d) = restore_and_start(&t, &["--backup", &pinned_id, "--target-time", &pinned_time]);
    assert_eq!(count(&n, "one", 0..2000), 2000);
    assert_eq!(count(&n, "two", 0..2000), 0);
    drop(n);
    // Latest still has both.
    let (n, _d) = restore_and_start(&t, &[]);
    assert_eq!(count(&n, "two", 0..2000), 2000);
    // Before the first backup: refused, with the reason.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let out = backup(
        &t,
        &[
            "restore",
            "--data-dir",
            &data,
            "--target-time",
            "2020-01-01T00:00:00Z",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("before the first recoverability point"),
        "{err}"
    );
}

/// (first, last) LSN of every archived log segment in the target.
fn archived_segments(t: &Tgt) -> Vec<(u64, u64)> {
    find(&t.root, ".wal")
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let (a, b) = name.strip_suffix(".wal")?.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_first_backup_skips_the_log_before_its_snapshot_and_later_ones_keep_the_chain() {
    small_segments();
    let t = dir_target();
    let src = TestNode::start(&[]);
    write_range(&src, "a", 0..3000);
    let run = backup_ok(&t, &["run", "--nodes", &addr(&src)]);
    let id = run["id"].as_str().expect("backup id").to_string();
    let m = manifest(&t);
    let start = m["shards"][0]["snapshot"]["startLsn"]
        .as_u64()
        .expect("snapshot startLsn");
    // The node still has log from before that snapshot (what the old code
    // copied): otherwise this test would prove nothing.
    let (code, body) = common::http_get(src.admin_port, "/v1/wal/segments").expect("segments");
    assert_eq!(code, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("segments JSON");
    let old_on_node = listed["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .filter(|s| s["lastLsn"].as_u64().is_some_and(|l| l <= start))
        .count();
    assert!(
        old_on_node > 0,
        "the node kept no log before {start}: {listed}"
    );
    let archived = archived_segments(&t);
    assert!(
        archived.iter().all(|&(_, last)| last > start),
        "a first backup copied log that ends at or before its snapshot ({start}): {archived:?}"
    );
    // The log after the snapshot is copied by later runs, and restoring
    // the first backup to the latest point replays it.
    write_range(&src, "b", 0..2000);
    backup_ok(&t, &["archive", "--nodes", &addr(&src)]);
    let archived = archived_segments(&t);
    assert!(
        archived.iter().any(|&(first, _)| first <= start + 1),
        "the log right after the snapshot ({}) is archived: {archived:?}",
        start + 1
    );
    std::thread::sleep(Duration::from_millis(300));
    let after_b = jiff::Timestamp::now().to_string();
    std::thread::sleep(Duration::from_millis(300));
    backup_ok(&t, &["run", "--nodes", &addr(&src)]);
    assert!(
        archived_segments(&t).iter().all(|&(_, last)| last > start),
        "later runs do not copy the log before the oldest backup either"
    );
    drop(src);
    // The first backup's snapshot plus the archived log, up to after "b".
    let (n, _d) = restore_and_start(&t, &["--backup", &id, "--target-time", &after_b]);
    assert_eq!(count(&n, "a", 0..3000), 3000);
    assert_eq!(count(&n, "b", 0..2000), 2000);
}

/// The node's snapshot files, sorted.
fn snapshot_files(n: &TestNode) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(n.dir.join("data").join("snapshots"))
        .expect("the node has a snapshots directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tsnap"))
        .collect();
    v.sort();
    v
}

fn last_snapshot(n: &TestNode) -> Value {
    let (code, body) = common::http_get(n.admin_port, "/v1/status").expect("status");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("status JSON");
    v["lastSnapshot"].clone()
}

#[test]
fn backup_reuses_the_nodes_recent_snapshot_and_zero_forces_a_fresh_one() {
    small_segments();
    let t = dir_target();
    let src = TestNode::start(&[]);
    write_range(&src, "a", 0..3000);
    // The node's own snapshot, then writes only the log has.
    let (code, body) = http(src.admin_port, "POST", "/v1/snapshot", "").expect("snapshot");
    assert_eq!(code, 200, "{body}");
    let own: Value = serde_json::from_str(&body).expect("snapshot JSON");
    write_range(&src, "b", 0..2000);
    let files_before = snapshot_files(&src);
    let status_before = last_snapshot(&src);
    assert_eq!(status_before["finishedAtMs"], own["finishedAtMs"]);

    backup_ok(
        &t,
        &[
            "run",
            "--nodes",
            &addr(&src),
            "--reuse-snapshot-within",
            "10m",
        ],
    );
    let m = manifest(&t);
    let snap = &m["shards"][0]["snapshot"];
    let own_name = Path::new(own["path"].as_str().expect("path"))
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    assert!(
        snap["key"].as_str().is_some_and(|k| k.ends_with(&own_name)),
        "the backup copied {} instead of the node's {own_name}",
        snap["key"]
    );
    assert_eq!(snap["startLsn"], own["startLsn"], "{snap}");
    assert_eq!(snap["endLsn"], own["endLsn"], "{snap}");
    assert_eq!(snap["finishedAtMs"], own["finishedAtMs"], "{snap}");
    assert_eq!(snap["bytes"], own["bytes"], "{snap}");
    assert_eq!(
        snapshot_files(&src),
        files_before,
        "the node wrote no new snapshot"
    );
    assert_eq!(last_snapshot(&src)["finishedAtMs"], own["finishedAtMs"]);
    let v = backup_ok(&t, &["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    // The reused snapshot plus the log after it: every key.
    let (n, _d) = restore_and_start(&t, &[]);
    assert_eq!(count(&n, "a", 0..3000), 3000);
    assert_eq!(count(&n, "b", 0..2000), 2000);
    drop(n);

    // 0: a fresh snapshot, after the "b" writes.
    std::thread::sleep(Duration::from_millis(5));
    backup_ok(
        &t,
        &[
            "run",
            "--nodes",
            &addr(&src),
            "--reuse-snapshot-within",
            "0",
        ],
    );
    let list = backup_ok(&t, &["list", "--json"]);
    let newest = list["backups"][1]["id"]
        .as_str()
        .expect("two backups")
        .to_string();
    let m: Value = serde_json::from_slice(
        &std::fs::read(
            t.root
                .join("db/backups")
                .join(&newest)
                .join("manifest.json"),
        )
        .expect("the second manifest"),
    )
    .expect("manifest JSON");
    let fresh = &m["shards"][0]["snapshot"];
    assert!(
        fresh["endLsn"].as_u64() > own["endLsn"].as_u64(),
        "a fresh snapshot covers the later writes: {fresh}"
    );
    assert!(
        fresh["finishedAtMs"].as_u64() > own["finishedAtMs"].as_u64(),
        "{fresh}"
    );
    let after = last_snapshot(&src);
    assert_eq!(after["endLsn"], fresh["endLsn"], "{after}");
    assert_ne!(snapshot_files(&src), files_before);
}

fn find(root: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn corrupt_or_incomplete_backups_are_refused_with_the_reason() {
    small_segments();
    let t = dir_target();
    let src = TestNode::start(&[]);
    write_range(&src, "k", 0..2000);
    backup_ok(&t, &["run", "--nodes", &addr(&src)]);
    // Flip one byte in the middle of the snapshot.
    let snap = find(&t.root, ".tsnap")
        .pop()
        .expect("a snapshot in the target");
    let mut b = std::fs::read(&snap).expect("read");
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&snap, &b).expect("write");
    let out = backup(&t, &["verify"]);
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("checksum mismatch"), "{report}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let term = dir.path().join("termination-log");
    let term_s = term.display().to_string();
    let out = backup(
        &t,
        &[
            "restore",
            "--data-dir",
            &data_s,
            "--termination-log",
            &term_s,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    // Exit status 3: a Job fails at once instead of retrying.
    assert_eq!(out.status.code(), Some(3), "{err}");
    let msg: Value =
        serde_json::from_slice(&std::fs::read(&term).expect("termination log")).expect("JSON");
    assert!(
        msg["error"]
            .as_str()
            .is_some_and(|e| e.contains("checksum mismatch")),
        "{msg}"
    );
    assert_eq!(msg["permanent"], true, "{msg}");
    assert!(
        !data.join("snapshots").exists() && !data.join("wal").exists(),
        "nothing half-restored"
    );
    // Repair it, then lose a log segment the backup needs.
    b[mid] ^= 0x40;
    std::fs::write(&snap, &b).expect("write");
    write_range(&src, "m", 0..2000);
    backup_ok(&t, &["archive", "--nodes", &addr(&src)]);
    let segs = find(&t.root, ".wal");
    std::fs::remove_file(segs.last().expect("segments")).expect("rm");
    let out = backup(&t, &["restore", "--data-dir", &data_s]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("incomplete") && err.contains("missing segment"),
        "{err}"
    );
    // No manifest: an incomplete backup.
    std::fs::remove_file(find(&t.root, "manifest.json").pop().expect("manifest")).expect("rm");
    let out = backup(&t, &["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("incomplete"));
    let id = t.root.join("db/backups");
    let id = std::fs::read_dir(id)
        .expect("ls")
        .flatten()
        .next()
        .expect("one")
        .file_name();
    let out = backup(
        &t,
        &[
            "restore",
            "--data-dir",
            &data_s,
            "--backup",
            &id.to_string_lossy(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("incomplete: no manifest"),
        "{err}"
    );
}

#[test]
fn retention_keeps_n_and_reports_what_it_pruned() {
    small_segments();
    let t = dir_target();
    let src = TestNode::start(&[]);
    let mut ids = Vec::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let term = tmp.path().join("termination-log");
    let term_s = term.display().to_string();
    for i in 0..4 {
        write_range(&src, &format!("r{i}-"), 0..1500);
        let r = backup_ok(
            &t,
            &[
                "run",
                "--nodes",
                &addr(&src),
                "--keep",
                "2",
                "--termination-log",
                &term_s,
            ],
        );
        ids.push(r["id"].as_str().unwrap_or_default().to_string());
        // The Job's termination message: what the operator reads back.
        let msg: Value =
            serde_json::from_slice(&std::fs::read(&term).expect("termination log")).expect("JSON");
        assert_eq!(msg["id"], r["id"], "{msg}");
        assert_eq!(msg["backups"], i.min(1) + 1, "{msg}");
        assert!(msg["firstRecoverabilityPoint"].is_string(), "{msg}");
        if i >= 2 {
            assert_eq!(msg["prunedBackups"], json!([ids[i - 2]]), "{msg}");
            assert!(
                msg["prunedSegments"].as_u64().is_some_and(|n| n > 0),
                "{msg}"
            );
        }
        if i >= 2 {
            let pruned = r["pruned"].as_array().cloned().unwrap_or_default();
            assert!(
                pruned
                    .iter()
                    .any(|p| p.as_str() == Some(&format!("backup {}", ids[i - 2]))),
                "run {i} pruned {pruned:?}"
            );
            assert!(
                pruned
                    .iter()
                    .any(|p| p.as_str().is_some_and(|s| s.starts_with("segment "))),
                "{pruned:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = backup_ok(&t, &["list", "--json"]);
    let kept: Vec<&str> = list["backups"]
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kept, vec![ids[2].as_str(), ids[3].as_str()]);
    let v = backup_ok(&t, &["verify", "--backup", &ids[2]]);
    assert_eq!(v["ok"], true, "{v}");
    let (n, _d) = restore_and_start(&t, &[]);
    for i in 0..4 {
        assert_eq!(count(&n, &format!("r{i}-"), 0..1500), 1500);
    }
}

fn node_id(i: usize) -> String {
    format!("{:040x}", i + 1)
}

/// Two shards, the first with a replica: the snapshot comes from the
/// replica, the log from the primary; a restore of each shard serves its
/// slots again.
#[test]
fn two_shards_with_a_replica() {
    small_segments();
    let t = dir_target();
    let mut nodes: Vec<TestNode> = (0..3)
        .map(|i| TestNode::start(&["--node-id", &node_id(i)]))
        .collect();
    let a = |i: usize| json!({"id": node_id(i), "host": "127.0.0.1", "port": nodes[i].port});
    let topo = json!({"epoch": 1, "shards": [
        {"name": "s0", "slots": [[0, 8191]], "primary": a(0), "replicas": [a(1)], "epoch": 1},
        {"name": "s1", "slots": [[8192, 16383]], "primary": a(2), "replicas": [], "epoch": 1},
    ]});
    for n in &nodes {
        let (s, b) =
            http(n.admin_port, "PUT", "/v1/topology", &topo.to_string()).expect("topology");
        assert_eq!(s, 200, "{b}");
    }
    let client = redis::cluster::ClusterClient::new(vec![nodes[0].url()]).expect("cluster client");
    let mut c = client.get_connection().expect("cluster connection");
    for i in 0..3000 {
        let _: () = c.set(format!("k{i}"), format!("v{i}")).expect("set");
    }
    // Let the replica catch up.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = |n: &TestNode| -> Value {
            let (_, b) = common::http_get(n.admin_port, "/v1/status").expect("status");
            serde_json::from_str(&b).unwrap_or(Value::Null)
        };
        if st(&nodes[1])["lsn"] == st(&nodes[0])["lsn"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never caught up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = nodes.iter().map(addr).collect::<Vec<_>>().join(",");
    backup_ok(&t, &["run", "--nodes", &all]);
    let m_path = find(&t.root, "manifest.json").pop().expect("manifest");
    let m: Value = serde_json::from_slice(&std::fs::read(m_path).expect("read")).expect("json");
    assert_eq!(m["shards"][0]["name"], "s0");
    assert_eq!(m["shards"][0]["sourceRole"], "replica", "{m}");
    assert_eq!(m["shards"][1]["sourceRole"], "primary");
    let mut total = 0;
    for shard in ["s0", "s1"] {
        let (n, _d) = restore_and_start(&t, &["--shard", shard]);
        let mut c = n.conn();
        let size: usize = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
        total += size;
    }
    assert_eq!(total, 3000);

    // A shard none of whose nodes answer is waited for, never left out of
    // the backup: s1's only node is down when the backup starts and back
    // 3 s later.
    let before = find(&t.root, "manifest.json").len();
    nodes[2].kill9();
    let out = std::thread::scope(|sc| {
        let run = sc.spawn(|| backup(&t, &["run", "--nodes", &all]));
        std::thread::sleep(Duration::from_secs(3));
        nodes[2].restart();
        let (s, b) = http(
            nodes[2].admin_port,
            "PUT",
            "/v1/topology",
            &topo.to_string(),
        )
        .expect("topology");
        assert_eq!(s, 200, "{b}");
        run.join().expect("the backup thread")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the backup failed:\n{stderr}");
    assert!(
        stderr.contains("the whole cluster did not answer yet"),
        "the backup did not wait for s1:\n{stderr}"
    );
    let mut manifests = find(&t.root, "manifest.json");
    manifests.sort();
    assert_eq!(manifests.len(), before + 1);
    let m: Value =
        serde_json::from_slice(&std::fs::read(manifests.pop().expect("manifest")).expect("read"))
            .expect("json");
    let names: Vec<&str> = m["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["s0", "s1"], "{m}");
}
