//! `tessera loadgen`: the load generator of the benchmarks.
//!
//! `redis-benchmark` cannot send "a write, then `WAIT 1 0`" as one request,
//! which is the Redis reference of the replication benchmark, nor a
//! MULTI/EXEC block, a BLPOP/LPUSH ping-pong or PUBLISH with subscribers
//! draining the fan-out; and a Python generator saturated before the
//! servers did. This one is small and fast: one thread, N connections, each
//! sending a batch of P operations and reading every reply before the next
//! batch. It prints one JSON line: operations/s, p50/p99 of the batch round
//! trip in ms, error replies and the first error's text.
//!
//! Replies are counted, not parsed: each operation's replies are a known
//! number of lines (`+OK`, `:n`, `-ERR …`, and for BLPOP the five lines of
//! a two-element array of short bulk strings).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one operation is.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `SET k v` (each followed by `WAIT <n> 0` with `--wait-replicas`).
    Set,
    /// `EVALSHA` of a script that SETs its key and returns 1.
    Evalsha,
    /// `MULTI`, five `SET`s on keys of one slot, `EXEC`.
    Multi,
    /// `PUBLISH bench <value>`, with `--subscribers` connections subscribed.
    Publish,
    /// A ping-pong: on a second connection, `LPUSH q v`; on this one,
    /// `BLPOP q 0`, which the push wakes. An operation is one pop.
    Blpop,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Server address (loopback or a test host).
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub addr: SocketAddr,
    /// Connections (for `blpop`, pairs of connections).
    #[arg(long, default_value_t = 50)]
    pub conns: usize,
    /// Operations per round trip.
    #[arg(long, short = 'P', default_value_t = 1)]
    pub pipeline: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// Distinct keys per connection (`k:<conn>:<i mod keys>`, 10 digits).
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Follow every write with `WAIT <n> 0` (the pair counts as one write;
    /// `set` only).
    #[arg(long)]
    pub wait_replicas: Option<u32>,
    /// The operation.
    #[arg(long, value_enum, default_value_t = Op::Set)]
    pub command: Op,
    /// For `publish`: connections subscribed to the channel, each reading
    /// (and discarding) every message.
    #[arg(long, default_value_t = 0)]
    pub subscribers: usize,
}

/// The script `evalsha` runs (a write and a reply, as application scripts
/// such as locks and rate limiters do).
const SCRIPT: &str = "redis.call('SET', KEYS[1], ARGV[1]) return 1";

#[derive(Debug, Default)]
struct ConnResult {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    lat_us: Vec<u32>,
}

