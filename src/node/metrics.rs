//! Counters the node keeps and their Prometheus text exposition.
//!
//! Everything lives on the node's one thread, so plain `Cell`s suffice.
//! Label values are bounded: command names come from the command table.

use std::cell::Cell;
use std::fmt::Write;

use super::{alloc, now_ms, Node};

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

// ---------------------------------------------------------------------------
// The exposition (`GET /metrics` on the admin port).
// ---------------------------------------------------------------------------

fn gauge(out: &mut String, name: &str, help: &str, kind: &str, v: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
    );
}

pub fn render_metrics(node: &Node) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let _ = writeln!(
        out,
        "# HELP tessera_commands_total Commands executed, by command.\n# TYPE tessera_commands_total counter"
    );
    for (i, spec) in node.commands.all().iter().enumerate() {
        let n = node.stats.calls[i].get();
        if n > 0 {
            let _ = writeln!(
                out,
                "tessera_commands_total{{command=\"{}\"}} {n}",
                spec.name
            );
        }
    }
    node.stats.command_latency.render(
        &mut out,
        "tessera_command_duration_seconds",
        "Time to execute one command (excluding log acknowledgement).",
    );
    node.repl.ack_latency.render(
        &mut out,
        "tessera_replication_ack_duration_seconds",
        "Time a write batch waited for its replica acknowledgements (quorum/strong).",
    );
    {
        let repl = super::replication::status(node);
        gauge(
            &mut out,
            "tessera_replication_epoch",
            "Highest shard epoch seen (fencing token).",
            "gauge",
            node.repl.epoch(),
        );
        gauge(
            &mut out,
            "tessera_replication_lease_held",
            "1 while a quorum/strong primary holds its lease.",
            "gauge",
            u8::from(repl.lease_held),
        );
        let _ = writeln!(out, "# HELP tessera_replica_acked_lsn Last LSN a replica acknowledged, per replica (on a primary).\n# TYPE tessera_replica_acked_lsn gauge");
        for r in &repl.replicas {
            let _ = writeln!(
                out,
                "tessera_replica_acked_lsn{{replica=\"{}\"}} {}",
                r.id, r.acked_lsn
            );
        }
        let _ = writeln!(out, "# HELP tessera_replica_lag_operations Records a replica is behind, per replica.\n# TYPE tessera_replica_lag_operations gauge");
        for r in &repl.replicas {
            let _ = writeln!(
                out,
                "tessera_replica_lag_operations{{replica=\"{}\"}} {}",
                r.id, r.lag_ops
            );
        }
        let _ = writeln!(out, "# HELP tessera_replica_lag_milliseconds Time since a replica last had everything, per replica.\n# TYPE tessera_replica_lag_milliseconds gauge");
        for r in &repl.replicas {
            let _ = writeln!(
                out,
                "tessera_replica_lag_milliseconds{{replica=\"{}\"}} {}",
                r.id, r.lag_ms
            );
        }
        if let Some(lag) = repl.lag_ms {
            gauge(
                &mut out,
                "tessera_replication_link_up",
                "1 while this replica is linked to its primary.",
                "gauge",
                u8::from(repl.link_up),
            );
            gauge(
                &mut out,
                "tessera_replication_refused_ahead",
                "1 while the primary refuses this replica because the replica's log is ahead of its own (the replica keeps its data; promote the node with the most data).",
                "gauge",
                u8::from(repl.link_state == super::replication::LinkState::RefusedAhead),
            );
            gauge(
                &mut out,
                "tessera_replication_staleness_milliseconds",
                "Time since this replica last had everything its primary had.",
                "gauge",
                lag.min(u64::MAX / 2),
            );
        }
    }
    let wal = node.wal.stats();
    let store = node.store.borrow();
    gauge(
        &mut out,
        "tessera_connected_clients",
        "Client connections open.",
        "gauge",
        node.connected_clients.get(),
    );
    gauge(
        &mut out,
        "tessera_connections_received_total",
        "Client connections accepted.",
        "counter",
        node.stats.connections_received.get(),
    );
    gauge(
        &mut out,
        "tessera_error_replies_total",
        "Error replies sent to clients.",
        "counter",
        node.stats.error_replies.get(),
    );
    gauge(
        &mut out,
        "tessera_protocol_errors_total",
        "Malformed requests answered with an error.",
        "counter",
        node.stats.protocol_errors.get(),
    );
    gauge(
        &mut out,
        "tessera_client_buffer_limit_disconnections_total",
        "Clients closed over their query or output buffer limit.",
        "counter",
        node.stats.query_buffer_disconnections.get()
            + node.stats.output_buffer_disconnections.get(),
    );
    gauge(
        &mut out,
        "tessera_replies_over_limit_total",
        "Commands whose reply passed --max-reply-bytes and answered an error instead.",
        "counter",
        node.stats.replies_over_limit.get(),
    );
    gauge(
        &mut out,
        "tessera_used_memory_bytes",
        "Bytes allocated by the node.",
        "gauge",
        alloc::allocated(),
    );
    gauge(
        &mut out,
        "tessera_resident_memory_bytes",
        "Resident set size.",
        "gauge",
        alloc::rss_bytes(),
    );
    gauge(
        &mut out,
        "tessera_keys",
        "Keys in the keyspace.",
        "gauge",
        store.len(),
    );
    gauge(
        &mut out,
        "tessera_expiring_keys",
        "Keys with a time to live.",
        "gauge",
        store.volatile_len(),
    );
    gauge(
        &mut out,
        "tessera_expired_keys_total",
        "Keys deleted because they expired.",
        "counter",
        store.expired_total,
    );
    gauge(
        &mut out,
        "tessera_evicted_keys_total",
        "Keys deleted to keep used memory under maxmemory.",
        "counter",
        store.evicted_total,
    );
    gauge(
        &mut out,
        "tessera_maxmemory_bytes",
        "The used-memory limit (0: none).",
        "gauge",
        node.memory.maxmemory.get(),
    );
    gauge(
        &mut out,
        "tessera_wal_bytes_written_total",
        "Bytes appended to the write-ahead log.",
        "counter",
        wal.bytes_written,
    );
    gauge(
        &mut out,
        "tessera_wal_fsyncs_total",
        "fsync calls on the write-ahead log.",
        "counter",
        wal.fsyncs,
    );
    gauge(
        &mut out,
        "tessera_wal_fsync_seconds_total",
        "Time spent in fsync on the write-ahead log.",
        "counter",
        wal.fsync_latency_sum_secs,
    );
    gauge(
        &mut out,
        "tessera_wal_segments",
        "Log segment files on disk.",
        "gauge",
        wal.segments,
    );
    gauge(
        &mut out,
        "tessera_lsn",
        "Last log sequence number assigned.",
        "gauge",
        node.wal.last_lsn(),
    );
    gauge(
        &mut out,
        "tessera_durable_lsn",
        "Last log sequence number durable per the fsync policy.",
        "gauge",
        node.wal.durable_lsn(),
    );
    let age = node
        .last_snapshot
        .borrow()
        .as_ref()
        .map(|s| now_ms().saturating_sub(s.finished_at_ms) as f64 / 1000.0)
        .unwrap_or(-1.0);
    gauge(
        &mut out,
        "tessera_snapshot_age_seconds",
        "Seconds since the last snapshot finished (-1: none yet).",
        "gauge",
        age,
    );
    gauge(
        &mut out,
        "tessera_topology_epoch",
        "Epoch of the topology this node follows.",
        "gauge",
        node.slot_map.borrow().topology.epoch,
    );
    gauge(
        &mut out,
        "tessera_ready",
        "1 once recovery has finished.",
        "gauge",
        node.ready.get() as u8,
    );
    gauge(
        &mut out,
        "tessera_pubsub_forwarded_total",
        "PUBLISH messages written to the links to the other nodes of the cluster.",
        "counter",
        node.forwarder.forwarded.get(),
    );
    gauge(
        &mut out,
        "tessera_pubsub_forward_dropped_total",
        "PUBLISH messages not forwarded to a peer (its queue full, or it unreachable).",
        "counter",
        node.forwarder.dropped.get(),
    );
    super::migration::render_metrics(node, &mut out);
    super::load::render_metrics(node, &mut out);
    out
}
