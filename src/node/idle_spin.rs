//! Busy-polling for a short window after the last client read.
//!
//! Under a request/reply load (one command per round trip, `-P 1`) the
//! loop runs out of work between replies and sleeps in `epoll_wait`, so the
//! client's next write has to wake it: on a VM that wakeup (an IPI and a
//! scheduler switch on both sides) costs the *client's* core as much as
//! serving the command costs ours, and the client is what limits such a
//! load. While the window is open a task yields in a loop instead, which
//! makes the runtime poll its sockets with `epoll_wait(0)` rather than
//! sleep: a write finds nobody to wake. The window reopens on every read,
//! so an idle node spins once for the window and then sleeps; a node with
//! a request every millisecond spends at most window/1 ms of a core on it.
//! `--idle-spin-us 0` turns it off.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub struct IdleSpin {
    window: Duration,
    /// Reads seen so far; the spinner watches it change.
    activity: Cell<u64>,
    spinning: Cell<bool>,
    wake: Notify,
}

impl IdleSpin {
    /// None when `window_us` is 0 (spinning off).
    pub fn new(window_us: u64) -> Option<Rc<Self>> {
        (window_us > 0).then(|| {
            Rc::new(Self {
                window: Duration::from_micros(window_us),
                activity: Cell::new(0),
                spinning: Cell::new(false),
                wake: Notify::new(),
            })
        })
    }

    /// A client read: (re)opens the window.
    #[inline]
    pub fn touch(&self) {
        self.activity.set(self.activity.get().wrapping_add(1));
        if !self.spinning.get() {
            self.spinning.set(true);
            self.wake.notify_one();
        }
    }

    /// The spinner task: sleeps until a read, then yields until no read has
    /// come for the window. It stops early while `waiting_on_others` says
    /// the loop waits for work of another thread or process (an fsync, a
    /// replica's acknowledgement): that is what wakes it then, and on a
    /// shared core spinning would only delay that work.
    pub async fn run(self: Rc<Self>, waiting_on_others: impl Fn() -> bool) {
        loop {
            self.wake.notified().await;
            let mut seen = self.activity.get();
            let mut quiet_since = Instant::now();
            loop {
                // A yielded task makes the current-thread runtime poll the
                // driver without blocking before it runs the task again.
                tokio::task::yield_now().await;
                let now = self.activity.get();
                if now != seen {
                    seen = now;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= self.window {
                    break;
                }
                if waiting_on_others() {
                    break;
                }
            }
            self.spinning.set(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn spins_after_a_read_then_sleeps_after_the_window_and_stops_for_other_work() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime builds");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            assert!(IdleSpin::new(0).is_none(), "0 turns spinning off");
            let spin = IdleSpin::new(2_000).expect("a window");
            let other = Rc::new(Cell::new(false));
            let o = other.clone();
            tokio::task::spawn_local(spin.clone().run(move || o.get()));
            settle().await;
            assert!(!spin.spinning.get(), "no read yet: asleep");
            spin.touch();
            settle().await;
            assert!(spin.spinning.get(), "a read opens the window");
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!spin.spinning.get(), "no read for the window: asleep again");
            spin.touch();
            settle().await;
            assert!(spin.spinning.get());
            other.set(true);
            settle().await;
            assert!(
                !spin.spinning.get(),
                "waiting on another thread's work ends the spin at once"
            );
        });
    }
}
