//! Load signals an autoscaler reads: the instantaneous command rate and the
//! hottest hash slot.
//!
//! The rate follows Redis' `instantaneous_ops_per_sec`: ten times a second
//! the totals the node already counts are sampled into a small ring, and the
//! rate is taken over the ring's span (about 1.5 s). Commands pay nothing
//! for it.
//!
//! Per slot, the node counts the keyed commands it served and their request
//! and reply bytes: three additions per keyed command, on a slot dispatch
//! had already computed. The hottest slot is judged over a window of 10 to
//! 20 s (two snapshots of the command counters, rotated every 10 s), and
//! reported only once the window holds enough keyed commands to mean
//! something. `CLUSTER SLOT-STATS` ([`slot_stats`]) reads the same counters.

pub mod slot_stats;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::slots::SLOTS;
use super::Node;

/// How often the command totals are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Samples kept: the rate spans the last 15 intervals (1.5 s).
const RING: usize = 16;
/// The hot-slot window rotates this often; a figure spans one to two of it.
pub const HOT_WINDOW: Duration = Duration::from_secs(10);
/// Fewer keyed commands than this in the window: no hot-slot figure (a
/// share of a handful of commands says nothing about load).
pub const HOT_MIN_COMMANDS: u64 = 100;

/// One sample of the node's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub commands: u64,
    pub writes: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Rates over the ring's span, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub ops: f64,
    pub writes: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
}

/// The last [`RING`] samples of [`Totals`].
#[derive(Debug)]
pub struct RateRing {
    samples: [(Option<Instant>, Totals); RING],
    /// Where the next sample goes.
    next: usize,
}

impl Default for RateRing {
    fn default() -> Self {
        Self {
            samples: [(None, Totals::default()); RING],
            next: 0,
        }
    }
}

impl RateRing {
    pub fn push(&mut self, at: Instant, totals: Totals) {
        self.samples[self.next] = (Some(at), totals);
        self.next = (self.next + 1) % RING;
    }

    /// The rates between the oldest and the newest sample (zero until there
    /// are two samples apart in time).
    pub fn rates(&self) -> Rates {
        let newest = self.samples[(self.next + RING - 1) % RING];
        // The oldest present sample: the slot about to be overwritten, or
        // the first one while the ring is filling.
        let oldest = if self.samples[self.next].0.is_some() {
            self.samples[self.next]
        } else {
            self.samples[0]
        };
        let (Some(t1), Some(t0)) = (newest.0, oldest.0) else {
            return Rates::default();
        };
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        // Saturating: a counter never goes back, but a reset must not
        // show as an enormous rate.
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        let (a, b) = (oldest.1, newest.1);
        Rates {
            ops: rate(a.commands, b.commands),
            writes: rate(a.writes, b.writes),
            bytes_in: rate(a.bytes_in, b.bytes_in),
            bytes_out: rate(a.bytes_out, b.bytes_out),
        }
    }
}

/// The hottest slot of a window, as `/v1/status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HotSlot {
    pub slot: u16,
    /// Its share of the keyed commands this node served in the window (0-1).
    pub share: f64,
    /// Its keyed commands per second over the window.
    pub ops_per_sec: f64,
    /// Length of the window the figures cover.
    pub window_seconds: f64,
}

/// Two snapshots of the per-slot command counters, `HOT_WINDOW` apart: a
/// figure covers from the older one to now, so it always spans at least one
/// full window (once the node has run that long) and reflects the newest
/// commands.
#[derive(Debug)]
pub struct HotWindow {
    older: Box<[u64]>,
    older_at: Instant,
    newer: Box<[u64]>,
    newer_at: Instant,
}

impl HotWindow {
    pub fn new(now: Instant) -> Self {
        Self {
            older: vec![0; SLOTS].into_boxed_slice(),
            older_at: now,
            newer: vec![0; SLOTS].into_boxed_slice(),
            newer_at: now,
        }
    }

