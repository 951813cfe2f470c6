#![no_main]
//! Whatever bytes arrive, the request parser never panics, never reads past
//! its input, and always makes progress or asks for more.

use libfuzzer_sys::fuzz_target;
use tessera::node::resp::{parse_request, Parsed};

fuzz_target!(|data: &[u8]| {
    let mut args = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        match parse_request(&data[pos..], &mut args) {
            Ok(Parsed::Incomplete) => break,
            Ok(Parsed::Command(n)) | Ok(Parsed::Empty(n)) => {
                assert!(n > 0 && pos + n <= data.len());
                for r in &args {
                    assert!(r.end <= n);
                }
                pos += n;
            }
            Err(e) => match e.skip {
                Some(s) => {
                    assert!(s > 0);
                    pos += s;
                }
                None => break,
            },
        }
    }
});
