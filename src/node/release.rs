//! Freeing old files — replaced snapshots, log segments behind a snapshot —
//! without stalling the event loop or the disk.
//!
//! Two costs, two measures:
//! - Freeing a large file's blocks takes ext4 80-370 ms per log segment or
//!   snapshot inside `unlink` (or in the last `close`). On the event loop
//!   that stalled every client and the replication stream, so it happens on
//!   a thread of its own (Redis likewise closes its old AOF in a background
//!   thread).
//! - On a filesystem mounted with `discard` (this project's CI machine,
//!   and common for cloud disks), the freed blocks are discarded at the
//!   next journal commit, all at once: 1 GB took the device 1.1 s, during
//!   which every other request waited — a log fsync under `--fsync always`,
//!   a backup's writes (`bench-backup` measured a concurrent 1 GB direct
//!   write at 1.4 s instead of 0.2-0.3 s). So a file is unlinked at once
//!   (its name is gone) but its blocks are given back from the end in
//!   slices of [`SLICE`], each made durable (which commits its discards)
//!   before the next, with a pause as long as the slice took: the device
//!   stays free at least half of the time, and no request waits behind
//!   more than one slice.
//!
//! A file still present after a crash is harmless: its records are older
//! than the newest snapshot, exactly as when the crash comes before the
//! removal. An unlinked file a crash leaves half-freed is freed by the
//! filesystem's orphan cleanup when it is mounted again.

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bytes freed per step (on the CI machine's disk, ~17 ms of discard).
pub const SLICE: u64 = 16 << 20;
/// The longest pause between slices, whatever the slice took.
const MAX_PAUSE: Duration = Duration::from_millis(50);

enum Job {
    /// Unlink, then free.
    Path(PathBuf),
    /// Already unlinked (replaced by a rename) and held open: free it.
    Open(File, PathBuf),
}

/// A file being freed, from its end.
struct Draining {
    file: File,
    left: u64,
    path: PathBuf,
}

fn sender() -> Option<mpsc::Sender<Job>> {
    static TX: OnceLock<Mutex<Option<mpsc::Sender<Job>>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("release".into())
            .spawn(move || worker(rx));
        Mutex::new(spawned.ok().map(|_| tx))
    });
    tx.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Removes `path` on the release thread: the name goes at once, the blocks
/// in paced slices.
pub fn unlink(path: PathBuf) {
    let back = match sender() {
        Some(tx) => match tx.send(Job::Path(path)) {
            Ok(()) => return,
            Err(mpsc::SendError(Job::Path(p))) => p,
            Err(mpsc::SendError(Job::Open(_, p))) => p,
        },
        None => path,
    };
    // No thread: remove it here.
    if let Err(e) = std::fs::remove_file(&back) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %back.display(), error = %e, "failed to remove an old file");
        }
    }
}

/// Frees a file that no longer has a name (it was renamed over) and is held
/// open (opened for writing, so it can be cut down in slices); `path` is
/// for messages. Without the thread it is closed here.
pub fn release_open(file: File, path: PathBuf) {
    if let Some(tx) = sender() {
        let _ = tx.send(Job::Open(file, path));
    }
}

/// Frees a file that no longer has a name, through its handle, here and
/// now, in the same paced slices as the release thread. For a process that
/// exits soon after (a backup run's retention), where a job queued on the
/// thread would be cut short by the exit and the rest freed at once.
pub fn free_paced(file: File, path: &std::path::Path) {
    let left = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut d = Draining {
        file,
        left,
        path: path.to_path_buf(),
    };
    loop {
        let t = Instant::now();
        if !step(&mut d) {
            return;
        }
        pause_after(t);
    }
}

/// The pause after a slice: as long as the slice took, at most
/// [`MAX_PAUSE`], so the device stays free at least half of the time.
fn pause_after(slice_started: Instant) {
    std::thread::sleep(slice_started.elapsed().min(MAX_PAUSE));
}

fn start(job: Job) -> Option<Draining> {
    let (file, path) = match job {
        Job::Open(f, p) => (f, p),
        Job::Path(p) => {
            // Open first: with the file open, unlink only removes the name.
            let f = std::fs::OpenOptions::new().write(true).open(&p);
            let removed = std::fs::remove_file(&p);
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "failed to remove an old file");
                    return None;
                }
            }
            match f {
                Ok(f) => (f, p),
                // Not openable for writing: freed when unlinked, as before.
                Err(_) => return None,
            }
        }
    };
    let left = file.metadata().map(|m| m.len()).unwrap_or(0);
    Some(Draining { file, left, path })
}

