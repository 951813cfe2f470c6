//! Replication support: the ring of recent batches a primary feeds replicas
//! from, and the appends and resets a replica makes.

use std::sync::atomic::Ordering;

use tokio::sync::Notify;
use tracing::info;

use super::{sync_dir, FsyncPolicy, Segment, Wal, WalError};

impl Wal {
    /// Keeps up to `cap` bytes of recently written batches in memory for
    /// replicas (0 disables).
    pub fn set_ring_capacity(&self, cap: usize) {
        let mut r = self.ring.borrow_mut();
        r.cap = cap;
        while r.bytes > r.cap {
            match r.batches.pop_front() {
                Some((_, _, b)) => r.bytes -= b.len(),
                None => break,
            }
        }
    }

    /// Starts keeping batches in the ring (a replica streams from here).
    pub fn activate_ring(&self) {
        self.ring.borrow_mut().active = true;
    }

    /// Bytes of log the ring holds now (memory that is not data).
    pub fn ring_bytes(&self) -> usize {
        self.ring.borrow().bytes
    }

    pub(super) fn feed_ring(&self, first: u64, last: u64, buf: &[u8]) {
        let mut r = self.ring.borrow_mut();
        if r.cap == 0 || !r.active {
            return;
        }
        r.batches
            .push_back((first, last, bytes::Bytes::copy_from_slice(buf)));
        r.bytes += buf.len();
        while r.bytes > r.cap && r.batches.len() > 1 {
            if let Some((_, _, b)) = r.batches.pop_front() {
                r.bytes -= b.len();
            }
        }
        drop(r);
        self.ring_changed.notify_waiters();
    }

    /// The written records after `after`, from the ring, as encoded chunks
    /// (the first may start with records at or below `after`: callers skip
    /// them with [`skip_records_through`]). `None` when the ring no longer
    /// (or not yet) holds the record after `after`; empty when nothing newer
    /// has been written.
    pub fn ring_after(&self, after: u64) -> Option<Vec<bytes::Bytes>> {
        let r = self.ring.borrow();
        if after >= self.written.get() {
            return Some(Vec::new());
        }
        let oldest = r.batches.front()?.0;
        if oldest > after + 1 {
            return None;
        }
        // Batches are in LSN order: find the first one not yet sent by
        // binary search (the ring holds thousands of small batches when
        // records are pushed early; scanning it per send was a sixth of a
        // primary's CPU).
        let from = r.batches.partition_point(|(_, last, _)| *last <= after);
        Some(r.batches.range(from..).map(|(_, _, b)| b.clone()).collect())
    }

    /// Resolves once a new batch reached the ring (register before checking).
    pub fn ring_changed(&self) -> &Notify {
        &self.ring_changed
    }

    /// LSN of the oldest record still on disk (0: none).
    pub fn first_retained_lsn(&self) -> u64 {
        self.segments
            .borrow()
            .first()
            .map(|s| s.first_lsn)
            .unwrap_or(0)
    }

    /// LSN of the oldest record a primary can still send a replica: on disk,
    /// or, before the first segment exists, appended and waiting for the
    /// flusher (which feeds the ring the sender reads). 0: none.
    pub fn first_sendable_lsn(&self) -> u64 {
        match self.first_retained_lsn() {
            0 => self.pending_first.get(),
            first => first,
        }
    }

    /// Appends records received from a primary, already encoded, keeping
    /// their LSNs. `first` must follow the last LSN: a replica's log is a
    /// copy of its primary's, gaps included never.
    pub fn append_encoded(&self, first: u64, last: u64, encoded: &[u8]) -> Result<(), String> {
        let expected = self.last_lsn.get() + 1;
        if first != expected || last < first {
            return Err(format!(
                "records {first}..={last} do not follow the log's last LSN {}",
                expected - 1
            ));
        }
        self.last_lsn.set(last);
        if !self.enabled {
            return Ok(());
        }
        self.pending.borrow_mut().extend_from_slice(encoded);
        if self.pending_first.get() == 0 {
            self.pending_first.set(first);
            self.flush_wake.notify_one();
        }
        Ok(())
    }

    /// Discards the whole log and continues after `lsn` (a replica starting a
    /// full resync). The segment directory is fsynced so a crash cannot bring
    /// the old records back.
    pub fn reset(&self, lsn: u64) -> Result<(), WalError> {
        self.pending.borrow_mut().clear();
        self.pending_first.set(0);
        self.active.borrow_mut().take();
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        let segs: Vec<Segment> = self.segments.borrow_mut().drain(..).collect();
        for s in &segs {
            std::fs::remove_file(&s.path).map_err(|source| WalError::Remove {
                path: s.path.clone(),
                source,
            })?;
        }
        if self.enabled {
            sync_dir(&self.dir).map_err(|source| WalError::Sync {
                path: self.dir.clone(),
                source,
            })?;
        }
        self.last_lsn.set(lsn);
        self.written.set(lsn);
        self.shared.durable.store(lsn, Ordering::SeqCst);
        let mut r = self.ring.borrow_mut();
        r.batches.clear();
        r.bytes = 0;
        info!(dir = %self.dir.display(), removed = segs.len(), continue_after = lsn, "log discarded for a full resync");
        Ok(())
    }

    /// The LSN acknowledged under the fsync policy (what a replica reports).
    pub fn acked_lsn(&self) -> u64 {
        match self.policy {
            FsyncPolicy::Always => self.durable_lsn(),
            _ => self.written_lsn(),
        }
    }
}
