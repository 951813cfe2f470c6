//! A TCP proxy a test can cut: stands between a replica and its primary so
//! a test can isolate the primary from its replicas without touching either
//! process. It can also hold back the client's bytes from the moment they
//! contain a pattern (a given command), until the test lets them through.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    /// Connections stay open but nothing gets through (a silent partition).
    stalled: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    hold: Arc<Hold>,
}

/// Client bytes containing `pattern` wait while `pattern` is set and
/// `released` is not; `holding` says that some do.
#[derive(Default)]
struct Hold {
    pattern: Mutex<Option<Vec<u8>>>,
    holding: AtomicBool,
    released: AtomicBool,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards every connection to `target_port`.
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let cut = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let st2 = stalled.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (c2, s2, k2) = (cut.clone(), stop.clone(), conns.clone());
        let hold = Arc::new(Hold::default());
        let h2 = hold.clone();
        thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if c2.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        {
                            let mut k = k2.lock().unwrap_or_else(|p| p.into_inner());
                            if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                                k.push(a);
                                k.push(b);
                            }
                        }
                        pump(&client, &server, c2.clone(), st2.clone(), Some(h2.clone()));
                        pump(&server, &client, c2.clone(), st2.clone(), None);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            cut,
            stalled,
            conns,
            stop,
            hold,
        }
    }

    /// From now on, client bytes that contain `pattern` are held back (with
    /// everything after them on that connection) until [`Proxy::release`].
    pub fn hold_at(&self, pattern: &[u8]) {
        self.hold.released.store(false, Ordering::SeqCst);
        *self.hold.pattern.lock().unwrap_or_else(|p| p.into_inner()) = Some(pattern.to_vec());
    }

    /// Whether bytes are being held back.
    pub fn holding(&self) -> bool {
        self.hold.holding.load(Ordering::SeqCst)
    }

    /// Lets held bytes through, and holds nothing more.
    pub fn release(&self) {
        *self.hold.pattern.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.hold.released.store(true, Ordering::SeqCst);
    }

    /// Drops every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut k = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for s in k.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Keeps connections open but lets nothing through: the primary hears
    /// nothing and learns nothing (no FIN, no RST).
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Heals the partition: stalled connections (whose streams lost data)
    /// are closed, new connections go through.
    pub fn restore(&self) {
        if self.stalled.swap(false, Ordering::SeqCst) {
            self.cut();
        }
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn pump(
    from: &TcpStream,
    to: &TcpStream,
    cut: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    hold: Option<Arc<Hold>>,
) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if stalled.load(Ordering::SeqCst) {
                continue;
            }
            if let Some(h) = &hold {
                let matches = h
                    .pattern
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == &p[..]));
                if matches {
                    h.holding.store(true, Ordering::SeqCst);
                    while !h.released.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(5));
                    }
                    h.holding.store(false, Ordering::SeqCst);
                }
            }
            if cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
