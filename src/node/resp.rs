//! RESP2/RESP3 on the wire: the request parser, the reply writer, and a reply
//! parser for our own clients.
//!
//! Requests are parsed check-then-parse, without copying: [`parse_request`]
//! either finds a complete command in the buffer and records where each
//! argument lies, or says more bytes are needed. A malformed frame yields a
//! [`ProtocolError`] that says whether the stream can be resynchronized (the
//! bad line is skipped and parsing continues) or the connection must close.

use std::ops::Range;

/// Longest inline command line (Redis: PROTO_INLINE_MAX_SIZE).
pub const MAX_INLINE: usize = 64 * 1024;
/// Most arguments in one multibulk request (Redis accepts 1024*1024).
pub const MAX_ARGS: usize = 1024 * 1024;
/// Largest bulk string (Redis' default proto-max-bulk-len).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// Before AUTH, at most this many arguments (Redis since CVE-2021-32675):
/// a peer without the password cannot make the node buffer much.
pub const UNAUTH_MAX_ARGS: usize = 10;
/// Before AUTH, the largest bulk string (Redis: 16384).
pub const UNAUTH_MAX_BULK: usize = 16 * 1024;

/// What went wrong in a request and how far to skip to resynchronize.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {message}")]
pub struct ProtocolError {
    pub message: String,
    /// Bytes to discard to reach the next plausible frame start, or `None`
    /// when the stream cannot be resynchronized and the connection must close.
    pub skip: Option<usize>,
}

impl ProtocolError {
    fn resync(message: impl Into<String>, skip: usize) -> Self {
        Self {
            message: message.into(),
            skip: Some(skip),
        }
    }
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            skip: None,
        }
    }
}

/// Result of looking for one request at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Incomplete,
    /// A command of `args.len()` arguments ends after this many bytes.
    Command(usize),
    /// An empty line or `*0`/`*-1`: consume this many bytes, nothing to run.
    Empty(usize),
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        if nl > 0 && buf[nl - 1] == b'\r' {
            return Some(nl - 1);
        }
        i = nl + 1;
    }
    None
}

