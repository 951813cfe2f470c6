//! CLUSTER subcommands, answered from the topology the operator pushed.
//!
//! Nodes never gossip, so the answers describe the pushed topology: every
//! node of it is reported connected, and `cluster_current_epoch` is the
//! topology's epoch.

use std::fmt::Write;

use super::flags::*;
use super::{Args, CommandSpec, Ctx};
use crate::node::slots::{key_slot, NodeAddr, ShardTopology, SLOTS};

pub static COMMANDS: &[CommandSpec] = &[CommandSpec {
    name: "cluster",
    arity: -2,
    flags: LOADING_OK,
    first_key: 0,
    last_key: 0,
    step: 0,
    handler: cluster,
}];

fn cluster(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = args.get(1).to_ascii_lowercase();
    match (sub.as_slice(), args.len()) {
        (b"myid", 2) => {
            let id = ctx.node.id.clone();
            ctx.out.bulk(id.as_bytes());
        }
        (b"myshardid", 2) => {
            let name = ctx.node.slot_map.borrow().my_shard().name.clone();
            ctx.out.bulk(shard_id(&name).as_bytes());
        }
        (b"keyslot", 3) => ctx.out.int(key_slot(args.get(2)) as i64),
        (b"countkeysinslot", 3) => match slot_arg(args, 2) {
            Ok(s) => ctx.out.int(ctx.store.slot_len(s) as i64),
            Err(e) => ctx.out.error(e),
        },
        (b"getkeysinslot", 4) => {
            let slot = match slot_arg(args, 2) {
                Ok(s) => s,
                Err(e) => return ctx.out.error(e),
            };
            let count = match args.int(3) {
                Ok(n) if n >= 0 => n as usize,
                _ => return ctx.out.error("ERR Invalid number of keys"),
            };
            let keys: Vec<Vec<u8>> = ctx
                .store
                .keys_in_slot(slot, count)
                .into_iter()
                .map(|k| k.to_vec())
                .collect();
            ctx.out.array(keys.len());
            for k in keys {
                ctx.out.bulk(&k);
            }
        }
        (b"info", 2) => {
            let text = info_text(ctx);
            ctx.out.verbatim(&text);
        }
        (b"nodes", 2) => {
            let text = nodes_text(ctx);
            ctx.out.verbatim(&text);
        }
        (b"slotdigest", 4) => crate::node::migration::digest::command(ctx, args),
        (b"getslotmigrations", 2) => crate::node::migration::getslotmigrations(ctx),
        (b"slots", 2) => slots(ctx),
        (b"slot-stats", _) => crate::node::load::slot_stats::command(ctx, args),
        (b"shards", 2) => shards(ctx),
        (b"replicas" | b"slaves", 3) => replicas(ctx, args.get(2)),
        _ => ctx.out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(args.get(1))
        )),
    }
}