/// One slice off the end; false when the file is done (or failed: then it
/// is simply closed, freeing the rest at once).
fn step(d: &mut Draining) -> bool {
    if d.left == 0 {
        return false;
    }
    d.left = d.left.saturating_sub(SLICE);
    let r = d.file.set_len(d.left).and_then(|()| d.file.sync_all());
    if let Err(e) = r {
        tracing::debug!(path = %d.path.display(), error = %e, "freeing in slices failed: closing the file");
        return false;
    }
    d.left > 0
}

fn worker(rx: mpsc::Receiver<Job>) {
    let mut draining: std::collections::VecDeque<Draining> = Default::default();
    loop {
        // Names first: every queued unlink happens before the next slice.
        let job = if draining.is_empty() {
            match rx.recv() {
                Ok(j) => Some(j),
                Err(_) => return,
            }
        } else {
            rx.try_recv().ok()
        };
        if let Some(j) = job {
            draining.extend(start(j));
            continue;
        }
        let Some(d) = draining.front_mut() else {
            continue;
        };
        let t = Instant::now();
        if !step(d) {
            draining.pop_front();
        }
        pause_after(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A file of `len` bytes (a sparse one: only its size matters here).
    fn sized_file(p: &std::path::Path, len: u64) {
        File::create(p).expect("create").set_len(len).expect("size");
    }

    #[test]
    fn an_unlinked_file_loses_its_name_at_once_and_its_blocks_in_slices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("old.wal");
        sized_file(&p, 3 * SLICE + 5);
        // A second handle sees the blocks go: the name is gone before.
        let watch = File::open(&p).expect("open");
        unlink(p.clone());
        wait_for("the name to go", || !p.exists());
        wait_for("the file to be cut to nothing", || {
            watch.metadata().map(|m| m.len()).unwrap_or(1) == 0
        });
    }

    #[test]
    fn each_step_cuts_one_slice_off_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("old.tsnap");
        sized_file(&p, 2 * SLICE + 5);
        let mut d = start(Job::Path(p.clone())).expect("draining");
        assert!(!p.exists(), "unlinked before any slice");
        let mut lens = vec![d.file.metadata().expect("stat").len()];
        while step(&mut d) {
            lens.push(d.file.metadata().expect("stat").len());
        }
        lens.push(d.file.metadata().expect("stat").len());
        assert_eq!(lens, vec![2 * SLICE + 5, SLICE + 5, 5, 0]);
    }

    #[test]
    fn a_file_replaced_by_a_rename_is_freed_through_its_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s.tsnap");
        std::fs::write(&p, vec![1u8; 1 << 20]).expect("old");
        let old = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("hold");
        let watch = File::open(&p).expect("watch");
        std::fs::write(dir.path().join("s.tmp"), b"new").expect("new");
        std::fs::rename(dir.path().join("s.tmp"), &p).expect("rename");
        release_open(old, p.clone());
        wait_for("the old file to be cut", || {
            watch.metadata().map(|m| m.len()).unwrap_or(1) == 0
        });
        assert_eq!(
            std::fs::read(&p).expect("read"),
            b"new",
            "the new file is untouched"
        );
    }

    #[test]
    fn free_paced_cuts_an_unlinked_file_to_nothing_before_it_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("old.tsnap");
        sized_file(&p, 2 * SLICE + 5);
        let held = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("hold");
        let watch = File::open(&p).expect("watch");
        std::fs::remove_file(&p).expect("unlink");
        // Unlinked, the blocks stay as long as a handle is open.
        assert_eq!(watch.metadata().expect("stat").len(), 2 * SLICE + 5);
        free_paced(held, &p);
        assert_eq!(watch.metadata().expect("stat").len(), 0);
    }

    #[test]
    fn a_missing_file_is_no_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        unlink(dir.path().join("gone"));
        // The worker goes on: a later file is still removed.
        let p = dir.path().join("later");
        std::fs::write(&p, b"x").expect("write");
        unlink(p.clone());
        wait_for("the later file to go", || !p.exists());
    }
}
