//! The byte streams a client connection runs over: plain TCP (the client
//! port) or TLS (the TLS port, decrypted in the connection's own task).
//! The connection loop in `server.rs` is generic over [`ClientIo`], so both
//! kinds get the same limits, AUTH, ACLs, pub/sub, blocking and MULTI.

use std::future::Future;
use std::io;
use std::net::Ipv4Addr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::Node;

/// What the connection loop needs of a client's stream.
pub trait ClientIo: AsyncWrite + Unpin {
    /// The socket carries the client's RESP bytes as they were sent, so the
    /// busy handler (`clients::serve_busy`) may read and answer requests
    /// straight from it while a script holds the loop. False for TLS: those
    /// bytes are encrypted, and a reply written beside the TLS session
    /// would corrupt it.
    const RAW: bool;

    /// The TCP socket underneath (CLIENT KILL shuts it down).
    fn tcp(&self) -> &TcpStream;

    /// Reads what is available into `buf` (0: the peer closed). Cancel
    /// safe: it is raced against pub/sub deliveries and blocking wakeups.
    fn read_some(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>>;

    /// Writes `buf` whole, and for TLS the records it made.
    fn send(&mut self, buf: &[u8]) -> impl Future<Output = io::Result<()>> {
        async move {
            self.write_all(buf).await?;
            self.flush().await
        }
    }

    /// Serves the rest of the connection as a replica's stream (TREPLICATE).
    fn serve_replica(
        &mut self,
        node: &std::rc::Rc<Node>,
        rest: Vec<u8>,
        args: Vec<Vec<u8>>,
    ) -> impl Future<Output = io::Result<()>>;
}

/// Room kept free in the input buffer before a read.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
}

impl ClientIo for TcpStream {
    const RAW: bool = true;

    fn tcp(&self) -> &TcpStream {
        self
    }

    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        read_tcp(self, buf).await
    }

    async fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        // Flushing a TcpStream does nothing: skip the call.
        self.write_all(buf).await
    }

    async fn serve_replica(
        &mut self,
        node: &std::rc::Rc<Node>,
        rest: Vec<u8>,
        args: Vec<Vec<u8>>,
    ) -> io::Result<()> {
        super::replication::serve_replica(node, self, rest, args).await
    }
}

impl ClientIo for TlsStream<TcpStream> {
    const RAW: bool = false;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        make_room(buf);
        // A TLS record read but not yet whole stays in the session when
        // this is cancelled, so nothing is lost.
        self.read_buf(buf).await
    }

    /// The primary streams to replicas through their raw sockets (see
    /// `replication::push_to_replicas`), so a replica that came in over TLS
    /// is bridged to a loopback socket pair for that one long-lived link;
    /// client traffic never takes this path.
    async fn serve_replica(
        &mut self,
        node: &std::rc::Rc<Node>,
        rest: Vec<u8>,
        args: Vec<Vec<u8>>,
    ) -> io::Result<()> {
        let (mut near, mut far) = loopback_pair().await?;
        let serve = async move {
            let r = super::replication::serve_replica(node, &mut near, rest, args).await;
            // Ends the bridge: the copy sees the far end close.
            drop(near);
            r
        };
        let mut serve = std::pin::pin!(serve);
        let mut copy = Box::pin(tokio::io::copy_bidirectional(self, &mut far));
        tokio::select! {
            r = &mut serve => return r,
            _ = &mut copy => {}
        }
        // The replica went away (or the bridge failed): close the near
        // side's peer so the streaming ends, and let it clean up.
        drop(copy);
        drop(far);
        serve.await
    }
}

/// A connected pair of loopback TCP sockets (for bridging a TLS stream to
/// code that works on a socket).
pub async fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (near, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let near = near?;
    let (far, from) = accepted?;
    // Only our own connection may become the other end.
    if near.local_addr()? != from {
        return Err(io::Error::other("a stranger took the loopback bridge"));
    }
    let _ = near.set_nodelay(true);
    let _ = far.set_nodelay(true);
    Ok((near, far))
}

/// Reads what the socket holds into `buf` (0: the peer closed).
///
/// A read that leaves part of the buffer unfilled has drained the socket, so
/// it clears the readiness at once: the next call then parks until epoll
/// reports new data instead of first spending a `read` that returns EAGAIN.
/// With one request per round trip (`-P 1`) that is one syscall in three.
/// Clearing is safe: the socket is edge-triggered, and data arriving after
/// the read raises a new edge that the driver sees at its next poll (on this
/// single thread, nothing polls it between the read and the clear).
async fn read_tcp(sock: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    make_room(buf);
    let fd = sock.as_raw_fd();
    loop {
        sock.readable().await?;
        let mut got = None;
        let res = sock.try_io(tokio::io::Interest::READABLE, || {
            let spare = buf.spare_capacity_mut();
            // SAFETY: `spare` is writable memory of `spare.len()` bytes owned
            // by `buf`; read(2) writes at most that many.
            let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            got = Some(n);
            if n > 0 && n < spare.len() {
                // Drained: tell tokio so (this is not an error to the caller).
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (got, res) {
            (Some(n), _) => {
                // SAFETY: read(2) initialized the first `n` spare bytes.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
            (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (None, Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            (None, Err(e)) => return Err(e),
            (None, Ok(())) => continue,
        }
    }
}
