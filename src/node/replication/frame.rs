//! The replication stream's wire format. Frame types, primary → replica.
//! A frame is `[type u8][len u32 LE][payload]`.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;

/// Encoded WAL records, back to back.
pub const RECORDS: u8 = b'R';
/// epoch u64, primary's last LSN u64, primary's send time (ms) u64.
pub const HEARTBEAT: u8 = b'H';
/// A chunk of a snapshot file (full resync).
pub const SNAPSHOT: u8 = b'S';
/// End of the snapshot.
pub const SNAPSHOT_END: u8 = b'E';
/// The primary's epoch history (JSON).
pub const HISTORY: u8 = b'Y';

/// Largest frame a replica accepts.
const MAX_FRAME: usize = 256 * 1024 * 1024;

pub(super) fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

pub(super) async fn read_line(
    rd: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
) -> std::io::Result<String> {
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..pos]).trim_end().to_string();
            buf.advance(pos + 1);
            return Ok(line);
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("handshake reply too long"));
        }
        let mut tmp = [0u8; 4096];
        let n = rd.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Reads one frame: (type, payload). Cancel-safe: partial input stays in
/// `buf`. The payload is split off the buffer without copying, and the
/// frames behind it stay where they are (no shift of the rest per frame).
pub(crate) async fn read_frame(
    rd: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
) -> std::io::Result<(u8, Bytes)> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_FRAME {
                return Err(std::io::Error::other(format!("frame of {len} bytes")));
            }
            if buf.len() >= 5 + len {
                let kind = buf[0];
                let mut frame = buf.split_to(5 + len);
                frame.advance(5);
                return Ok((kind, frame.freeze()));
            }
        }
        buf.reserve(64 * 1024);
        let n = rd.read_buf(buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if b.len() >= at + 8 {
        a.copy_from_slice(&b[at..at + 8]);
    }
    u64::from_le_bytes(a)
}
