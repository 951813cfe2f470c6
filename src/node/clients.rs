//! The node's connected clients, for CLIENT LIST and CLIENT KILL: what each
//! connection says about itself, and its socket, which CLIENT KILL shuts
//! down (the connection's next read then ends it, so the hot read path
//! needs no extra wakeup).

use std::cell::Cell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Instant;

use hashbrown::HashMap;

pub struct ClientEntry {
    pub fd: RawFd,
    pub addr: String,
    pub name: Option<Vec<u8>>,
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
    pub resp3: bool,
    pub since: Instant,
    /// The connection waits for input with nothing buffered (the busy
    /// handler may answer its requests while a script runs).
    pub idle: Rc<Cell<bool>>,
}

#[derive(Default)]
pub struct Clients {
    by_id: HashMap<u64, ClientEntry>,
}

impl Clients {
    pub fn register(&mut self, id: u64, fd: RawFd, addr: String, idle: Rc<Cell<bool>>) {
        self.by_id.insert(
            id,
            ClientEntry {
                fd,
                addr,
                name: None,
                lib_name: None,
                lib_ver: None,
                resp3: false,
                since: Instant::now(),
                idle,
            },
        );
    }

    pub fn remove(&mut self, id: u64) {
        self.by_id.remove(&id);
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut ClientEntry> {
        self.by_id.get_mut(&id)
    }

    /// Every client, by ID.
    pub fn list(&self) -> Vec<(u64, &ClientEntry)> {
        let mut v: Vec<_> = self.by_id.iter().map(|(id, e)| (*id, e)).collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// Shuts the socket of client `id` down: its connection ends at its
    /// next read. False when there is no such client.
    pub fn kill(&self, id: u64) -> bool {
        let Some(e) = self.by_id.get(&id) else {
            return false;
        };
        // SAFETY: `fd` is the socket of a live connection (entries are
        // removed before their socket is closed, on this same thread).
        unsafe { libc::shutdown(e.fd, libc::SHUT_RDWR) };
        true
    }

    /// The sockets of the idle connections other than `except`.
    pub fn idle_sockets(&self, except: u64) -> Vec<(RawFd, Rc<Cell<bool>>)> {
        self.by_id
            .iter()
            .filter(|(id, _)| **id != except)
            .map(|(_, e)| (e.fd, e.idle.clone()))
            .collect()
    }
}

/// What a client gets while a script runs past the time limit.
const BUSY: &[u8] =
    b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n";
/// The same while a function (FCALL) runs: FUNCTION KILL stops it.
const BUSY_FUNCTION: &[u8] =
    b"-BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.\r\n";
const UNKILLABLE: &[u8] = b"-UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.\r\n";

/// Answers, from inside a script that runs past `lua-time-limit`, the
/// requests idle clients sent: SCRIPT KILL stops the script (unless it
/// wrote), anything else gets `-BUSY`. The loop is held by the script, so
/// these connections' tasks sit in their read with nothing buffered: the
/// requests are taken straight from their sockets, whole ones only (a
/// partial one stays for the task), and the replies written straight to
/// them.
pub fn serve_busy(sockets: &[(RawFd, Rc<Cell<bool>>)], running: &super::lua::Running) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut ranges = Vec::new();
    for (fd, idle) in sockets {
        if !idle.get() {
            continue;
        }
        // SAFETY: a live connection's socket (see `kill`); the buffer is
        // ours and `len` bytes long.
        let n = unsafe {
            libc::recv(
                *fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            continue;
        }
        let data = &buf[..n as usize];
        let (mut used, mut replies) = (0, Vec::new());
        while used < data.len() {
            match super::resp::parse_request(&data[used..], &mut ranges) {
                Ok(super::resp::Parsed::Command(u)) => {
                    let arg = |i: usize| ranges.get(i).map(|r| &data[used..][r.clone()]);
                    // SCRIPT KILL stops a script, FUNCTION KILL a function.
                    let function = running.function.get();
                    let family: &[u8] = if function { b"function" } else { b"script" };
                    let kill = arg(0).is_some_and(|a| a.eq_ignore_ascii_case(family))
                        && arg(1).is_some_and(|a| a.eq_ignore_ascii_case(b"kill"));
                    if !kill {
                        replies.extend_from_slice(if function { BUSY_FUNCTION } else { BUSY });
                    } else if running.wrote.get() {
                        replies.extend_from_slice(UNKILLABLE);
                    } else {
                        running.kill.set(true);
                        replies.extend_from_slice(b"+OK\r\n");
                    }
                    used += u;
                }
                Ok(super::resp::Parsed::Empty(u)) => used += u,
                _ => break,
            }
        }
        if used == 0 {
            continue;
        }
        // SAFETY: as above; the bytes read are the ones peeked.
        unsafe {
            libc::recv(*fd, buf.as_mut_ptr().cast(), used, libc::MSG_DONTWAIT);
            libc::send(
                *fd,
                replies.as_ptr().cast(),
                replies.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
        }
    }
}

/// A CLIENT LIST / CLIENT INFO line.
pub fn line(id: u64, e: &ClientEntry) -> String {
    let s = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    format!(
        "id={id} addr={} fd={} name={} age={} db=0 resp={} lib-name={} lib-ver={}\n",
        e.addr,
        e.fd,
        s(&e.name),
        e.since.elapsed().as_secs(),
        if e.resp3 { 3 } else { 2 },
        s(&e.lib_name),
        s(&e.lib_ver)
    )
}
