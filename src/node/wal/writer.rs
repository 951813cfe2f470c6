//! Writing the log: the segment files, the sync thread (group commit), and
//! the `Wal` itself (append, flush, wait, roll, truncate).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::node::metrics::LATENCY_BUCKETS;

use super::format::{encode_header, encode_record, preallocate, segment_name, HEADER_LEN};
use super::reader::{scan_segment, WalReader};
use super::{
    coarse_now_ms, list_segments, sync_dir, Active, FsyncPolicy, Ring, SegFile, Segment,
    SegmentInfo, Shared, SyncMsg, Wal, WalError, WalStats, ARCHIVE_HOLD_FILE,
    DEFAULT_SEGMENT_BYTES, EXIT_LOG_FAILED, MARKER_INTERVAL_MS, MARKER_SLOT, SEGMENT_BYTES_ENV,
    TIME_MARKER,
};

impl Shared {
    /// Enters the failed state; stops the process unless tests said not to.
    fn fail(&self, err: &WalError) {
        error!(
            error = %err,
            "the write-ahead log failed; stopping the node: memory already holds changes the log \
             may not have, so serving on would answer with data a restart would not have"
        );
        self.failed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
        if self.exit_on_failure.load(Ordering::SeqCst) {
            std::process::exit(EXIT_LOG_FAILED);
        }
    }