    /// Rotates once `HOT_WINDOW` has passed since the newer snapshot:
    /// `count(slot)` gives the running counter of each slot.
    pub fn maybe_rotate(&mut self, now: Instant, count: impl Fn(usize) -> u64) {
        if now.saturating_duration_since(self.newer_at) < HOT_WINDOW {
            return;
        }
        std::mem::swap(&mut self.older, &mut self.newer);
        self.older_at = self.newer_at;
        for (slot, c) in self.newer.iter_mut().enumerate() {
            *c = count(slot);
        }
        self.newer_at = now;
    }

    /// The slot with the most keyed commands since the older snapshot (the
    /// lowest on a tie), or None under [`HOT_MIN_COMMANDS`].
    pub fn hottest(&self, now: Instant, count: impl Fn(usize) -> u64) -> Option<HotSlot> {
        let (mut total, mut best, mut best_n) = (0u64, 0usize, 0u64);
        for (slot, &base) in self.older.iter().enumerate() {
            let n = count(slot).saturating_sub(base);
            total += n;
            if n > best_n {
                (best, best_n) = (slot, n);
            }
        }
        if total < HOT_MIN_COMMANDS {
            return None;
        }
        let secs = now.saturating_duration_since(self.older_at).as_secs_f64();
        Some(HotSlot {
            slot: best as u16,
            share: best_n as f64 / total as f64,
            ops_per_sec: if secs > 0.0 {
                best_n as f64 / secs
            } else {
                0.0
            },
            window_seconds: secs,
        })
    }
}

/// What one slot served (since the node started).
#[derive(Debug, Default)]
pub struct SlotCounters {
    pub commands: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
}

/// The node's load state.
pub struct Load {
    slots: Box<[SlotCounters]>,
    ring: RefCell<RateRing>,
    hot: RefCell<HotWindow>,
    /// Indexes of the write commands in the command table (their calls add
    /// up to the write count).
    write_commands: Vec<usize>,
}

impl Load {
    pub fn new(commands: &super::cmd::Commands) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| SlotCounters::default()).collect(),
            ring: RefCell::new(RateRing::default()),
            hot: RefCell::new(HotWindow::new(Instant::now())),
            write_commands: (0..commands.len())
                .filter(|&i| commands.spec(i).is_write())
                .collect(),
        }
    }

    /// Counts one keyed command served on `slot` (the hot path: no
    /// allocation, no clock).
    #[inline]
    pub fn count(&self, slot: u16, bytes_in: usize, bytes_out: usize) {
        // The mask keeps the index in range without a bounds check.
        let c = &self.slots[slot as usize & (SLOTS - 1)];
        c.commands.set(c.commands.get() + 1);
        c.bytes_in.set(c.bytes_in.get() + bytes_in as u64);
        c.bytes_out.set(c.bytes_out.get() + bytes_out as u64);
    }

    pub fn slot(&self, slot: u16) -> &SlotCounters {
        &self.slots[slot as usize & (SLOTS - 1)]
    }

    /// The current rates (Redis' `instantaneous_*`).
    pub fn rates(&self) -> Rates {
        self.ring.borrow().rates()
    }

    /// The hottest slot of the current window, if it holds enough commands.
    pub fn hot_slot(&self) -> Option<HotSlot> {
        self.hot
            .borrow()
            .hottest(Instant::now(), |s| self.slots[s].commands.get())
    }

    fn sample(&self, node: &Node, now: Instant) {
        let st = &node.stats;
        let writes = self.write_commands.iter().map(|&i| st.calls[i].get()).sum();
        self.ring.borrow_mut().push(
            now,
            Totals {
                commands: st.commands_processed.get(),
                writes,
                bytes_in: st.net_input_bytes.get(),
                bytes_out: st.net_output_bytes.get(),
            },
        );
        self.hot
            .borrow_mut()
            .maybe_rotate(now, |s| self.slots[s].commands.get());
    }
}