fn push_cmd(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Pushes a command whose argument `key_at` ends with the counter's
/// digits; returns where those digits are in `out`.
fn push_counted(out: &mut Vec<u8>, args: &[&[u8]], key_at: usize) -> usize {
    push_cmd(out, args);
    let after: usize = args[key_at + 1..]
        .iter()
        .map(|a| format!("${}\r\n", a.len()).len() + a.len() + 2)
        .sum();
    out.len() - after - 2 - KEY_DIGITS
}

/// Digits of the key counter (`k:<conn>:<counter>`, zero-padded so that the
/// batch is rendered once and only the digits change).
const KEY_DIGITS: usize = 10;

/// Writes `n` as `KEY_DIGITS` zero-padded decimal digits into `out`.
fn put_digits(out: &mut [u8], mut n: usize) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// A batch: its bytes, the offsets of the counters' digits, and how many
/// reply lines it gets.
struct Batch {
    bytes: Vec<u8>,
    digits: Vec<usize>,
    lines: usize,
}

/// A batch of `pipeline` operations of connection `id`.
fn render_batch(
    op: Op,
    id: usize,
    pipeline: usize,
    value: &[u8],
    wait: Option<&str>,
    sha: &str,
) -> Batch {
    let mut bytes = Vec::with_capacity(pipeline * (value.len() + 64) * 6);
    let mut digits = Vec::with_capacity(pipeline);
    let zeros = "0".repeat(KEY_DIGITS);
    let key = format!("k:{id}:{zeros}");
    let mut lines = 0;
    for _ in 0..pipeline {
        match op {
            Op::Set => {
                digits.push(push_counted(
                    &mut bytes,
                    &[b"SET", key.as_bytes(), value],
                    1,
                ));
                lines += 1;
                if let Some(n) = wait {
                    push_cmd(&mut bytes, &[b"WAIT", n.as_bytes(), b"0"]);
                    lines += 1;
                }
            }
            Op::Evalsha => {
                let args: [&[u8]; 5] = [b"EVALSHA", sha.as_bytes(), b"1", key.as_bytes(), value];
                digits.push(push_counted(&mut bytes, &args, 3));
                lines += 1;
            }
            Op::Multi => {
                push_cmd(&mut bytes, &[b"MULTI"]);
                for j in 0..5 {
                    // One hash tag per connection: the block stays in a slot.
                    let k = format!("{{t{id}}}:{j}:{zeros}");
                    digits.push(push_counted(&mut bytes, &[b"SET", k.as_bytes(), value], 1));
                }
                push_cmd(&mut bytes, &[b"EXEC"]);
                // +OK, five +QUEUED, then *5 and five +OK.
                lines += 12;
            }
            Op::Publish => {
                push_cmd(&mut bytes, &[b"PUBLISH", b"bench", value]);
                lines += 1;
            }
            Op::Blpop => {
                push_cmd(&mut bytes, &[b"BLPOP", format!("q:{id}").as_bytes(), b"0"]);
                lines += 5;
            }
        }
    }
    Batch {
        bytes,
        digits,
        lines,
    }
}

/// Reads until `want` reply lines have come; counts error replies.
async fn read_lines(
    sock: &mut TcpStream,
    inbuf: &mut [u8],
    want: usize,
    id: usize,
    r: &mut ConnResult,
) -> Result<()> {
    let (mut lines, mut carry_cr, mut at_line_start) = (0usize, false, true);
    while lines < want {
        let n = sock.read(inbuf).await?;
        if n == 0 {
            bail!("the server closed connection {id}");
        }
        for (j, &b) in inbuf[..n].iter().enumerate() {
            if at_line_start && b == b'-' {
                r.errors += 1;
                if r.first_error.is_none() {
                    let end = inbuf[j..n]
                        .iter()
                        .position(|&c| c == b'\r')
                        .unwrap_or(n - j);
                    r.first_error = Some(String::from_utf8_lossy(&inbuf[j..j + end]).into_owned());
                }
            }
            at_line_start = false;
            if carry_cr && b == b'\n' {
                lines += 1;
                at_line_start = true;
            }
            carry_cr = b == b'\r';
        }
    }
    Ok(())
}

async fn connect(a: &LoadgenArgs) -> Result<TcpStream> {
    let sock = TcpStream::connect(a.addr)
        .await
        .with_context(|| format!("connecting to {}", a.addr))?;
    sock.set_nodelay(true)?;
    Ok(sock)
}

async fn drive(a: LoadgenArgs, id: usize, deadline: Instant) -> Result<ConnResult> {
    // Per connection: its pusher stops when its popper does.
    let stop = Rc::new(Cell::new(false));
    let mut sock = connect(&a).await?;
    let value = vec![b'x'; a.value_size];
    let wait = a.wait_replicas.map(|n| n.to_string());
    let mut r = ConnResult::default();
    let mut inbuf = vec![0u8; 64 * 1024];
    let sha = crate::node::lua::sha1_hex(SCRIPT.as_bytes());
    if a.command == Op::Evalsha {
        let mut load = Vec::new();
        push_cmd(&mut load, &[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]);
        sock.write_all(&load).await?;
        // $40 and the SHA1.
        read_lines(&mut sock, &mut inbuf, 2, id, &mut r).await?;
    }
    // The pusher of a ping-pong: a batch of LPUSHes, then it waits until
    // the pops have taken them all, so every pop is woken by a push.
    let pops = Rc::new(Cell::new(0u64));
    let popped = Rc::new(tokio::sync::Notify::new());
    let pusher = if a.command == Op::Blpop {
        let mut p = connect(&a).await?;
        let mut batch = Vec::new();
        for _ in 0..a.pipeline {
            push_cmd(
                &mut batch,
                &[b"LPUSH", format!("q:{id}").as_bytes(), &value],
            );
        }
        let (pipeline, stop, pops, popped) =
            (a.pipeline, stop.clone(), pops.clone(), popped.clone());
        Some(tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut pr = ConnResult::default();
            let mut pushed = 0u64;
            while !stop.get() {
                p.write_all(&batch).await?;
                read_lines(&mut p, &mut buf, pipeline, id, &mut pr).await?;
                pushed += pipeline as u64;
                while pops.get() < pushed && !stop.get() {
                    popped.notified().await;
                }
            }
            Ok::<_, anyhow::Error>(pr)
        }))
    } else {
        None
    };
    // The batch is rendered once, as redis-benchmark does; each round only
    // rewrites the keys' counters in place, so the generator spends its CPU
    // on the socket, not on formatting.
    let mut batch = render_batch(a.command, id, a.pipeline, &value, wait.as_deref(), &sha);
    let keys = a.keys.max(1);
    let mut i = 0usize;
    while Instant::now() < deadline {
        for &at in &batch.digits {
            put_digits(&mut batch.bytes[at..at + KEY_DIGITS], i % keys);
            i += 1;
        }
        let t0 = Instant::now();
        sock.write_all(&batch.bytes).await?;
        read_lines(&mut sock, &mut inbuf, batch.lines, id, &mut r).await?;
        r.lat_us
            .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        r.ops += a.pipeline as u64;
        pops.set(r.ops);
        popped.notify_one();
    }
    stop.set(true);
    popped.notify_one();
    if let Some(p) = pusher {
        let pr = p.await.context("a pusher panicked")??;
        r.errors += pr.errors;
        if r.first_error.is_none() {
            r.first_error = pr.first_error;
        }
    }
    Ok(r)
}

