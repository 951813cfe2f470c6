//! Counters the node keeps and their Prometheus text exposition.
//!
//! Everything lives on the node's one thread, so plain `Cell`s suffice.
//! Label values are bounded: command names come from the command table.

use std::cell::Cell;
use std::fmt::Write;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1.0,
];

#[derive(Default)]
pub struct Histogram {
    counts: [Cell<u64>; 13],
    sum: Cell<f64>,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        self.observe_n(secs, 1);
    }

    /// Records `n` observations of `secs` each (a batch's average).
    pub fn observe_n(&self, secs: f64, n: u64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].set(self.counts[i].get() + n);
        self.sum.set(self.sum.get() + secs * n as f64);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(Cell::get).sum()
    }

    /// Writes the histogram in Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            acc += self.counts[i].get();
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        acc += self.counts[LATENCY_BUCKETS.len()].get();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {acc}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.get());
        let _ = writeln!(out, "{name}_count {acc}");
    }
}

pub struct Stats {
    /// Calls per command, indexed like the command table.
    pub calls: Vec<Cell<u64>>,
    pub command_latency: Histogram,
    pub connections_received: Cell<u64>,
    pub rejected_connections: Cell<u64>,
    pub keyspace_hits: Cell<u64>,
    pub keyspace_misses: Cell<u64>,
    pub protocol_errors: Cell<u64>,
    pub error_replies: Cell<u64>,
    pub commands_processed: Cell<u64>,
    pub net_input_bytes: Cell<u64>,
    pub net_output_bytes: Cell<u64>,
    /// Clients closed over `--client-query-buffer-limit`.
    pub query_buffer_disconnections: Cell<u64>,
    /// Clients closed over their output buffer limit.
    pub output_buffer_disconnections: Cell<u64>,
    /// Commands whose reply passed `--max-reply-bytes`.
    pub replies_over_limit: Cell<u64>,
}

impl Stats {
    pub fn new(commands: usize) -> Self {
        Self {
            calls: (0..commands).map(|_| Cell::new(0)).collect(),
            command_latency: Histogram::default(),
            connections_received: Cell::new(0),
            rejected_connections: Cell::new(0),
            keyspace_hits: Cell::new(0),
            keyspace_misses: Cell::new(0),
            protocol_errors: Cell::new(0),
            error_replies: Cell::new(0),
            commands_processed: Cell::new(0),
            net_input_bytes: Cell::new(0),
            net_output_bytes: Cell::new(0),
            query_buffer_disconnections: Cell::new(0),
            output_buffer_disconnections: Cell::new(0),
            replies_over_limit: Cell::new(0),
        }
    }

    pub fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }
}
