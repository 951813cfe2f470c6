//! `tessera loadgen`: the write-load generator of the benchmarks.
//!
//! `redis-benchmark` cannot send "a write, then `WAIT 1 0`" as one request,
//! which is the Redis reference of the replication benchmark, and a Python
//! generator saturated before the servers did. This one is small and fast:
//! one thread, N connections, each sending a batch of P writes (each
//! optionally followed by `WAIT <replicas> 0`) and reading every reply before
//! the next batch. It prints one JSON line: writes/s, p50/p99 of the batch
//! round trip in ms, error replies and the first error's text.
//!
//! Replies are counted, not parsed: every reply of `SET` and `WAIT` is one
//! line (`+OK`, `:n`, `-ERR …`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Server address (loopback or a test host).
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub addr: SocketAddr,
    /// Connections.
    #[arg(long, default_value_t = 50)]
    pub conns: usize,
    /// Writes per round trip.
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
    /// Follow every write with `WAIT <n> 0` (the pair counts as one write).
    #[arg(long)]
    pub wait_replicas: Option<u32>,
}

#[derive(Debug, Default)]
struct ConnResult {
    writes: u64,
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

/// A batch of `pipeline` `SET k:<id>:<counter> <value>` (each followed by
/// `WAIT <wait> 0` when asked) and the offsets of the counters' digits.
fn render_batch(
    id: usize,
    pipeline: usize,
    value: &[u8],
    wait: Option<&str>,
) -> (Vec<u8>, Vec<usize>) {
    let mut batch = Vec::with_capacity(pipeline * (value.len() + 64));
    let mut digits = Vec::with_capacity(pipeline);
    let key = format!("k:{id}:{}", "0".repeat(KEY_DIGITS));
    // What follows the key's digits: the value's length line and the value.
    let after_key = format!("\r\n${}\r\n", value.len()).len() + value.len() + 2;
    for _ in 0..pipeline {
        push_cmd(&mut batch, &[b"SET", key.as_bytes(), value]);
        digits.push(batch.len() - after_key - KEY_DIGITS);
        if let Some(n) = wait {
            push_cmd(&mut batch, &[b"WAIT", n.as_bytes(), b"0"]);
        }
    }
    (batch, digits)
}

async fn drive(a: LoadgenArgs, id: usize, deadline: Instant) -> Result<ConnResult> {
    let mut sock = TcpStream::connect(a.addr)
        .await
        .with_context(|| format!("connecting to {}", a.addr))?;
    sock.set_nodelay(true)?;
    let value = vec![b'x'; a.value_size];
    let wait = a.wait_replicas.map(|n| n.to_string());
    let per_write = if wait.is_some() { 2 } else { 1 };
    let mut r = ConnResult::default();
    // The batch is rendered once, as redis-benchmark does; each round only
    // rewrites the keys' counters in place, so the generator spends its CPU
    // on the socket, not on formatting.
    let (mut batch, digits) = render_batch(id, a.pipeline, &value, wait.as_deref());
    let keys = a.keys.max(1);
    let mut inbuf = vec![0u8; 64 * 1024];
    let mut i = 0usize;
    while Instant::now() < deadline {
        for &at in &digits {
            put_digits(&mut batch[at..at + KEY_DIGITS], i % keys);
            i += 1;
        }
        let t0 = Instant::now();
        sock.write_all(&batch).await?;
        let want = a.pipeline * per_write;
        let (mut lines, mut carry_cr, mut at_line_start) = (0usize, false, true);
        while lines < want {
            let n = sock.read(&mut inbuf).await?;
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
                        r.first_error =
                            Some(String::from_utf8_lossy(&inbuf[j..j + end]).into_owned());
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
        r.lat_us
            .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        r.writes += a.pipeline as u64;
    }
    Ok(r)
}

pub fn run(a: LoadgenArgs) -> Result<()> {
    if a.pipeline == 0 || a.conns == 0 {
        bail!("--pipeline and --conns must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let results = rt.block_on(async {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(a.seconds);
        let set = tokio::task::LocalSet::new();
        let handles: Vec<_> = (0..a.conns)
            .map(|id| set.spawn_local(drive(a.clone(), id, deadline)))
            .collect();
        set.await;
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.context("a load connection panicked")??);
        }
        Ok::<_, anyhow::Error>((out, start.elapsed()))
    });
    let (results, elapsed) = results?;
    let writes: u64 = results.iter().map(|r| r.writes).sum();
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
        "writes": writes,
        "seconds": elapsed.as_secs_f64(),
        "ops": writes as f64 / elapsed.as_secs_f64(),
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
        let (mut batch, digits) = render_batch(7, 2, b"vv", Some("1"));
        put_digits(&mut batch[digits[0]..digits[0] + KEY_DIGITS], 42);
        put_digits(&mut batch[digits[1]..digits[1] + KEY_DIGITS], 1_234_567_890);
        let want = "*3\r\n$3\r\nSET\r\n$14\r\nk:7:0000000042\r\n$2\r\nvv\r\n\
                    *3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n\
                    *3\r\n$3\r\nSET\r\n$14\r\nk:7:1234567890\r\n$2\r\nvv\r\n\
                    *3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n";
        assert_eq!(String::from_utf8_lossy(&batch), want);
    }
}
