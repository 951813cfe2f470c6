//! Random command sequences (proptest) run on a node and on a redis-server,
//! replies compared one by one. Each test starts both servers once and runs
//! `TESSERA_DIFF_CASES` sequences (96 by default) of 20-60 commands, some of
//! them in MULTI/EXEC blocks, with FLUSHALL on both between sequences. On a
//! difference proptest shrinks the sequence; the failure names the minimal
//! sequence and the two replies. The templates and how each reply is
//! compared are in `random_templates.rs` (streams, scripts, blocking
//! commands and scans in `random_{streams,scripts,blocking,scan}.rs`).

use std::cell::RefCell;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tessera::node::resp::Frame;

use super::differential::Pair;
use super::random_templates::{self as tpl, pool};
use super::{random_blocking, random_scan, random_scripts, random_streams};

/// How two replies are compared (the template's first character).
#[derive(Clone, Copy, Debug)]
enum Cmp {
    Exact,
    Sorted,
    SortedPairs,
    Len,
    Ttl,
    Float,
    /// Stream group replies with times in them (`random_streams.rs`).
    Times,
    /// A whole SCAN-family iteration (`random_scan.rs`).
    Scan,
}

/// One template with the pool indices its placeholders take.
#[derive(Clone, Debug)]
struct Pick {
    template: usize,
    idx: [u8; 8],
}

#[derive(Clone, Debug)]
enum Step {
    One(Pick),
    Multi(Vec<Pick>),
}

/// The commands of a template, placeholders filled in.
fn render(family: &[&str], pick: &Pick) -> Vec<(Cmp, Vec<String>)> {
    let mut names: Vec<&str> = Vec::new();
    family[pick.template]
        .split('|')
        .map(|cmd| {
            let cmp = match cmd.as_bytes().first() {
                Some(b'=') => Cmp::Exact,
                Some(b'~') => Cmp::Sorted,
                Some(b'%') => Cmp::SortedPairs,
                Some(b'#') => Cmp::Len,
                Some(b'@') => Cmp::Ttl,
                Some(b'^') => Cmp::Float,
                Some(b'&') => Cmp::Times,
                Some(b'*') => Cmp::Scan,
                _ => panic!("template {cmd:?} has no comparison mark"),
            };
            let mut args = Vec::new();
            for word in cmd[1..].split(' ') {
                let Some(name) = word.strip_prefix('$') else {
                    args.push(word.to_string());
                    continue;
                };
                // Placeholders take indices in order of first appearance;
                // `$hN` (a script's SHA1) shares the index of the template's
                // `$eN` (its body).
                let same = |n: &&str| {
                    *n == name
                        || name
                            .strip_prefix('h')
                            .is_some_and(|r| n.strip_prefix('e') == Some(r))
                };
                let slot = names.iter().position(same).unwrap_or_else(|| {
                    names.push(name);
                    names.len() - 1
                });
                let kind = name.chars().next().expect("a pool letter");
                let values = pool(kind);
                let value = values[usize::from(pick.idx[slot]) % values.len()];
                if value.is_empty() || tpl::whole(kind) {
                    args.push(value.to_string());
                } else {
                    args.extend(value.split(' ').map(str::to_string));
                }
            }
            (cmp, args)
        })
        .collect()
}

/// A reply made comparable under `cmp`.
fn normalise(cmp: Cmp, f: Frame) -> Frame {
    match (cmp, f) {
        (Cmp::Sorted | Cmp::SortedPairs, Frame::Array(items)) => {
            let mut groups: Vec<Vec<Frame>> = match cmp {
                Cmp::SortedPairs => items.chunks(2).map(<[Frame]>::to_vec).collect(),
                _ => items.into_iter().map(|i| vec![i]).collect(),
            };
            groups.sort_by_key(|g| format!("{g:?}"));
            Frame::Array(groups.into_iter().flatten().collect())
        }
        (Cmp::Len, Frame::Array(items)) => Frame::Integer(items.len() as i64),
        (Cmp::Len, Frame::Bulk(_)) => Frame::Bulk(b"<some value>".to_vec()),
        (Cmp::Ttl, Frame::Integer(t)) if t > 0 => Frame::Integer(1),
        // One page of a scan (inside MULTI): its shape only.
        (Cmp::Scan, f) => random_scan::page_shape(f),
        (_, f) => f,
    }
}

