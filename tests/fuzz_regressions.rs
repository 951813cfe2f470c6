//! Inputs the fuzzers (fuzz/, docs/testing.md) found crashing, as plain
//! tests: each builds the input class that crashed and asserts the
//! refusal the reader gives now. The raw crash inputs also sit in the seed
//! corpus (fuzz/corpus/<target>/crash-*), replayed by every fuzz run.

use std::rc::Rc;

use tessera::node::slots::{key_slot, SLOTS};
use tessera::node::store::Store;
use tessera::node::wal::{self, Wal};
use tessera::node::{fuzzing, Node, NodeConfig};

fn header(first_lsn: u64) -> Vec<u8> {
    let mut h = b"TSWAL\0\0\x01".to_vec();
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn record(lsn: u64, slot: u16, args: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    wal::encode_record(&mut b, lsn, slot, args);
    b
}

fn node() -> Rc<Node> {
    let mut cfg = NodeConfig::for_tests(std::path::PathBuf::new());
    cfg.persistence = false;
    let node = Node::new(cfg, "0".repeat(40), Wal::disabled(), Store::new());
    node.ready.set(true);
    Rc::new(node)
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Crash: a segment whose header declares first LSN 0 underflowed
/// "the LSN before the first" (panic with overflow checks, u64::MAX
/// without).
#[test]
fn a_segment_declaring_first_lsn_0_is_corrupt() {
    // The crash's shape: no valid record after the header.
    let mut seg = header(0);
    seg.extend_from_slice(&[0x30, 0, 0, 0, 1]);
    let e = fuzzing::wal_segment(&seg, 0, false).unwrap_err();
    assert!(e.contains("first LSN 0"), "{e}");
    // As the newest segment: an unreadable header with nothing valid after
    // it is a creation the crash cut short; none of it is kept.
    assert_eq!(fuzzing::wal_segment(&seg, 0, true), Ok((0, 0)));
    // The same segment from LSN 1 is read.
    let mut seg = header(1);
    seg.extend_from_slice(&record(1, 1, &[b"SET", b"k", b"v"]));
    assert_eq!(
        fuzzing::wal_segment(&seg, 1, true),
        Ok((1, seg.len() as u64))
    );
}

/// A record at LSN u64::MAX has no successor: refused, not overflowed.
#[test]
fn a_segment_reaching_the_last_lsn_is_corrupt() {
    let mut seg = header(u64::MAX);
    seg.extend_from_slice(&record(u64::MAX, 1, &[b"SET", b"k", b"v"]));
    let e = fuzzing::wal_segment(&seg, u64::MAX, true).unwrap_err();
    assert!(e.contains("no LSN can follow"), "{e}");
}

/// Crash: a CRC-valid record whose slot is past 16383 (and neither the
/// every-slot nor the marker value) indexed the store's slot table out of
/// bounds when a replica applied it.
#[test]
fn a_replicated_record_with_a_slot_past_16383_is_refused() {
    let node = node();
    let bad = frame(b'R', &record(1, 27046, &[b"SET", b"k", b"v"]));
    let e = fuzzing::replication_stream(&node, &bad, None).unwrap_err();
    assert!(e.contains("not a slot"), "{e}");
    let e = fuzzing::replication_stream(&node, &bad, Some(vec![0; SLOTS])).unwrap_err();
    assert!(e.contains("not a slot"), "{e}");
    assert_eq!(node.wal.last_lsn(), 0, "nothing of the frame was logged");
    assert!(wal::decode_record(&record(1, SLOTS as u16, &[b"PING"])).is_err());
    for slot in [0, SLOTS as u16 - 1, wal::MARKER_SLOT, wal::GLOBAL_SLOT] {
        assert!(
            wal::decode_record(&record(1, slot, &[b"PING"])).is_ok(),
            "{slot}"
        );
    }
}

/// Records in one frame must follow each other: the log takes a frame
/// under its first and last LSN only.
#[test]
fn a_replicated_frame_with_an_lsn_gap_is_refused() {
    let node = node();
    let slot = key_slot(b"k");
    let mut payload = record(1, slot, &[b"SET", b"k", b"v"]);
    payload.extend_from_slice(&record(3, slot, &[b"SET", b"k", b"w"]));
    let e = fuzzing::replication_stream(&node, &frame(b'R', &payload), None).unwrap_err();
    assert!(e.contains("follows"), "{e}");
    assert_eq!(node.wal.last_lsn(), 0);
}

/// The refusals above are not a stream that refuses everything: well-formed
/// frames are applied.
#[tokio::test(flavor = "current_thread")]
async fn a_well_formed_replicated_frame_is_applied() {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let node = node();
            let slot = key_slot(b"k");
            let mut payload = record(1, slot, &[b"SET", b"k", b"v"]);
            payload.extend_from_slice(&record(2, slot, &[b"APPEND", b"k", b"w"]));
            let n = fuzzing::replication_stream(&node, &frame(b'R', &payload), None);
            assert_eq!(n, Ok(1));
            assert_eq!(node.wal.last_lsn(), 2);
            assert!(node.store.borrow_mut().contains(slot, b"k"));
        })
        .await;
}