/// A subscriber: reads and discards until the deadline; returns bytes read.
async fn subscribe(a: LoadgenArgs, deadline: Instant) -> Result<u64> {
    let mut sock = connect(&a).await?;
    let mut cmd = Vec::new();
    push_cmd(&mut cmd, &[b"SUBSCRIBE", b"bench"]);
    sock.write_all(&cmd).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Ok(Ok(0)) => bail!("the server closed a subscriber"),
            Ok(Ok(n)) => total += n as u64,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Ok(total),
        }
    }
}

/// Waits until `n` clients are subscribed to the channel (at most 10 s).
async fn subscribed(a: &LoadgenArgs, n: usize) -> Result<()> {
    let mut sock = connect(a).await?;
    let mut cmd = Vec::new();
    push_cmd(&mut cmd, &[b"PUBSUB", b"NUMSUB", b"bench"]);
    let want = format!(":{n}\r\n");
    let mut buf = vec![0u8; 1024];
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        sock.write_all(&cmd).await?;
        // *2, $5, bench, :n
        let mut got = Vec::new();
        while got.iter().filter(|&&b| b == b'\n').count() < 4 {
            let k = sock.read(&mut buf).await?;
            if k == 0 {
                bail!("the server closed the control connection");
            }
            got.extend_from_slice(&buf[..k]);
        }
        if got.ends_with(want.as_bytes()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{n} subscribers did not all subscribe within 10 s")
}

pub fn run(a: LoadgenArgs) -> Result<()> {
    if a.pipeline == 0 || a.conns == 0 {
        bail!("--pipeline and --conns must be at least 1");
    }
    if a.wait_replicas.is_some() && a.command != Op::Set {
        bail!("--wait-replicas goes with --command set only");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let set = tokio::task::LocalSet::new();
    let results = set.block_on(&rt, async {
        let subs = if a.command == Op::Publish && a.subscribers > 0 {
            // They read until well past the publishers' end.
            let until = Instant::now() + Duration::from_secs_f64(a.seconds + 12.0);
            let subs: Vec<_> = (0..a.subscribers)
                .map(|_| tokio::task::spawn_local(subscribe(a.clone(), until)))
                .collect();
            subscribed(&a, a.subscribers).await?;
            subs
        } else {
            Vec::new()
        };
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(a.seconds);
        let handles: Vec<_> = (0..a.conns)
            .map(|id| tokio::task::spawn_local(drive(a.clone(), id, deadline)))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.context("a load connection panicked")??);
        }
        let elapsed = start.elapsed();
        for s in &subs {
            s.abort();
        }
        Ok::<_, anyhow::Error>((out, elapsed))
    });
    let (results, elapsed) = results?;
    let ops: u64 = results.iter().map(|r| r.ops).sum();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let first_error = results.iter().find_map(|r| r.first_error.clone());
    let mut lat: Vec<u32> = results.into_iter().flat_map(|r| r.lat_us).collect();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((p * lat.len() as f64) as usize).min(lat.len() - 1);
        lat[i] as f64 / 1000.0
    };
    let out = serde_json::json!({
        // Operations done (writes, for `set`) and operations per second.
        "writes": ops,
        "seconds": elapsed.as_secs_f64(),
        "ops": ops as f64 / elapsed.as_secs_f64(),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": lat.last().map_or(0.0, |&us| us as f64 / 1000.0),
        "errors": errors,
        "first_error": first_error,
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_batch_carries_each_round_s_keys() {
        let mut b = render_batch(Op::Set, 7, 2, b"vv", Some("1"), "");
        put_digits(&mut b.bytes[b.digits[0]..b.digits[0] + KEY_DIGITS], 42);
        put_digits(
            &mut b.bytes[b.digits[1]..b.digits[1] + KEY_DIGITS],
            1_234_567_890,
        );
        let want = "*3\r\n$3\r\nSET\r\n$14\r\nk:7:0000000042\r\n$2\r\nvv\r\n\
                    *3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n\
                    *3\r\n$3\r\nSET\r\n$14\r\nk:7:1234567890\r\n$2\r\nvv\r\n\
                    *3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n";
        assert_eq!(String::from_utf8_lossy(&b.bytes), want);
        assert_eq!(b.lines, 4);
    }

    #[test]
    fn evalsha_and_multi_batches_count_their_reply_lines_and_key_digits() {
        let mut b = render_batch(Op::Evalsha, 3, 1, b"v", None, "abc");
        put_digits(&mut b.bytes[b.digits[0]..b.digits[0] + KEY_DIGITS], 5);
        assert_eq!(
            String::from_utf8_lossy(&b.bytes),
            "*5\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$14\r\nk:3:0000000005\r\n$1\r\nv\r\n"
        );
        assert_eq!(b.lines, 1);
        let mut m = render_batch(Op::Multi, 3, 2, b"v", None, "");
        assert_eq!((m.digits.len(), m.lines), (10, 24));
        for (i, &at) in m.digits.clone().iter().enumerate() {
            put_digits(&mut m.bytes[at..at + KEY_DIGITS], i);
        }
        let text = String::from_utf8_lossy(&m.bytes);
        assert!(
            text.starts_with(
                "*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$17\r\n{t3}:0:0000000000\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("{t3}:4:0000000009"), "{text}");
        assert_eq!(text.matches("EXEC").count(), 2);
    }
}
