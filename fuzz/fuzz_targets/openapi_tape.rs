//! JSON bodies as the `openapi` plugin reads them (`openapi::tape::Tape`): parsing never panics,
//! accepts and refuses exactly what `serde_json` does, and a parsed body reads back as the
//! `serde_json::Value` of the same bytes (every member, element and string).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_plugins::openapi::tape::Tape;

fuzz_target!(|data: &[u8]| {
    let tape = Tape::parse(data);
    let value = serde_json::from_slice::<serde_json::Value>(data);
    match (tape, value) {
        (Ok(t), Ok(v)) => assert_eq!(t.to_value(), v),
        (Err(_), Err(_)) => {}
        (t, v) => panic!("tape {:?} but serde_json {:?}", t.is_ok(), v.is_ok()),
    }
});
