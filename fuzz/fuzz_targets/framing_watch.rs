//! The HTTP/1.1 framing watcher (which flags Content-Length + Transfer-Encoding smuggling
//! attempts): never panics, and what it concludes does not depend on how the byte stream is
//! split into reads.
#![no_main]

// The watcher lives in the gateway binary crate, which has no library target; it is plain
// std code, so the file is compiled into the target as it is.
#[allow(dead_code)]
#[path = "../../crates/gateway/src/server/framing.rs"]
mod framing;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (u16, &[u8])| {
    let (cut, bytes) = data;
    let mut whole = framing::FramingWatch::new(8192);
    whole.feed(bytes);
    let cut = (cut as usize).min(bytes.len());
    let mut split = framing::FramingWatch::new(8192);
    split.feed(&bytes[..cut]);
    split.feed(&bytes[cut..]);
    assert_eq!(whole.ambiguous, split.ambiguous, "cut at {cut}");
    assert_eq!(whole.switched, split.switched, "cut at {cut}");
    let _ = whole.request_line();
});