fn slot_arg(args: &Args<'_>, i: usize) -> Result<u16, &'static str> {
    match args.int(i) {
        Ok(n) if (0..SLOTS as i64).contains(&n) => Ok(n as u16),
        _ => Err("ERR Invalid or out of range slot"),
    }
}

/// A stable 40-hex shard ID derived from the shard's name.
fn shard_id(name: &str) -> String {
    let a = crc32c::crc32c(name.as_bytes());
    let b = crc32c::crc32c_append(a, b"tessera-shard");
    format!("{a:08x}{b:08x}{:024x}", 0)
}

fn info_text(ctx: &Ctx<'_>) -> String {
    let map = ctx.node.slot_map.borrow();
    let assigned = map.assigned_slots();
    let t = &map.topology;
    let nodes: usize = t.shards.iter().map(|s| 1 + s.replicas.len()).sum();
    let size = t.shards.iter().filter(|s| !s.slots.is_empty()).count();
    let state = if assigned == SLOTS { "ok" } else { "fail" };
    format!(
        "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{assigned}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{nodes}\r\ncluster_size:{size}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\ncluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
        t.epoch,
        map.my_shard().epoch
    )
}

fn node_line(
    out: &mut String,
    n: &NodeAddr,
    myself: bool,
    primary: Option<&str>,
    shard: &ShardTopology,
    epoch: u64,
) {
    let flags = match (myself, primary.is_none()) {
        (true, true) => "myself,master",
        (true, false) => "myself,slave",
        (false, true) => "master",
        (false, false) => "slave",
    };
    let _ = write!(
        out,
        "{} {}:{}@{} {} {} 0 0 {} connected",
        n.id,
        n.host,
        n.port,
        n.port as u32 + 10000,
        flags,
        primary.unwrap_or("-"),
        epoch
    );
    if primary.is_none() {
        for &(a, b) in &shard.slots {
            if a == b {
                let _ = write!(out, " {a}");
            } else {
                let _ = write!(out, " {a}-{b}");
            }
        }
    }
    out.push('\n');
}

fn nodes_text(ctx: &Ctx<'_>) -> String {
    let map = ctx.node.slot_map.borrow();
    let me = &ctx.node.id;
    let mut out = String::new();
    for shard in &map.topology.shards {
        let p = &shard.primary;
        node_line(&mut out, p, &p.id == me, None, shard, shard.epoch);
        for r in &shard.replicas {
            node_line(&mut out, r, &r.id == me, Some(&p.id), shard, shard.epoch);
        }
    }
    out
}

fn node_triplet(ctx: &mut Ctx<'_>, n: &NodeAddr) {
    ctx.out.array(3);
    ctx.out.bulk(n.host.as_bytes());
    ctx.out.int(n.port as i64);
    ctx.out.bulk(n.id.as_bytes());
}

fn slots(ctx: &mut Ctx<'_>) {
    let map = ctx.node.slot_map.borrow().clone();
    let mut ranges: Vec<(u16, u16, &ShardTopology)> = Vec::new();
    for shard in &map.topology.shards {
        for &(a, b) in &shard.slots {
            ranges.push((a, b, shard));
        }
    }
    ranges.sort_by_key(|r| r.0);
    ctx.out.array(ranges.len());
    for (a, b, shard) in ranges {
        ctx.out.array(3 + shard.replicas.len());
        ctx.out.int(a as i64);
        ctx.out.int(b as i64);
        node_triplet(ctx, &shard.primary);
        for r in &shard.replicas {
            node_triplet(ctx, r);
        }
    }
}

fn shard_node(ctx: &mut Ctx<'_>, n: &NodeAddr, role: &str, offset: u64) {
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"id");
    out.bulk(n.id.as_bytes());
    out.bulk(b"port");
    out.int(n.port as i64);
    out.bulk(b"ip");
    out.bulk(n.host.as_bytes());
    out.bulk(b"endpoint");
    out.bulk(n.host.as_bytes());
    out.bulk(b"role");
    out.bulk(role.as_bytes());
    out.bulk(b"replication-offset");
    out.int(offset as i64);
    out.bulk(b"health");
    out.bulk(b"online");
}

fn shards(ctx: &mut Ctx<'_>) {
    let map = ctx.node.slot_map.borrow().clone();
    let my_lsn = ctx.node.wal.last_lsn();
    ctx.out.array(map.topology.shards.len());
    for shard in &map.topology.shards {
        ctx.out.map(2);
        ctx.out.bulk(b"slots");
        ctx.out.array(shard.slots.len() * 2);
        for &(a, b) in &shard.slots {
            ctx.out.int(a as i64);
            ctx.out.int(b as i64);
        }
        ctx.out.bulk(b"nodes");
        ctx.out.array(1 + shard.replicas.len());
        let offset = |n: &NodeAddr| if n.id == ctx.node.id { my_lsn } else { 0 };
        let p_off = offset(&shard.primary);
        shard_node(ctx, &shard.primary, "master", p_off);
        for r in &shard.replicas {
            let off = offset(r);
            shard_node(ctx, r, "replica", off);
        }
    }
}

fn replicas(ctx: &mut Ctx<'_>, id: &[u8]) {
    let map = ctx.node.slot_map.borrow().clone();
    let Some(shard) = map
        .topology
        .shards
        .iter()
        .find(|s| s.primary.id.as_bytes() == id)
    else {
        ctx.out
            .error(&format!("ERR Unknown node {}", String::from_utf8_lossy(id)));
        return;
    };
    let mut text = String::new();
    ctx.out.array(shard.replicas.len());
    for r in &shard.replicas {
        text.clear();
        node_line(
            &mut text,
            r,
            r.id == ctx.node.id,
            Some(&shard.primary.id),
            shard,
            shard.epoch,
        );
        ctx.out.bulk(text.trim_end().as_bytes());
    }
}