fn parse_int(digits: &[u8]) -> Option<i64> {
    // 20 bytes: a sign and 19 digits (i64::MIN is a valid reply integer).
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let (neg, digits) = match digits[0] {
        b'-' => (true, &digits[1..]),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulated with the final sign, so i64::MIN does not overflow.
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = (d - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// Parses one request (multibulk or inline) at the start of `buf`, storing the
/// byte range of every argument in `args`, for an authenticated client.
pub fn parse_request(buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Parsed, ProtocolError> {
    parse_request_as(buf, args, true)
}

/// [`parse_request`] for a client that has or has not authenticated: before
/// AUTH, a multibulk of more than [`UNAUTH_MAX_ARGS`] arguments or a bulk of
/// more than [`UNAUTH_MAX_BULK`] bytes closes the connection at its header,
/// before any of its payload is buffered (Redis' messages and order: the
/// absolute maximum first, then the pre-AUTH one).
pub fn parse_request_as(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
    authenticated: bool,
) -> Result<Parsed, ProtocolError> {
    args.clear();
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    if buf[0] == b'*' {
        parse_multibulk(buf, args, authenticated)
    } else {
        parse_inline(buf, args)
    }
}

fn parse_multibulk(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
    authenticated: bool,
) -> Result<Parsed, ProtocolError> {
    let Some(end) = find_crlf(buf, 1) else {
        if buf.len() > MAX_INLINE {
            return Err(ProtocolError::fatal("too big mbulk count string"));
        }
        return Ok(Parsed::Incomplete);
    };
    let count = match parse_int(&buf[1..end]) {
        Some(n) if n <= MAX_ARGS as i64 => n,
        Some(_) => return Err(ProtocolError::fatal("invalid multibulk length")),
        None => return Err(ProtocolError::resync("invalid multibulk length", end + 2)),
    };
    if !authenticated && count > UNAUTH_MAX_ARGS as i64 {
        return Err(ProtocolError::fatal("unauthenticated multibulk length"));
    }
    let mut pos = end + 2;
    if count <= 0 {
        return Ok(Parsed::Empty(pos));
    }
    for _ in 0..count {
        if pos >= buf.len() {
            return Ok(Parsed::Incomplete);
        }
        if buf[pos] != b'$' {
            let skip = find_crlf(buf, pos).map(|e| e + 2).unwrap_or(buf.len());
            return Err(ProtocolError::resync(
                format!("expected '$', got '{}'", buf[pos].escape_ascii()),
                skip,
            ));
        }
        let Some(lend) = find_crlf(buf, pos + 1) else {
            if buf.len() - pos > MAX_INLINE {
                return Err(ProtocolError::fatal("too big bulk count string"));
            }
            return Ok(Parsed::Incomplete);
        };
        let len = match parse_int(&buf[pos + 1..lend]) {
            Some(n) if (0..=MAX_BULK as i64).contains(&n) => n as usize,
            Some(n) if n > MAX_BULK as i64 => {
                return Err(ProtocolError::fatal("invalid bulk length"))
            }
            _ => return Err(ProtocolError::resync("invalid bulk length", lend + 2)),
        };
        if !authenticated && len > UNAUTH_MAX_BULK {
            return Err(ProtocolError::fatal("unauthenticated bulk length"));
        }
        let start = lend + 2;
        if buf.len() < start + len + 2 {
            return Ok(Parsed::Incomplete);
        }
        if &buf[start + len..start + len + 2] != b"\r\n" {
            return Err(ProtocolError::resync(
                "bulk string is not terminated by CRLF",
                start + len,
            ));
        }
        args.push(start..start + len);
        pos = start + len + 2;
    }
    Ok(Parsed::Command(pos))
}

/// Inline commands: space-separated words, with "double" and 'single' quotes
/// as redis-cli and Redis accept them. Lines may end in LF alone.
fn parse_inline(buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Parsed, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE {
            return Err(ProtocolError::fatal("too big inline request"));
        }
        return Ok(Parsed::Incomplete);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = &buf[..line_end];
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        if line[i] == b'"' || line[i] == b'\'' {
            // Quoted words keep their bytes verbatim; escapes are not
            // interpreted because the argument must stay a slice of the buffer.
            let q = line[i];
            let start = i + 1;
            let Some(close) = line[start..].iter().position(|&b| b == q) else {
                return Err(ProtocolError::resync(
                    "unbalanced quotes in request",
                    nl + 1,
                ));
            };
            args.push(start..start + close);
            i = start + close + 1;
            if i < line.len() && !line[i].is_ascii_whitespace() {
                return Err(ProtocolError::resync(
                    "closing quote must be followed by a space",
                    nl + 1,
                ));
            }
        } else {
            let start = i;
            while i < line.len() && !line[i].is_ascii_whitespace() {
                i += 1;
            }
            args.push(start..i);
        }
    }
    if args.is_empty() {
        Ok(Parsed::Empty(nl + 1))
    } else {
        Ok(Parsed::Command(nl + 1))
    }
}

/// Appends replies to a connection's output buffer, in RESP2 or RESP3.
///
/// The buffer is bounded: an append that would take it past `limit` is
/// dropped and marks the buffer `overflowed`, so no command can build an
/// unbounded reply; its caller discards the partial reply (see
/// `server::connection_loop`), and loops that produce many elements stop
/// early by checking [`ReplyBuf::full`].
pub struct ReplyBuf {
    pub buf: Vec<u8>,
    pub resp3: bool,
    /// Error replies written so far (INFO's total_error_replies).
    pub errors: u64,
    /// Most bytes `buf` may hold (set per command by the connection loop;
    /// `usize::MAX`: no bound, for the log applier).
    pub limit: usize,
    /// An append was dropped for `limit`; everything after it is too.
    pub overflowed: bool,
}

/// Framing bytes around one element at most: a type byte, an i64 and CRLF
/// twice (a bulk's header and its terminator), or a verbatim's `txt:`.
const FRAMING: usize = 32;

impl ReplyBuf {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(16 * 1024),
            resp3: false,
            errors: 0,
            limit: usize::MAX,
            overflowed: false,
        }
    }

    /// Whether the reply being built has passed the limit: a command that
    /// loops over many elements stops there, its reply is discarded anyway.
    pub fn full(&self) -> bool {
        self.overflowed
    }

    /// Room for `payload` bytes plus framing, or mark the buffer overflowed.
    fn room(&mut self, payload: usize) -> bool {
        if self.overflowed {
            return false;
        }
        let fits = self
            .buf
            .len()
            .checked_add(payload.saturating_add(FRAMING))
            .is_some_and(|end| end <= self.limit);
        if !fits {
            self.overflowed = true;
            return false;
        }
        let end = self.buf.len() + payload + FRAMING;
        if end > self.buf.capacity() {
            // Doubling, but never past the limit: a bounded reply must not
            // reserve up to twice its bound.
            let target = self.buf.capacity().saturating_mul(2).max(end);
            let target = target.min(self.limit).max(end);
            self.buf.reserve_exact(target - self.buf.len());
        }
        true
    }

    fn line(&mut self, prefix: u8, n: i64) {
        if !self.room(0) {
            return;
        }
        self.buf.push(prefix);
        let mut tmp = itoa_buf();
        self.buf.extend_from_slice(fmt_i64(&mut tmp, n));
        self.buf.extend_from_slice(b"\r\n");
    }

    fn raw(&mut self, bytes: &[u8]) {
        if self.room(bytes.len()) {
            self.buf.extend_from_slice(bytes);
        }
    }

    pub fn ok(&mut self) {
        self.raw(b"+OK\r\n");
    }
    pub fn simple(&mut self, s: &str) {
        if !self.room(s.len()) {
            return;
        }
        self.buf.push(b'+');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }
    /// An error reply; `msg` starts with its code (`ERR`, `WRONGTYPE`, …).
    pub fn error(&mut self, msg: &str) {
        self.errors += 1;
        if !self.room(msg.len()) {
            return;
        }
        self.buf.push(b'-');
        // CR/LF would break the frame: errors are single lines.
        for &b in msg.as_bytes() {
            self.buf
                .push(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.extend_from_slice(b"\r\n");
    }
    pub fn int(&mut self, n: i64) {
        self.line(b':', n);
    }
    pub fn bulk(&mut self, data: &[u8]) {
        if !self.room(data.len()) {
            return;
        }
        self.line(b'$', data.len() as i64);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }
    pub fn bulk_int(&mut self, n: i64) {
        let mut tmp = itoa_buf();
        let s = fmt_i64(&mut tmp, n);
        let s = s.to_vec();
        self.bulk(&s);
    }
    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        if self.resp3 {
            self.raw(b"_\r\n");
        } else {
            self.raw(b"$-1\r\n");
        }
    }
    /// A null array (`*-1` in RESP2), e.g. for a timed-out blocking pop.
    pub fn null_array(&mut self) {
        if self.resp3 {
            self.raw(b"_\r\n");
        } else {
            self.raw(b"*-1\r\n");
        }
    }
    pub fn array(&mut self, len: usize) {
        self.line(b'*', len as i64);
    }
    /// An out-of-band push (RESP3 `>`; an array in RESP2): pub/sub.
    pub fn push(&mut self, len: usize) {
        if self.resp3 {
            self.line(b'>', len as i64);
        } else {
            self.line(b'*', len as i64);
        }
    }
    /// A map of `len` pairs (RESP3 `%`, a flat array of 2×len in RESP2).
    pub fn map(&mut self, len: usize) {
        if self.resp3 {
            self.line(b'%', len as i64);
        } else {
            self.line(b'*', 2 * len as i64);
        }
    }
    /// A set (RESP3 `~`, an array in RESP2).
    pub fn set(&mut self, len: usize) {
        if self.resp3 {
            self.line(b'~', len as i64);
        } else {
            self.line(b'*', len as i64);
        }
    }
    /// A double: RESP3 `,`, a bulk string in RESP2.
    /// A score or other double reply, printed as Redis 7.0 does (`%.17g`).
    pub fn double(&mut self, v: f64) {
        let s = fmt_g17(v);
        if self.resp3 {
            if !self.room(s.len()) {
                return;
            }
            self.buf.push(b',');
            self.buf.extend_from_slice(s.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(s.as_bytes());
        }
    }
    /// A verbatim text (RESP3 `=txt:`), a bulk string in RESP2.
    pub fn verbatim(&mut self, text: &str) {
        if self.resp3 {
            if !self.room(text.len()) {
                return;
            }
            self.line(b'=', text.len() as i64 + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(text.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }
    pub fn bool_int(&mut self, b: bool) {
        self.int(b as i64);
    }
}

impl Default for ReplyBuf {
    fn default() -> Self {
        Self::new()
    }
}

type ItoaBuf = [u8; 20];
fn itoa_buf() -> ItoaBuf {
    [0u8; 20]
}

/// Formats an integer without allocating.
pub fn fmt_i64(buf: &mut ItoaBuf, n: i64) -> &[u8] {
    let mut v = n.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// Doubles as Redis prints them: `inf`, `-inf`, integers without a fraction,
/// otherwise the shortest representation that round-trips.
pub fn fmt_double(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if v.is_nan() {
        "nan".to_string()
    } else if v == v.trunc() && v.abs() < 1e17 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A double as C's `printf("%.17g")` prints it, as Redis 7.0 replies
/// with scores: 17 significant digits, trailing zeros dropped, exponent
/// form below 1e-4 and from 1e17 (`0.10000000000000001`, `1e+20`);
/// infinities `inf`/`-inf`.
pub fn fmt_g17(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if v.is_nan() {
        return "nan".to_string();
    }
    let sci = format!("{v:.16e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..17).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        // `exp` is the exponent after rounding to 17 digits, as in C.
        trim(&format!("{v:.*}", (16 - exp) as usize))
    }
}

/// A reply as our clients (the CLI, replication, tests) see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Frame>),
    Map(Vec<(Frame, Frame)>),
    Double(f64),
    Boolean(bool),
}

impl Frame {
    /// Parses one reply frame at the start of `buf`: `Ok(None)` when more
    /// bytes are needed, otherwise the frame and the bytes it used.
    pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let Some(end) = find_crlf(buf, 1) else {
            return Ok(None);
        };
        let line = &buf[1..end];
        let text = || String::from_utf8_lossy(line).into_owned();
        let int = || {
            parse_int(line).ok_or_else(|| ProtocolError::fatal(format!("bad integer '{}'", text())))
        };
        let next = end + 2;
        match buf[0] {
            b'+' => Ok(Some((Frame::Simple(text()), next))),
            b'-' => Ok(Some((Frame::Error(text()), next))),
            b':' => Ok(Some((Frame::Integer(int()?), next))),
            b'_' => Ok(Some((Frame::Null, next))),
            b'#' => Ok(Some((Frame::Boolean(line == b"t"), next))),
            b',' => {
                let v = match line {
                    b"inf" => f64::INFINITY,
                    b"-inf" => f64::NEG_INFINITY,
                    _ => text()
                        .parse()
                        .map_err(|_| ProtocolError::fatal(format!("bad double '{}'", text())))?,
                };
                Ok(Some((Frame::Double(v), next)))
            }
            b'$' | b'=' | b'!' => {
                let n = int()?;
                if n < 0 {
                    return Ok(Some((Frame::Null, next)));
                }
                let n = n as usize;
                if buf.len() < next + n + 2 {
                    return Ok(None);
                }
                let mut data = buf[next..next + n].to_vec();
                if buf[0] == b'=' && data.len() >= 4 {
                    data.drain(..4);
                }
                if buf[0] == b'!' {
                    return Ok(Some((
                        Frame::Error(String::from_utf8_lossy(&data).into_owned()),
                        next + n + 2,
                    )));
                }
                Ok(Some((Frame::Bulk(data), next + n + 2)))
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = int()?;
                if n < 0 {
                    return Ok(Some((Frame::Null, next)));
                }
                let pairs = matches!(buf[0], b'%' | b'|');
                let items = if pairs { 2 * n } else { n } as usize;
                let mut pos = next;
                let mut out = Vec::with_capacity(items.min(1024));
                for _ in 0..items {
                    match Frame::parse(&buf[pos..])? {
                        Some((f, used)) => {
                            out.push(f);
                            pos += used;
                        }
                        None => return Ok(None),
                    }
                }
                if buf[0] == b'|' {
                    // An attribute precedes the real reply; skip it.
                    return match Frame::parse(&buf[pos..])? {
                        Some((f, used)) => Ok(Some((f, pos + used))),
                        None => Ok(None),
                    };
                }
                if pairs {
                    let mut it = out.into_iter();
                    let mut map = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        map.push((k, v));
                    }
                    Ok(Some((Frame::Map(map), pos)))
                } else {
                    Ok(Some((Frame::Array(out), pos)))
                }
            }
            other => Err(ProtocolError::fatal(format!(
                "unexpected reply type byte '{}'",
                other.escape_ascii()
            ))),
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    encode_command_head(args, out);
    if let Some(last) = args.last() {
        out.extend_from_slice(last.as_ref());
        out.extend_from_slice(b"\r\n");
    }
}

/// [`encode_command`] up to the last argument's bytes: every argument but
/// the last, then the last one's length line. What follows on the wire is
/// that argument and CRLF, so a big last argument can be written from
/// where it is rather than copied into the command.
pub fn encode_command_head<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    len_line(b'*', args.len(), out);
    for (i, a) in args.iter().enumerate() {
        let a = a.as_ref();
        len_line(b'$', a.len(), out);
        if i + 1 < args.len() {
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// `*<n>\r\n` or `$<n>\r\n`, formatted in place (no String per number).
fn len_line(prefix: u8, n: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    out.push(prefix);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_encodes_as_resp_bulk_strings_and_its_head_stops_before_the_last_argument() {
        let payload = [b'x'; 300];
        let args = [&b"TMIGRATE"[..], b"APPLY", b"m1", b"7", &payload[..]];
        let mut head = Vec::new();
        encode_command_head(&args, &mut head);
        assert_eq!(
            head,
            b"*5\r\n$8\r\nTMIGRATE\r\n$5\r\nAPPLY\r\n$2\r\nm1\r\n$1\r\n7\r\n$300\r\n"
        );
        let mut whole = Vec::new();
        encode_command(&args, &mut whole);
        let (read, parsed) = words(&whole).expect("parses");
        assert_eq!(parsed, Parsed::Command(whole.len()));
        assert_eq!(read, args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
        let mut empty_last = Vec::new();
        encode_command(&[&b"SET"[..], b"k", b""], &mut empty_last);
        assert_eq!(empty_last, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    fn words(buf: &[u8]) -> Result<(Vec<Vec<u8>>, Parsed), ProtocolError> {
        let mut args = Vec::new();
        let p = parse_request(buf, &mut args)?;
        Ok((args.into_iter().map(|r| buf[r].to_vec()).collect(), p))
    }

    #[test]
    fn multibulk_complete_and_partial() {
        let req = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        let (w, p) = words(req).unwrap();
        assert_eq!(w, vec![b"GET".to_vec(), b"key".to_vec()]);
        assert_eq!(p, Parsed::Command(req.len()));
        for cut in 0..req.len() {
            assert_eq!(
                words(&req[..cut]).unwrap().1,
                Parsed::Incomplete,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn inline_with_quotes_and_lf_only() {
        let (w, p) = words(b"SET \"a b\" 'c'\n").unwrap();
        assert_eq!(w, vec![b"SET".to_vec(), b"a b".to_vec(), b"c".to_vec()]);
        assert_eq!(p, Parsed::Command(14));
        assert_eq!(words(b"\r\n").unwrap().1, Parsed::Empty(2));
        assert_eq!(words(b"PING\r\n").unwrap().0, vec![b"PING".to_vec()]);
    }

    #[test]
    fn malformed_frames_say_how_to_resync() {
        let e = parse_request(b"*x\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(e.skip, Some(4));
        assert!(e.message.contains("multibulk length"));
        let e = parse_request(b"*1\r\n$abc\r\nPING\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(e.skip, Some(10));
        let e = parse_request(b"*1\r\n$999999999999\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(e.skip, None);
        let e = parse_request(b"*1\r\n+OK\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(e.skip, Some(9));
        let long = vec![b'a'; MAX_INLINE + 1];
        assert_eq!(
            parse_request(&long, &mut Vec::new()).unwrap_err().skip,
            None
        );
    }

    #[test]
    fn unauthenticated_requests_are_limited_at_their_headers() {
        let mut args = Vec::new();
        let e = parse_request_as(b"*11\r\n", &mut args, false).unwrap_err();
        assert_eq!(e.message, "unauthenticated multibulk length");
        assert_eq!(e.skip, None);
        let e = parse_request_as(b"*1\r\n$16385\r\n", &mut args, false).unwrap_err();
        assert_eq!(e.message, "unauthenticated bulk length");
        assert_eq!(e.skip, None);
        // The absolute limit answers first, as in Redis.
        let e = parse_request_as(b"*1\r\n$999999999999\r\n", &mut args, false).unwrap_err();
        assert_eq!(e.message, "invalid bulk length");
        // At the limits, and after AUTH, the same requests parse.
        assert_eq!(
            parse_request_as(b"*10\r\n", &mut args, false).unwrap(),
            Parsed::Incomplete
        );
        assert_eq!(
            parse_request_as(b"*1\r\n$16384\r\n", &mut args, false).unwrap(),
            Parsed::Incomplete
        );
        assert_eq!(
            parse_request_as(b"*11\r\n", &mut args, true).unwrap(),
            Parsed::Incomplete
        );
    }

    #[test]
    fn reply_integers_span_i64() {
        for n in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
            let text = format!(":{n}\r\n");
            let (f, _) = Frame::parse(text.as_bytes()).unwrap().unwrap();
            assert_eq!(f, Frame::Integer(n));
        }
        assert!(Frame::parse(b":9223372036854775808\r\n").is_err());
        assert!(Frame::parse(b":-9223372036854775809\r\n").is_err());
    }

    #[test]
    fn reply_frames_round_trip() {
        let mut r = ReplyBuf::new();
        r.array(3);
        r.bulk(b"x");
        r.int(-7);
        r.null();
        let (f, used) = Frame::parse(&r.buf).unwrap().unwrap();
        assert_eq!(used, r.buf.len());
        assert_eq!(
            f,
            Frame::Array(vec![
                Frame::Bulk(b"x".to_vec()),
                Frame::Integer(-7),
                Frame::Null
            ])
        );
        let mut r3 = ReplyBuf::new();
        r3.resp3 = true;
        r3.map(1);
        r3.bulk(b"k");
        r3.double(1.5);
        let (f, _) = Frame::parse(&r3.buf).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::Map(vec![(Frame::Bulk(b"k".to_vec()), Frame::Double(1.5))])
        );
    }

    #[test]
    fn doubles_print_as_redis_7_0_prints_scores() {
        // What redis-server 7.0 answers to ZSCORE for these scores.
        for (v, text) in [
            (0.1, "0.10000000000000001"),
            (0.3, "0.29999999999999999"),
            (2.5, "2.5"),
            (-3.0, "-3"),
            (1e16, "10000000000000000"),
            (1e17, "1e+17"),
            (1e20, "1e+20"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1.5e-7, "1.4999999999999999e-07"),
            (0.0001, "0.0001"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(fmt_g17(v), text, "{v:e}");
        }
    }

    #[test]
    fn replies_past_the_limit_are_dropped_and_marked() {
        let mut r = ReplyBuf::new();
        r.limit = 100;
        r.array(1000);
        let mut written = 0;
        for _ in 0..1000 {
            r.bulk(b"0123456789");
            if r.full() {
                break;
            }
            written += 1;
        }
        assert!(r.full());
        assert!(r.buf.len() <= 100, "{} bytes", r.buf.len());
        assert!(
            r.buf.capacity() <= 16 * 1024,
            "no reservation past the first"
        );
        let mut big = ReplyBuf::new();
        big.limit = 1_000_000;
        while !big.full() {
            big.bulk(&[b'x'; 1000]);
        }
        assert!(big.buf.capacity() <= 1_000_000, "{}", big.buf.capacity());
        assert!(written > 0 && written < 10, "{written} elements fit");
        // Once overflowed, nothing more is appended, even what would fit.
        let len = r.buf.len();
        r.ok();
        assert_eq!(r.buf.len(), len);
    }

    #[test]
    fn doubles_format_like_redis() {
        assert_eq!(fmt_double(3.0), "3");
        assert_eq!(fmt_double(1.5), "1.5");
        assert_eq!(fmt_double(f64::INFINITY), "inf");
        assert_eq!(fmt_double(-0.25), "-0.25");
    }

    proptest::proptest! {
        /// Whatever bytes arrive, the parser never panics and never claims to
        /// consume more than it was given.
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut args = Vec::new();
            match parse_request(&data, &mut args) {
                Ok(Parsed::Command(n)) | Ok(Parsed::Empty(n)) => {
                    proptest::prop_assert!(n <= data.len());
                    for r in &args { proptest::prop_assert!(r.end <= n); }
                }
                Ok(Parsed::Incomplete) => {}
                Err(e) => if let Some(s) = e.skip { proptest::prop_assert!(s <= data.len() && s > 0); }
            }
        }
    }
}
