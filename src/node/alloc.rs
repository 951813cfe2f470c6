//! The global allocator: mimalloc (jemalloc with the `jemalloc` feature),
//! counting live bytes so INFO's `used_memory` and `maxmemory` mean what
//! they mean in Redis.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(not(feature = "jemalloc"))]
use mimalloc::MiMalloc as Inner;
#[cfg(feature = "jemalloc")]
use tikv_jemallocator::Jemalloc as Inner;

pub struct CountingAlloc;

/// The allocator's name, as INFO's `mem_allocator` reports it.
#[cfg(not(feature = "jemalloc"))]
pub const ALLOCATOR: &str = "mimalloc";
#[cfg(feature = "jemalloc")]
pub const ALLOCATOR: &str = "jemalloc";

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the allocator; the counter is
// bookkeeping only.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = Inner.alloc(layout);
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Inner.dealloc(ptr, layout);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = Inner.alloc_zeroed(layout);
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = Inner.realloc(ptr, layout, new_size);
        if !p.is_null() {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

/// Bytes currently allocated by the process.
pub fn allocated() -> usize {
    ALLOCATED.load(Ordering::Relaxed)
}

static CLIENT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes held by client connections' input and output buffers.
pub fn client_bytes() -> usize {
    CLIENT_BYTES.load(Ordering::Relaxed)
}

/// One connection's share of [`client_bytes`], given back when dropped.
#[derive(Debug, Default)]
pub struct ClientBytes(usize);

impl ClientBytes {
    pub fn set(&mut self, n: usize) {
        if n != self.0 {
            CLIENT_BYTES.fetch_add(n, Ordering::Relaxed);
            CLIENT_BYTES.fetch_sub(self.0, Ordering::Relaxed);
            self.0 = n;
        }
    }
}

impl Drop for ClientBytes {
    fn drop(&mut self) {
        CLIENT_BYTES.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Resident set size from /proc, in bytes (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// The memory limit of this process's cgroup (a pod's memory limit), if it
/// has one: cgroup v2's `memory.max`, else v1's `memory.limit_in_bytes`.
pub fn cgroup_memory_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    v2.or_else(v1).and_then(|s| parse_cgroup_limit(&s))
}

/// `max` (v2) and v1's page-rounded i64::MAX mean no limit.
fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n > 0 && n < 1 << 62).then_some(n)
}

/// The default `maxmemory`: three quarters of the cgroup's limit, so that
/// writes are refused (-OOM) before the kernel kills the node; the rest is
/// for what `maxmemory` does not refuse (client buffers, the replication
/// ring, snapshots) and the allocator's overhead. 0 (no limit) without one.
pub fn default_maxmemory() -> u64 {
    cgroup_memory_limit().map_or(0, |limit| limit / 4 * 3)
}

/// Whether this process is asking the kernel for small pages only.
static SMALL_PAGES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns transparent huge pages off (`true`) or back to what the system
/// and the allocator ask for (`false`) for memory faulted in from now on.
/// A slot import's target asks for small pages while it stages data: the
/// allocator advises huge pages for its segments, and where a hypervisor
/// backs guest memory lazily, faulting in one huge page took ~5 ms on the
/// event loop (2 MiB zeroed against host faults), so staging 500 MB took
/// twice as long as with small pages (docs/benchmarks.md). Pages already
/// resident stay as they are; elsewhere huge pages stay on, where they
/// save TLB misses on every read.
pub fn small_pages(on: bool) {
    if SMALL_PAGES.swap(on, Ordering::Relaxed) == on {
        return;
    }
    // SAFETY: prctl with integer arguments only; it sets a flag of this
    // process that the kernel checks at each page fault.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "transparent huge pages stay as the system sets them");
    }
}

#[cfg(not(feature = "jemalloc"))]
extern "C" {
    /// mimalloc's `mi_collect` (in the library `mimalloc` links).
    fn mi_collect(force: bool);
}

/// Returns the memory the allocator holds free to the OS. mimalloc delays
/// such returns and carries them out only when a thread calls into it
/// again, so a node that went quiet after a load (or whose freed memory
/// belongs to threads that are idle) kept it resident: with the log on,
/// RSS per key of 16-byte strings was 1.84× Redis's, and 1.07× with this.
/// Called on the event loop once a second, where a forced collection cost
/// no measurable throughput (docs/benchmarks.md, "Memory per key").
pub fn collect() {
    #[cfg(not(feature = "jemalloc"))]
    // SAFETY: a plain call into the linked allocator, which takes no
    // pointers and may be called from any thread at any time.
    unsafe {
        mi_collect(true)
    };
}

#[cfg(test)]
mod tests {
    use super::parse_cgroup_limit;

    #[test]
    fn cgroup_limits_parse_and_unlimited_is_none() {
        assert_eq!(parse_cgroup_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit("0\n"), None);
        assert_eq!(parse_cgroup_limit(""), None);
    }
}
