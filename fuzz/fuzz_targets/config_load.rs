//! Whole config loading (YAML, interpolation, serde, validation, lint policies): never panics,
//! whatever the text; errors carry messages.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let env = |k: &str| (k == "SET").then(|| "value".to_owned());
    match portcullis_config::load_str(text, None, Path::new("/nonexistent"), &env) {
        Ok(cfg) => {
            let _ = cfg.hash.len();
        }
        Err(errs) => {
            for e in &errs.0 {
                assert!(!e.message.is_empty());
            }
        }
    }
});