/// The hot slot as a gauge labelled with the slot: the family is always
/// declared, the sample present only while there is a figure.
pub fn render_metrics(node: &Node, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP tessera_hot_slot_share Share of this node's keyed commands carried by its busiest slot over the last 10-20 s (absent under {HOT_MIN_COMMANDS} keyed commands).\n# TYPE tessera_hot_slot_share gauge"
    );
    if let Some(h) = node.load.hot_slot() {
        let _ = writeln!(
            out,
            "tessera_hot_slot_share{{slot=\"{}\"}} {}",
            h.slot, h.share
        );
    }
}

/// Samples the totals every [`SAMPLE_EVERY`] for as long as the node runs.
pub async fn sample_loop(node: Rc<Node>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    // After a stall (a long command), go on from now: a burst of samples
    // taken microseconds apart would add nothing.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        node.load.sample(&node, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(commands: u64, writes: u64) -> Totals {
        Totals {
            commands,
            writes,
            bytes_in: commands * 30,
            bytes_out: commands * 5,
        }
    }

    #[test]
    fn rate_ring_is_zero_until_two_samples_apart_in_time() {
        let t0 = Instant::now();
        let mut r = RateRing::default();
        assert_eq!(r.rates(), Rates::default());
        r.push(t0, totals(1000, 0));
        assert_eq!(r.rates(), Rates::default());
        r.push(t0, totals(2000, 0));
        assert_eq!(r.rates().ops, 0.0, "no time between the samples");
        r.push(t0 + Duration::from_millis(100), totals(2000, 0));
        assert_eq!(r.rates().ops, 10_000.0, "1000 commands over 100 ms");
    }

    #[test]
    fn rate_ring_spans_its_last_fifteen_intervals() {
        let t0 = Instant::now();
        let mut r = RateRing::default();
        // 1000 ops/s (100 a tick) for 3 s, then 5000 ops/s (500 a tick).
        let mut total = 0;
        let mut writes = 0;
        for i in 0..30 {
            r.push(t0 + SAMPLE_EVERY * i, totals(total, writes));
            total += 100;
            writes += 10;
        }
        let steady = r.rates();
        assert!((steady.ops - 1000.0).abs() < 1e-6, "{steady:?}");
        assert!((steady.writes - 100.0).abs() < 1e-6, "{steady:?}");
        assert!((steady.bytes_in - 30_000.0).abs() < 1e-6, "{steady:?}");
        assert!((steady.bytes_out - 5_000.0).abs() < 1e-6, "{steady:?}");
        for i in 30..38 {
            r.push(t0 + SAMPLE_EVERY * i, totals(total, writes));
            total += 500;
        }
        // 8 samples into the change: 7 of the 15 intervals at the new rate.
        let mixed = r.rates().ops;
        let want = (8.0 * 100.0 + 7.0 * 500.0) / 1.5;
        assert!((mixed - want).abs() < 1e-6, "{mixed} vs {want}");
        for i in 38..60 {
            r.push(t0 + SAMPLE_EVERY * i, totals(total, writes));
            total += 500;
        }
        let after = r.rates();
        assert!((after.ops - 5000.0).abs() < 1e-6, "{after:?}");
        assert_eq!(after.writes, 0.0, "no writes in the last 1.5 s");
    }

    #[test]
    fn rate_ring_uses_the_real_time_between_samples() {
        let t0 = Instant::now();
        let mut r = RateRing::default();
        r.push(t0, totals(0, 0));
        // The sampler was held up: 1000 commands over 2 s, not 100 ms.
        r.push(t0 + Duration::from_secs(2), totals(1000, 0));
        assert!((r.rates().ops - 500.0).abs() < 1e-6);
        // A counter that went back (never, but) reads as idle.
        r.push(t0 + Duration::from_secs(3), totals(0, 0));
        assert_eq!(r.rates().ops, 0.0);
    }

    /// Running counters per slot for the window tests.
    struct Counters(Vec<u64>);

    impl Counters {
        fn new() -> Self {
            Self(vec![0; SLOTS])
        }
        fn add(&mut self, slot: usize, n: u64) {
            self.0[slot] += n;
        }
        fn get(&self) -> impl Fn(usize) -> u64 + '_ {
            |s| self.0[s]
        }
    }

    #[test]
    fn hot_window_finds_the_dominant_slot_and_its_share() {
        let t0 = Instant::now();
        let w = HotWindow::new(t0);
        let mut c = Counters::new();
        c.add(7000, 900);
        for s in 0..100 {
            c.add(s, 1);
        }
        let hot = w
            .hottest(t0 + Duration::from_secs(2), c.get())
            .expect("1000 commands are enough");
        assert_eq!(hot.slot, 7000);
        assert!((hot.share - 0.9).abs() < 1e-9, "{hot:?}");
        assert!((hot.ops_per_sec - 450.0).abs() < 1e-9, "{hot:?}");
        assert!((hot.window_seconds - 2.0).abs() < 1e-9, "{hot:?}");
    }

    #[test]
    fn hot_window_reports_a_small_share_for_spread_load_and_nothing_when_idle() {
        let t0 = Instant::now();
        let w = HotWindow::new(t0);
        let mut c = Counters::new();
        assert_eq!(w.hottest(t0 + Duration::from_secs(1), c.get()), None);
        c.add(5, HOT_MIN_COMMANDS - 1);
        assert_eq!(
            w.hottest(t0 + Duration::from_secs(1), c.get()),
            None,
            "under the minimum"
        );
        let mut c = Counters::new();
        for s in 0..1000 {
            c.add(s * 16, 10);
        }
        c.add(32, 1);
        let hot = w
            .hottest(t0 + Duration::from_secs(1), c.get())
            .expect("enough commands");
        assert_eq!(hot.slot, 32, "the one with one more");
        assert!(hot.share < 0.002, "{hot:?}");
    }

    #[test]
    fn hot_window_forgets_load_older_than_two_windows() {
        let t0 = Instant::now();
        let mut w = HotWindow::new(t0);
        let mut c = Counters::new();
        // First window: slot 1 hot.
        c.add(1, 5000);
        let t1 = t0 + HOT_WINDOW;
        w.maybe_rotate(t1, c.get());
        // Second window: slot 2 carries 3000.
        c.add(2, 3000);
        let mid = w
            .hottest(t1 + Duration::from_secs(5), c.get())
            .expect("enough");
        assert_eq!(mid.slot, 1, "still within the two windows");
        assert!((mid.share - 5000.0 / 8000.0).abs() < 1e-9);
        assert!((mid.window_seconds - 15.0).abs() < 1e-9);
        // Not yet a window since the last rotation: nothing changes.
        w.maybe_rotate(t1 + Duration::from_secs(9), c.get());
        let t2 = t1 + HOT_WINDOW;
        w.maybe_rotate(t2, c.get());
        // The first window is gone: only slot 2's commands count.
        let late = w
            .hottest(t2 + Duration::from_secs(1), c.get())
            .expect("3000");
        assert_eq!(late.slot, 2);
        assert!((late.share - 1.0).abs() < 1e-9);
        assert!((late.window_seconds - 11.0).abs() < 1e-9);
        assert!((late.ops_per_sec - 3000.0 / 11.0).abs() < 1e-9);
        // Two idle windows later there is no figure at all.
        w.maybe_rotate(t2 + HOT_WINDOW, c.get());
        w.maybe_rotate(t2 + HOT_WINDOW * 2, c.get());
        assert_eq!(w.hottest(t2 + HOT_WINDOW * 2, c.get()), None);
    }

    #[test]
    fn slot_counters_add_commands_and_bytes() {
        let load = Load::new(&crate::node::cmd::Commands::new());
        load.count(12182, 40, 5);
        load.count(12182, 60, 7);
        load.count(0, 1, 1);
        let c = load.slot(12182);
        assert_eq!(
            (c.commands.get(), c.bytes_in.get(), c.bytes_out.get()),
            (2, 100, 12)
        );
        assert_eq!(load.slot(1).commands.get(), 0);
        assert!(!load.write_commands.is_empty());
    }
}