    fn sync(&self, seg: &SegFile) -> Result<(), WalError> {
        let start = Instant::now();
        seg.file.sync_data().map_err(|source| WalError::Sync {
            path: seg.path.clone(),
            source,
        })?;
        if !seg.dir_synced.swap(true, Ordering::SeqCst) {
            sync_dir(&seg.dir).map_err(|source| WalError::Sync {
                path: seg.dir.clone(),
                source,
            })?;
        }
        let secs = start.elapsed().as_secs_f64();
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos
            .fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.fsync_buckets[i].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The sync thread: fsyncs what it is asked to (group commit: everything
/// queued while the previous fsync ran is covered by one fsync per file) and,
/// under `everysec`, the current segment once a second.
fn sync_thread(shared: Arc<Shared>, rx: mpsc::Receiver<SyncMsg>, policy: FsyncPolicy) {
    let tick = Duration::from_secs(1);
    let mut next_tick = Instant::now() + tick;
    loop {
        let mut batch: Vec<(Arc<SegFile>, u64)> = Vec::new();
        let mut periodic = false;
        if policy == FsyncPolicy::EverySec {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(SyncMsg::Sync(f, l)) => batch.push((f, l)),
                Err(mpsc::RecvTimeoutError::Timeout) => periodic = true,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(SyncMsg::Sync(f, l)) => batch.push((f, l)),
                Err(_) => return,
            }
        }
        if periodic {
            next_tick = Instant::now() + tick;
            let cur = shared
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            // Requests sent before `current` moved on (a roll) are drained
            // after reading it, so an older segment is synced first.
            while let Ok(SyncMsg::Sync(f, l)) = rx.try_recv() {
                batch.push((f, l));
            }
            if let Some((f, l)) = cur {
                if l > shared.durable.load(Ordering::SeqCst) {
                    batch.push((f, l));
                }
            }
        } else {
            while let Ok(SyncMsg::Sync(f, l)) = rx.try_recv() {
                batch.push((f, l));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let mut upto = 0;
        let mut prev: Option<&Arc<SegFile>> = None;
        for (f, l) in &batch {
            if !prev.is_some_and(|p| Arc::ptr_eq(p, f)) {
                // Consecutive requests for one file share one fsync.
                if let Err(e) = shared.sync(f) {
                    shared.fail(&e);
                    return;
                }
            }
            prev = Some(f);
            upto = upto.max(*l);
        }
        shared.durable.fetch_max(upto, Ordering::SeqCst);
        shared.changed.notify_waiters();
    }
}

impl Wal {
    fn new(enabled: bool, policy: FsyncPolicy, dir: PathBuf, segment_bytes: u64) -> Wal {
        Wal {
            enabled,
            policy,
            dir,
            segment_bytes,
            last_lsn: Cell::new(0),
            pending: RefCell::new(Vec::new()),
            pending_first: Cell::new(0),
            spare: RefCell::new(Vec::new()),
            written: Cell::new(0),
            written_changed: Notify::new(),
            roll_next: Cell::new(false),
            segments: RefCell::new(Vec::new()),
            active: RefCell::new(None),
            bytes_written: Cell::new(0),
            flush_wake: Notify::new(),
            started: Cell::new(false),
            shared: Arc::new(Shared {
                durable: AtomicU64::new(0),
                failed: AtomicBool::new(false),
                changed: Notify::new(),
                current: Mutex::new(None),
                fsyncs: AtomicU64::new(0),
                fsync_nanos: AtomicU64::new(0),
                fsync_buckets: Default::default(),
                exit_on_failure: AtomicBool::new(true),
            }),
            sync_tx: RefCell::new(None),
            sync_thread: RefCell::new(None),
            ring: RefCell::new(Ring::default()),
            ring_changed: Notify::new(),
            time_markers: Cell::new(false),
            last_marker_ms: Cell::new(0),
            archive_hold: Cell::new(None),
        }
    }

    /// Memory only: LSNs are counted, nothing is written.
    pub fn disabled() -> Rc<Wal> {
        Rc::new(Wal::new(
            false,
            FsyncPolicy::No,
            PathBuf::new(),
            DEFAULT_SEGMENT_BYTES,
        ))
    }

    /// Opens (or creates) the log in `dir`, validating every record. The
    /// segment size comes from `TESSERA_WAL_SEGMENT_BYTES` when set.
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<Rc<Wal>, WalError> {
        let segment_bytes = std::env::var(SEGMENT_BYTES_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_SEGMENT_BYTES);
        let wal = Self::open_with(dir, policy, segment_bytes)?;
        wal.time_markers.set(true);
        Ok(wal)
    }

    /// [`Wal::open`] with an explicit segment size.
    pub fn open_with(
        dir: &Path,
        policy: FsyncPolicy,
        segment_bytes: u64,
    ) -> Result<Rc<Wal>, WalError> {
        let open_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WalError::Open { path, source }
        };
        std::fs::create_dir_all(dir).map_err(open_err(dir))?;
        let found = list_segments(dir).map_err(open_err(dir))?;
        let wal = Wal::new(true, policy, dir.to_path_buf(), segment_bytes);
        let mut segments = Vec::new();
        let mut last_lsn: Option<u64> = None;
        let mut active: Option<(PathBuf, u64, u64, bool)> = None;
        let n = found.len();
        for (i, (name_lsn, path)) in found.into_iter().enumerate() {
            let is_last = i + 1 == n;
            let bytes = std::fs::read(&path).map_err(|source| WalError::Read {
                path: path.clone(),
                source,
            })?;
            let scan = scan_segment(&path, &bytes, name_lsn, is_last)?;
            drop(bytes);
            if let Some(prev) = last_lsn {
                if scan.first_lsn != prev + 1 {
                    return Err(WalError::Corrupt {
                        path,
                        offset: 0,
                        reason: format!(
                            "segment starts at LSN {} but the previous one ends at {prev} (a gap or overlap in the log)",
                            scan.first_lsn
                        ),
                    });
                }
            }
            if scan.unwritten_tail && !is_last {
                info!(path = %path.display(), offset = scan.valid_len, "cutting the unwritten preallocated tail of a closed log segment (a crash came before its cut)");
            }
            // The last segment keeps its unwritten tail: it is still
            // preallocated, and new records go after its valid ones.
            if scan.torn.is_some() || (scan.unwritten_tail && !is_last) {
                if let Some((offset, reason)) = &scan.torn {
                    warn!(path = %path.display(), offset, reason = %reason, "truncating a torn tail of the log (a write cut short by a crash)");
                }
                if scan.valid_len < HEADER_LEN as u64 {
                    std::fs::remove_file(&path).map_err(|source| WalError::Remove {
                        path: path.clone(),
                        source,
                    })?;
                    last_lsn = Some(scan.last_lsn);
                    continue;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(open_err(&path))?;
                f.set_len(scan.valid_len)
                    .and_then(|_| f.sync_all())
                    .map_err(|source| WalError::Write {
                        path: path.clone(),
                        source,
                    })?;
            }
            last_lsn = Some(scan.last_lsn);
            if is_last {
                active = Some((
                    path.clone(),
                    scan.first_lsn,
                    scan.valid_len,
                    scan.last_lsn >= scan.first_lsn,
                ));
            }
            segments.push(Segment {
                first_lsn: scan.first_lsn,
                path,
            });
        }
        let last = last_lsn.unwrap_or(0);
        wal.last_lsn.set(last);
        wal.written.set(last);
        wal.shared.durable.store(last, Ordering::SeqCst);
        // New writes append to the last segment (after its valid records).
        if let Some((path, _first, size, has_records)) = active {
            let mut file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(open_err(&path))?;
            file.seek(SeekFrom::Start(size)).map_err(open_err(&path))?;
            let on_disk = file.metadata().map_err(open_err(&path))?.len();
            if on_disk < segment_bytes {
                preallocate(&file, segment_bytes);
            }
            let seg = Arc::new(SegFile {
                file,
                path,
                dir: dir.to_path_buf(),
                dir_synced: AtomicBool::new(true),
            });
            *wal.shared.current.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((seg.clone(), last));
            *wal.active.borrow_mut() = Some(Active {
                seg,
                size,
                has_records,
            });
        }
        let hold = std::fs::read_to_string(dir.join(ARCHIVE_HOLD_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        wal.archive_hold.set(hold);
        info!(dir = %dir.display(), segments = segments.len(), last_lsn = last, archive_hold = ?hold, "log opened");
        *wal.segments.borrow_mut() = segments;
        Ok(Rc::new(wal))
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Tests: report failures through `wait` instead of exiting.
    pub fn set_exit_on_failure(&self, exit: bool) {
        self.shared.exit_on_failure.store(exit, Ordering::SeqCst);
    }

    /// The records with an LSN above `after`, in order.
    pub fn read_from(&self, after: u64) -> Result<WalReader, WalError> {
        if !self.enabled {
            return Ok(WalReader::empty());
        }
        let segs = self.segments.borrow();
        let mut paths = VecDeque::new();
        for (i, s) in segs.iter().enumerate() {
            // Skip segments whose every record is at or below `after`.
            if let Some(next) = segs.get(i + 1) {
                if next.first_lsn <= after + 1 {
                    continue;
                }
            }
            paths.push_back(s.path.clone());
        }
        Ok(WalReader {
            segments: paths,
            after,
            cur: None,
            body: Vec::new(),
            done: false,
        })
    }

    /// Makes the next LSN at least `lsn + 1` (after loading a snapshot that is
    /// newer than the retained log).
    pub fn ensure_after(&self, lsn: u64) {
        if self.last_lsn.get() < lsn {
            if self.enabled && self.active.borrow().is_some() {
                warn!(
                    log_last_lsn = self.last_lsn.get(),
                    snapshot_lsn = lsn,
                    "the snapshot is newer than the log; continuing in a new segment"
                );
                self.roll_next.set(true);
            }
            self.last_lsn.set(lsn);
            self.written.set(lsn);
            self.shared.durable.fetch_max(lsn, Ordering::SeqCst);
        }
    }

    /// Appends a record to the pending batch and returns its LSN. No I/O.
    pub fn append(&self, slot: u16, args: &[&[u8]]) -> u64 {
        if self.enabled && self.time_markers.get() {
            let now = coarse_now_ms();
            if now >= self.last_marker_ms.get() + MARKER_INTERVAL_MS {
                self.last_marker_ms.set(now);
                self.append_record(MARKER_SLOT, &[TIME_MARKER, &now.to_le_bytes()]);
            }
        }
        self.append_record(slot, args)
    }

    fn append_record(&self, slot: u16, args: &[&[u8]]) -> u64 {
        let lsn = self.last_lsn.get() + 1;
        self.last_lsn.set(lsn);
        if !self.enabled {
            return lsn;
        }
        let mut pending = self.pending.borrow_mut();
        encode_record(&mut pending, lsn, slot, args);
        if self.pending_first.get() == 0 {
            self.pending_first.set(lsn);
            // The flusher takes the whole buffer, so only the first record
            // of a batch needs to wake it.
            self.flush_wake.notify_one();
        }
        lsn
    }

    fn acked(&self, lsn: u64) -> bool {
        match self.policy {
            FsyncPolicy::Always => self.shared.durable.load(Ordering::SeqCst) >= lsn,
            _ => self.written.get() >= lsn,
        }
    }

    /// Resolves when `lsn` is acknowledged by the fsync policy.
    pub async fn wait(&self, lsn: u64) -> Result<(), WalError> {
        if !self.enabled {
            return Ok(());
        }
        if !self.started.get() {
            // No flusher yet (recovery, tests): do its work inline.
            self.flush_pending();
            if self.policy == FsyncPolicy::Always {
                self.sync_now()?;
            }
        }
        loop {
            let durable = self.shared.changed.notified();
            let written = self.written_changed.notified();
            tokio::pin!(durable, written);
            durable.as_mut().enable();
            written.as_mut().enable();
            if self.shared.failed.load(Ordering::SeqCst) {
                return Err(WalError::Failed);
            }
            if self.acked(lsn) {
                return Ok(());
            }
            if self.policy == FsyncPolicy::Always {
                durable.await;
            } else {
                tokio::select! {
                    _ = durable => {}
                    _ = written => {}
                }
            }
        }
    }

    /// Resolves when `lsn` is fsynced, whatever the policy (a snapshot must
    /// never be newer than the durable log).
    pub async fn sync_through(&self, lsn: u64) -> Result<(), WalError> {
        if !self.enabled {
            return Ok(());
        }
        if !self.started.get() {
            self.flush_pending();
            return self.sync_now();
        }
        let mut requested = false;
        loop {
            let durable = self.shared.changed.notified();
            let written = self.written_changed.notified();
            tokio::pin!(durable, written);
            durable.as_mut().enable();
            written.as_mut().enable();
            if self.shared.failed.load(Ordering::SeqCst) {
                return Err(WalError::Failed);
            }
            if self.shared.durable.load(Ordering::SeqCst) >= lsn {
                return Ok(());
            }
            if !requested && self.written.get() >= lsn {
                if let Some(a) = self.active.borrow().as_ref() {
                    self.send_sync(a.seg.clone(), self.written.get());
                }
                requested = true;
            }
            tokio::select! {
                _ = durable => {}
                _ = written => {}
            }
        }
    }

    pub fn last_lsn(&self) -> u64 {
        self.last_lsn.get()
    }
    /// Highest LSN fsynced (for a disabled log: the last assigned).
    pub fn durable_lsn(&self) -> u64 {
        if !self.enabled {
            return self.last_lsn.get();
        }
        self.shared.durable.load(Ordering::SeqCst)
    }
    /// Highest LSN written to a segment file (maybe not yet fsynced).
    pub fn written_lsn(&self) -> u64 {
        if !self.enabled {
            return self.last_lsn.get();
        }
        self.written.get()
    }
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Starts the flusher task (on the current LocalSet) and, except under
    /// `always`, the sync thread.
    pub fn start(self: &Rc<Self>) {
        if !self.enabled || self.started.replace(true) {
            return;
        }
        if self.policy != FsyncPolicy::Always {
            self.start_sync_thread();
        }
        let wal = self.clone();
        tokio::task::spawn_local(async move {
            loop {
                wal.flush_wake.notified().await;
                if wal.shared.failed.load(Ordering::SeqCst) {
                    return;
                }
                wal.flush_pending();
            }
        });
    }

    /// `always` has no sync thread: the flusher fsyncs on the event loop, as
    /// Redis does. Every client of the group waits for that fsync anyway,
    /// and handing it to a thread and back cost two wake-ups per group (-P 1
    /// SET at 0.7x Redis); requests that arrive meanwhile form the next
    /// group. Under `everysec` and `no` the thread keeps fsyncs off the loop.
    fn start_sync_thread(&self) {
        let (tx, rx) = mpsc::channel();
        let shared = self.shared.clone();
        let policy = self.policy;
        let handle = std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || sync_thread(shared, rx, policy));
        match handle {
            Ok(h) => {
                *self.sync_tx.borrow_mut() = Some(tx);
                *self.sync_thread.borrow_mut() = Some(h);
            }
            Err(source) => self.shared.fail(&WalError::Sync {
                path: self.dir.clone(),
                source,
            }),
        }
    }

    fn send_sync(&self, seg: Arc<SegFile>, lsn: u64) {
        let sent = self
            .sync_tx
            .borrow()
            .as_ref()
            .is_some_and(|tx| tx.send(SyncMsg::Sync(seg.clone(), lsn)).is_ok());
        if !sent {
            // No sync thread (`always`, not started, or it died failing):
            // sync here. Segments are synced in order, so `durable` never
            // passes an unsynced record.
            match self.shared.sync(&seg) {
                Ok(()) => {
                    self.shared.durable.fetch_max(lsn, Ordering::SeqCst);
                    self.shared.changed.notify_waiters();
                }
                Err(e) => self.shared.fail(&e),
            }
        }
    }

    /// fsyncs the active segment on this thread.
    fn sync_now(&self) -> Result<(), WalError> {
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(WalError::Failed);
        }
        let seg = self.active.borrow().as_ref().map(|a| a.seg.clone());
        if let Some(seg) = seg {
            if let Err(e) = self.shared.sync(&seg) {
                self.shared.fail(&e);
                return Err(e);
            }
        }
        self.shared
            .durable
            .fetch_max(self.written.get(), Ordering::SeqCst);
        self.shared.changed.notify_waiters();
        Ok(())
    }

    pub(super) fn fail(&self, e: WalError) {
        self.shared.fail(&e);
        self.written_changed.notify_waiters();
    }

    /// Starts a new segment whose first record will be `first_lsn`.
    fn roll(&self, first_lsn: u64) -> Result<(), WalError> {
        let path = self.dir.join(segment_name(first_lsn));
        let write_err = |source| WalError::Write {
            path: path.clone(),
            source,
        };
        if let Some(old) = self.active.borrow_mut().take() {
            if old.has_records {
                // Cut the preallocated part never written, so a closed
                // segment's size is its records' (the sync below makes the
                // cut durable with them).
                old.seg
                    .file
                    .set_len(old.size)
                    .map_err(|source| WalError::Write {
                        path: old.seg.path.clone(),
                        source,
                    })?;
                // Closing a segment makes it durable whatever the policy.
                self.send_sync(old.seg, first_lsn - 1);
            } else {
                // A segment without records would break LSN continuity.
                drop(old);
                let old_path = self.segments.borrow_mut().pop().map(|s| s.path);
                if let Some(p) = old_path {
                    std::fs::remove_file(&p)
                        .map_err(|source| WalError::Remove { path: p, source })?;
                }
            }
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(write_err)?;
        file.write_all(&encode_header(first_lsn))
            .map_err(write_err)?;
        preallocate(&file, self.segment_bytes);
        let seg = Arc::new(SegFile {
            file,
            path: path.clone(),
            dir: self.dir.clone(),
            dir_synced: AtomicBool::new(false),
        });
        self.segments.borrow_mut().push(Segment { first_lsn, path });
        *self.active.borrow_mut() = Some(Active {
            seg,
            size: HEADER_LEN as u64,
            has_records: false,
        });
        self.bytes_written
            .set(self.bytes_written.get() + HEADER_LEN as u64);
        Ok(())
    }

    /// Writes the pending batch to the active segment (the flusher's work).
    /// Bytes appended but not yet written to the segment file.
    pub fn pending_bytes(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Writes the pending records now instead of waiting for the flusher
    /// task (a primary streaming to replicas: see `push_to_replicas`).
    pub fn flush_now(&self) {
        if self.enabled && self.started.get() {
            self.flush_pending();
        }
    }

    fn flush_pending(&self) {
        let first = self.pending_first.replace(0);
        if first == 0 || self.shared.failed.load(Ordering::SeqCst) {
            return;
        }
        let mut buf = std::mem::replace(&mut *self.pending.borrow_mut(), self.spare.take());
        let last = self.last_lsn.get();
        let needs_roll = self.roll_next.replace(false)
            || match self.active.borrow().as_ref() {
                None => true,
                Some(a) => a.has_records && a.size >= self.segment_bytes,
            };
        if needs_roll {
            if let Err(e) = self.roll(first) {
                return self.fail(e);
            }
        }
        let seg = {
            let mut active = self.active.borrow_mut();
            let a = active.as_mut().expect("a segment is active after rolling");
            if let Err(source) = (&a.seg.file).write_all(&buf) {
                let path = a.seg.path.clone();
                drop(active);
                return self.fail(WalError::Write { path, source });
            }
            a.size += buf.len() as u64;
            a.has_records = true;
            a.seg.clone()
        };
        self.bytes_written
            .set(self.bytes_written.get() + buf.len() as u64);
        self.written.set(last);
        self.feed_ring(first, last, &buf);
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((seg.clone(), last));
        match self.policy {
            FsyncPolicy::Always => self.send_sync(seg, last),
            _ => self.written_changed.notify_waiters(),
        }
        buf.clear();
        if buf.capacity() <= 16 * 1024 * 1024 {
            *self.spare.borrow_mut() = buf;
        }
    }

    /// Writes and fsyncs everything pending and stops the sync thread
    /// (clean shutdown; also done on drop).
    pub fn close(&self) -> Result<(), WalError> {
        if !self.enabled || self.shared.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.flush_pending();
        // Cut the active segment's unwritten tail before the last sync:
        // a cleanly stopped log has no preallocated zeros.
        let cut = match self.active.borrow().as_ref() {
            Some(a) => a
                .seg
                .file
                .set_len(a.size)
                .map_err(|source| WalError::Write {
                    path: a.seg.path.clone(),
                    source,
                }),
            None => Ok(()),
        };
        let res = cut.and_then(|()| self.sync_now());
        self.sync_tx.borrow_mut().take();
        if let Some(h) = self.sync_thread.borrow_mut().take() {
            let _ = h.join();
        }
        res
    }

    /// Removes segments whose every record is at or below `lsn` (never the
    /// segment being written). Returns how many were removed.
    pub fn truncate_through(&self, lsn: u64) -> Result<usize, WalError> {
        if !self.enabled {
            return Ok(0);
        }
        // A backup that has not archived a segment yet still needs it.
        let lsn = self.archive_hold.get().map_or(lsn, |h| h.min(lsn));
        let mut segs = self.segments.borrow_mut();
        let mut removable = 0;
        while removable + 1 < segs.len() && segs[removable + 1].first_lsn - 1 <= lsn {
            removable += 1;
        }
        for s in segs.iter().take(removable) {
            super::release::unlink(s.path.clone());
        }
        segs.drain(..removable);
        if removable > 0 {
            info!(
                through_lsn = lsn,
                removed = removable,
                "log segments truncated"
            );
        }
        Ok(removable)
    }

    /// The segments on disk, oldest first (for backups). The active one's
    /// `bytes` and `last_lsn` are consistent: both as of the last write.
    pub fn segment_list(&self) -> Vec<SegmentInfo> {
        if !self.enabled {
            return Vec::new();
        }
        let segs = self.segments.borrow();
        let active = self.active.borrow();
        let mut out = Vec::with_capacity(segs.len());
        for (i, s) in segs.iter().enumerate() {
            match segs.get(i + 1) {
                Some(next) => out.push(SegmentInfo {
                    path: s.path.clone(),
                    first_lsn: s.first_lsn,
                    last_lsn: next.first_lsn - 1,
                    closed: true,
                    bytes: None,
                }),
                None => {
                    let (bytes, has) = match active.as_ref() {
                        Some(a) if a.seg.path == s.path => (Some(a.size), a.has_records),
                        _ => (None, true),
                    };
                    if has {
                        out.push(SegmentInfo {
                            path: s.path.clone(),
                            first_lsn: s.first_lsn,
                            last_lsn: self.written.get(),
                            closed: false,
                            bytes,
                        });
                    }
                }
            }
        }
        out
    }

    /// Sets the archive hold (a backup archived everything through `lsn`),
    /// persisted in the log directory so a restart keeps honouring it.
    pub fn set_archive_hold(&self, lsn: u64) -> Result<(), WalError> {
        if !self.enabled {
            return Ok(());
        }
        let path = self.dir.join(ARCHIVE_HOLD_FILE);
        let tmp = self.dir.join(format!("{ARCHIVE_HOLD_FILE}.tmp"));
        let write_err = |source| WalError::Write {
            path: path.clone(),
            source,
        };
        std::fs::write(&tmp, format!("{lsn}\n")).map_err(write_err)?;
        std::fs::rename(&tmp, &path).map_err(write_err)?;
        self.archive_hold.set(Some(lsn));
        Ok(())
    }

    /// The archive hold, if a backup set one.
    pub fn archive_hold(&self) -> Option<u64> {
        self.archive_hold.get()
    }

    pub fn stats(&self) -> WalStats {
        WalStats {
            bytes_written: self.bytes_written.get(),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
            segments: self.segments.borrow().len(),
            fsync_latency_sum_secs: self.shared.fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            fsync_latency_buckets: self
                .shared
                .fsync_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            error!(error = %e, "final log flush failed");
        }
    }
}