/// Do two normalised replies agree under `cmp`? A `Float` reply may
/// differ in the last digits (Redis adds in long double).
fn agree(cmp: Cmp, ours: &Frame, theirs: &Frame) -> bool {
    let num = |f: &Frame| match f {
        Frame::Bulk(b) => std::str::from_utf8(b).ok()?.parse::<f64>().ok(),
        _ => None,
    };
    if matches!(cmp, Cmp::Times) {
        return random_streams::agree_times(ours, theirs);
    }
    ours == theirs
        || matches!(cmp, Cmp::Float)
            && matches!((num(ours), num(theirs)),
                (Some(a), Some(b)) if (a - b).abs() <= 1e-12 * a.abs().max(b.abs()))
}

/// After a `Float` reply that agrees but is not identical, the node's
/// stored value is set to Redis' so that later replies stay comparable.
fn resync(p: &mut Pair, log: &mut Vec<String>, args: &[String], theirs: &Frame) {
    let Frame::Bulk(value) = theirs else { return };
    let value = String::from_utf8_lossy(value).into_owned();
    let argv: Vec<&str> = match args[0].to_ascii_uppercase().as_str() {
        "INCRBYFLOAT" => vec!["SET", &args[1], &value, "KEEPTTL"],
        "HINCRBYFLOAT" => vec!["HSET", &args[1], &args[2], &value],
        _ => return,
    };
    log.push(format!("(node only) {argv:?}"));
    p.node.cmd(&argv);
}

/// A reply as redis-cli would print it, for failure messages.
fn show(f: &Frame) -> String {
    match f {
        Frame::Bulk(b) => format!("{:?}", String::from_utf8_lossy(b)),
        Frame::Array(items) => {
            let inner: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", inner.join(", "))
        }
        Frame::Simple(s) => s.clone(),
        Frame::Error(e) => format!("(error) {e}"),
        Frame::Integer(i) => format!("(integer) {i}"),
        Frame::Null => "(nil)".into(),
        other => format!("{other:?}"),
    }
}

/// The transcript so far and the two replies that differ.
fn differ(log: &[String], node: &Frame, redis: &Frame) -> TestCaseError {
    TestCaseError::fail(format!(
        "replies differ at the last command of:\n  {}\nnode:         {}\nredis-server: {}",
        log.join("\n  "),
        show(node),
        show(redis)
    ))
}

