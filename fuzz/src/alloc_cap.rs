//! A counting global allocator with a cap: a fuzz input that makes the code
//! under test hold more than [`CAP`] bytes at once (a length prefix trusted
//! before the bytes behind it arrived, a count that allocates up front)
//! aborts, and the fuzzer keeps the input as a crash.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most live heap the targets may hold. Above the largest value the
/// node accepts by design (a 512 MiB string, `proto-max-bulk-len`) and the
/// copies made while building it; far below what a length prefix of 4 GiB
/// or a count of 2^64 would ask for.
pub const CAP: usize = 1280 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Bytes allocated through Rust's allocator and not yet freed.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The highest [`live`] since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

pub fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

fn grow(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
    if now > CAP {
        // No allocation from here on: stderr is unbuffered, the message static.
        let mut e = std::io::stderr();
        let _ = e.write_all(b"tessera-fuzz: allocation cap exceeded (");
        let _ = e.write_all(itoa(by).as_bytes());
        let _ = e.write_all(b" bytes asked)\n");
        std::process::abort();
    }
}

/// Formats `n` without allocating.
fn itoa(mut n: usize) -> ItoaBuf {
    let mut b = ItoaBuf([0; 20], 20);
    loop {
        b.1 -= 1;
        b.0[b.1] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return b;
        }
    }
}

struct ItoaBuf([u8; 20], usize);

impl ItoaBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.0[self.1..]
    }
}

/// The system allocator, counted and capped.
pub struct CappedAlloc;

// SAFETY: every call forwards to `System` with the caller's layout; the
// counters are plain atomics.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grow(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}
