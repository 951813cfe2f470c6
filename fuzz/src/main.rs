//! The libFuzzer driver: one binary for every target, the target named by
//! `TESSERA_FUZZ_TARGET` (one instrumented link instead of one per target).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_fuzz::{alloc_cap::CappedAlloc, Target};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fuzz_target!(|data: &[u8]| {
    Target::from_env().run(data);
});
