//! The node's connected clients, for CLIENT LIST and CLIENT KILL: what each
//! connection says about itself, and its socket, which CLIENT KILL shuts
//! down (the connection's next read then ends it, so the hot read path
//! needs no extra wakeup).

use std::os::fd::RawFd;
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
}

#[derive(Default)]
pub struct Clients {
    by_id: HashMap<u64, ClientEntry>,
}

impl Clients {
    pub fn register(&mut self, id: u64, fd: RawFd, addr: String) {
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
