//! The INFO text, with Redis' section and field names where they exist.

use std::fmt::Write;

use super::store::Store;
use super::{alloc, Node, Role};

/// The Redis version we answer as (clients gate features on it).
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

pub const SECTIONS: [&str; 9] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cluster",
    "keyspace",
    "commandstats",
];

/// Renders the named sections (lower-case); `default`/`all`/empty: all but
/// commandstats for default, all for `all`/`everything`.
/// `store` is passed in because the caller (a command) already holds it.
pub fn render(node: &Node, store: &Store, wanted: &[String]) -> String {
    let all = wanted.iter().any(|w| w == "all" || w == "everything");
    let default = wanted.is_empty() || wanted.iter().any(|w| w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s) || (default && s != "commandstats");
    let mut out = String::with_capacity(4096);
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\ntessera_version:{}\r\nredis_mode:cluster\r\nos:{}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutable:tessera\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            node.id,
            node.port.get(),
            node.started.elapsed().as_secs(),
            node.started.elapsed().as_secs() / 86400
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\r\n",
            node.connected_clients.get(),
            node.cfg.max_clients,
            node.blocked.borrow().clients()
        );
    }
    if want("memory") {
        let m = MemoryFigures::now(node);
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{}\r\nused_memory_rss_human:{:.2}M\r\nused_memory_startup:{}\r\nused_memory_overhead:{}\r\nused_memory_dataset:{}\r\nused_memory_dataset_perc:{:.2}%\r\nmem_replication_backlog:{}\r\nmem_replication_ring:{}\r\nmem_clients_normal:{}\r\nmem_fragmentation_ratio:{:.2}\r\nmem_fragmentation_bytes:{}\r\nmaxmemory:{}\r\nmaxmemory_human:{:.2}M\r\nmaxmemory_policy:{}\r\nmaxmemory_samples:{}\r\nmem_allocator:{}\r\n",
            m.used,
            mib(m.used),
            m.rss,
            mib(m.rss),
            m.startup,
            m.overhead(),
            m.dataset(),
            100.0 * m.dataset() as f64 / m.used.max(1) as f64,
            m.ring,
            m.ring,
            m.clients,
            m.fragmentation(),
            m.rss as i64 - m.used as i64,
            m.maxmemory,
            mib(m.maxmemory),
            node.memory.policy.get(),
            node.memory.samples.get(),
            alloc::ALLOCATOR,
        );
        // The loaded scripts and function libraries (part of the data set).
        let reg = &store.scripts;
        let _ = write!(
            out,
            "number_of_cached_scripts:{}\r\nnumber_of_libraries:{}\r\nused_memory_scripts:{}\r\n\r\n",
            reg.script_count(),
            reg.libraries().count(),
            reg.bytes(),
        );
    }
    if want("persistence") {
        let wal = node.wal.stats();
        let snap = node.last_snapshot.borrow();
        let _ = write!(
            out,
            "# Persistence\r\nloading:{}\r\naof_enabled:{}\r\nappendfsync:{}\r\nwal_last_lsn:{}\r\nwal_durable_lsn:{}\r\nwal_bytes_written:{}\r\nwal_segments:{}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:ok\r\nsnapshot_keys:{}\r\n\r\n",
            !node.ready.get() as u8,
            node.wal.enabled() as u8,
            node.wal.policy().as_str(),
            node.wal.last_lsn(),
            node.wal.durable_lsn(),
            wal.bytes_written,
            wal.segments,
            node.snapshot_running.get() as u8,
            snap.as_ref().map_or(0, |s| s.finished_at_ms / 1000),
            snap.as_ref().map_or(0, |s| s.keys),
        );
    }
    if want("stats") {
        let st = &node.stats;
        let rates = node.load.rates();
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\ntotal_error_replies:{}\r\nclient_query_buffer_limit_disconnections:{}\r\nclient_output_buffer_limit_disconnections:{}\r\nreplies_over_max_reply_bytes:{}\r\ninstantaneous_ops_per_sec:{}\r\ninstantaneous_write_ops_per_sec:{}\r\ninstantaneous_input_kbps:{:.2}\r\ninstantaneous_output_kbps:{:.2}\r\n\r\n",
            st.connections_received.get(),
            st.commands_processed.get(),
            st.net_input_bytes.get(),
            st.net_output_bytes.get(),
            st.rejected_connections.get(),
            store.expired_total,
            store.evicted_total,
            st.keyspace_hits.get(),
            st.keyspace_misses.get(),
            st.error_replies.get(),
            st.query_buffer_disconnections.get(),
            st.output_buffer_disconnections.get(),
            st.replies_over_limit.get(),
            rates.ops.round() as u64,
            rates.writes.round() as u64,
            rates.bytes_in / 1024.0,
            rates.bytes_out / 1024.0,
        );
    }
    if want("replication") {
        let map = node.slot_map.borrow();
        let shard = map.my_shard();
        let repl = crate::node::replication::status(node);
        match node.role.get() {
            Role::Primary => {
                let _ = write!(
                    out,
                    "# Replication\r\nrole:master\r\nconnected_slaves:{}\r\n",
                    repl.replicas.iter().filter(|r| r.connected).count()
                );
                for (i, r) in repl.replicas.iter().filter(|r| r.connected).enumerate() {
                    let (ip, port) = r.addr.rsplit_once(':').unwrap_or((&r.addr, "0"));
                    let _ = write!(
                        out,
                        "slave{i}:ip={ip},port={port},state=online,offset={},lag={}\r\n",
                        r.acked_lsn,
                        r.lag_ms / 1000
                    );
                }
                let _ = write!(out, "master_repl_offset:{}\r\n\r\n", node.wal.last_lsn());
            }
            Role::Replica => {
                let primary = repl
                    .primary
                    .clone()
                    .unwrap_or_else(|| shard.primary.clone());
                let _ = write!(
                    out,
                    "# Replication\r\nrole:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\nmaster_link_status:{}\r\nslave_repl_offset:{}\r\n\r\n",
                    primary.host,
                    primary.port,
                    if repl.link_up { "up" } else { "down" },
                    node.wal.last_lsn()
                );
            }
        }
    }
    if want("cluster") {
        let _ = write!(out, "# Cluster\r\ncluster_enabled:1\r\n");
        super::migration::info_fields(node, &mut out);
        out.push_str("\r\n");
    }
    if want("keyspace") {
        let _ = write!(out, "# Keyspace\r\n");
        if !store.is_empty() {
            let _ = write!(
                out,
                "db0:keys={},expires={},avg_ttl=0\r\n",
                store.len(),
                store.volatile_len()
            );
        }
        out.push_str("\r\n");
    }
    if want("commandstats") {
        let _ = write!(out, "# Commandstats\r\n");
        for (i, spec) in node.commands.all().iter().enumerate() {
            let calls = node.stats.calls[i].get();
            if calls > 0 {
                let _ = write!(out, "cmdstat_{}:calls={calls}\r\n", spec.name);
            }
        }
        out.push_str("\r\n");
    }
    // Redis ends the text without the last blank line.
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Where the node's memory is, as INFO and MEMORY STATS report it. The
/// parts add up to `used`: `startup + ring + clients + dataset()`.
#[derive(Debug, Clone, Copy)]
pub struct MemoryFigures {
    /// Every byte allocated through the node's allocator: what `maxmemory`
    /// judges.
    pub used: u64,
    /// Resident set size (what the pod's memory limit judges).
    pub rss: u64,
    /// Allocated before any data was loaded.
    pub startup: u64,
    /// The recent log kept for replicas (Redis' replication backlog).
    pub ring: u64,
    /// Client connections' input and output buffers.
    pub clients: u64,
    pub maxmemory: u64,
}

impl MemoryFigures {
    pub fn now(node: &Node) -> Self {
        let used = alloc::allocated() as u64;
        // The parts are read one after another while the node runs; each is
        // clamped so that they never add up to more than `used`.
        let startup = node.memory.startup.get().min(used);
        let ring = (node.wal.ring_bytes() as u64).min(used - startup);
        let clients = (alloc::client_bytes() as u64).min(used - startup - ring);
        Self {
            used,
            rss: alloc::rss_bytes(),
            startup,
            ring,
            clients,
            maxmemory: node.memory.maxmemory.get(),
        }
    }
    pub fn overhead(&self) -> u64 {
        self.startup + self.ring + self.clients
    }
    /// What the keys and values take (and what else the node allocated
    /// for them: tables, log buffers): used memory less the overhead.
    pub fn dataset(&self) -> u64 {
        self.used - self.overhead()
    }
    pub fn fragmentation(&self) -> f64 {
        self.rss as f64 / self.used.max(1) as f64
    }
}