/// Runs one command on both servers; the normalised replies must agree.
fn compare(
    p: &mut Pair,
    log: &mut Vec<String>,
    cmp: Cmp,
    args: &[String],
) -> Result<(), TestCaseError> {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    log.push(
        argv.iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let (ours, theirs) = if matches!(cmp, Cmp::Scan) {
        (
            random_scan::full(&mut p.node, &argv),
            random_scan::full(&mut p.redis, &argv),
        )
    } else {
        (
            normalise(cmp, p.node.cmd(&argv)),
            normalise(cmp, p.redis.cmd(&argv)),
        )
    };
    if !agree(cmp, &ours, &theirs) {
        return Err(differ(log, &ours, &theirs));
    }
    if ours != theirs {
        resync(p, log, args, &theirs);
    }
    Ok(())
}

/// A MULTI block: QUEUED (or the error) for each command, then EXEC's
/// replies compared element by element, each the way its command is.
fn compare_multi(
    p: &mut Pair,
    log: &mut Vec<String>,
    family: &[&str],
    picks: &[Pick],
) -> Result<(), TestCaseError> {
    compare(p, log, Cmp::Exact, &["MULTI".to_string()])?;
    let mut queued = Vec::new();
    for pick in picks {
        for (cmp, args) in render(family, pick) {
            compare(p, log, Cmp::Exact, &args)?;
            queued.push((cmp, args));
        }
    }
    log.push("EXEC".into());
    let (ours, theirs) = (p.node.cmd(&["EXEC"]), p.redis.cmd(&["EXEC"]));
    let (Frame::Array(ours), Frame::Array(theirs)) = (&ours, &theirs) else {
        return if ours == theirs {
            Ok(())
        } else {
            Err(differ(log, &ours, &theirs))
        };
    };
    if ours.len() != theirs.len() {
        return Err(differ(
            log,
            &Frame::Array(ours.clone()),
            &Frame::Array(theirs.clone()),
        ));
    }
    for (i, ((cmp, args), (a, b))) in queued.iter().zip(ours.iter().zip(theirs)).enumerate() {
        let (a, b) = (normalise(*cmp, a.clone()), normalise(*cmp, b.clone()));
        if !agree(*cmp, &a, &b) {
            log.push(format!("(reply of {args:?} in EXEC)"));
            return Err(differ(log, &a, &b));
        }
        if a != b {
            if i + 1 < queued.len() {
                // The later commands of the block saw different values: a
                // case that cannot go on (not a difference to report).
                return Err(TestCaseError::reject("float digits differ inside MULTI"));
            }
            resync(p, log, args, &b);
        }
    }
    Ok(())
}

fn run_case(p: &mut Pair, family: &[&str], steps: &[Option<Step>]) -> Result<(), TestCaseError> {
    for c in [&mut p.node, &mut p.redis] {
        // A case that failed inside MULTI left the block open.
        let _ = c.cmd(&["DISCARD"]);
        assert_eq!(c.cmd(&["FLUSHALL"]), Frame::Simple("OK".into()));
        // Loaded scripts outlive FLUSHALL: each case starts without any.
        assert_eq!(c.cmd(&["SCRIPT", "FLUSH"]), Frame::Simple("OK".into()));
    }
    let mut log = Vec::new();
    for step in steps.iter().flatten() {
        match step {
            Step::One(pick) => {
                for (cmp, args) in render(family, pick) {
                    compare(p, &mut log, cmp, &args)?;
                }
            }
            Step::Multi(picks) => compare_multi(p, &mut log, family, picks)?,
        }
    }
    Ok(())
}

fn pick(templates: usize) -> impl Strategy<Value = Pick> {
    (0..templates, proptest::array::uniform8(any::<u8>()))
        .prop_map(|(template, idx)| Pick { template, idx })
}

/// 60 slots, about 36 of them steps (a shrunk slot is empty, so a
/// shrunk sequence can get shorter than any minimum length); about one step
/// in twelve is a MULTI block of 1-4 templates.
fn steps(templates: usize) -> impl Strategy<Value = Vec<Option<Step>>> {
    let step = prop_oneof![
        11 => pick(templates).prop_map(Step::One),
        1 => proptest::collection::vec(pick(templates), 1..5).prop_map(Step::Multi),
    ];
    proptest::collection::vec(proptest::option::weighted(0.6, step), 60)
}

fn cases() -> u32 {
    std::env::var("TESSERA_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

/// Runs random sequences over `family` against a fresh pair of servers.
fn check(family: &[&str]) {
    let pair = RefCell::new(Pair::start());
    // Redis 7.0 notices a blocked client's timeout in its cron (10 times a
    // second by default): at 100 a blocking command on empty keys answers
    // about when its timeout ends, as the node does.
    assert_eq!(
        pair.borrow_mut().redis.cmd(&["CONFIG", "SET", "hz", "100"]),
        Frame::Simple("OK".into())
    );
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 6000,
        ..Config::default()
    });
    let result = runner.run(&steps(family.len()), |steps| {
        run_case(&mut pair.borrow_mut(), family, &steps)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, _)) => panic!("minimal failing sequence: {why}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn random_string_sequences_match_redis() {
    check(tpl::STRINGS);
}

#[test]
fn random_bit_sequences_match_redis() {
    check(tpl::BITS);
}

#[test]
fn random_list_sequences_match_redis() {
    check(tpl::LISTS);
}

#[test]
fn random_hash_sequences_match_redis() {
    check(tpl::HASHES);
}

#[test]
fn random_set_sequences_match_redis() {
    check(tpl::SETS);
}

#[test]
fn random_sorted_set_sequences_match_redis() {
    check(tpl::ZSETS);
}

#[test]
fn random_key_sequences_match_redis() {
    check(tpl::KEYS);
}

/// Every family's templates over the same keys: wrong-type errors, and
/// commands of one family on values another made.
#[test]
fn random_mixed_sequences_match_redis() {
    let all: Vec<&str> = [
        tpl::STRINGS,
        tpl::BITS,
        tpl::LISTS,
        tpl::HASHES,
        tpl::SETS,
        tpl::ZSETS,
        tpl::KEYS,
        random_streams::STREAMS,
        random_blocking::BLOCKING,
        random_scripts::SCRIPTS,
    ]
    .concat();
    check(&all);
}

#[test]
fn random_stream_sequences_match_redis() {
    check(random_streams::STREAMS);
}

#[test]
fn random_stream_group_sequences_match_redis() {
    check(&[random_streams::STREAMS, random_streams::GROUPS].concat());
}

#[test]
fn random_script_sequences_match_redis() {
    check(random_scripts::SCRIPTS);
}

#[test]
fn random_blocking_sequences_match_redis() {
    check(random_blocking::BLOCKING);
}

#[test]
fn random_scan_sequences_match_redis() {
    check(random_scan::SCANS);
}
