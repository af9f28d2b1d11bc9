//! The YAML reader with positions (saphyr events to JSON plus a source map): never panics, and
//! every position it reports for a key lies inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_config::source;

fuzz_target!(|text: &str| {
    let env = |k: &str| (k == "SET").then(|| "value".to_owned());
    let Ok((value, map)) = source::parse(text, &env) else {
        return;
    };
    // YAML breaks lines at "\n", "\r\n" and a lone "\r" (YAML 1.2 §5.4), so count them the same
    // way; `str::lines` alone misses lone "\r" (a crash this target found, kept in the corpus).
    let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 2;
    if let Some(obj) = value.as_object() {
        for key in obj.keys() {
            if let Some(pos) = map.locate(key) {
                assert!(pos.line >= 1 && pos.line <= lines, "{key}: {pos:?}");
            }
        }
    }
    let _ = map.locate("routes[0].match.path_prefix");
});
