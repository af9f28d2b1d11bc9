//! Route rewrites: a `path_regex` pattern and replacement (and `strip_prefix`) go through config
//! validation; when accepted, applying them to any path never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (&str, &str, &str, &str)| {
    let (pattern, replacement, prefix, path) = data;
    let yaml = format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}]\n\
         upstreams: {{ up: {{ targets: [{{ address: \"127.0.0.1:9\" }}] }} }}\n\
         routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: up\n    \
         rewrite: {{ strip_prefix: {}, path_regex: {{ pattern: {}, replacement: {} }} }}\n",
        serde_json::Value::from(prefix),
        serde_json::Value::from(pattern),
        serde_json::Value::from(replacement),
    );
    let env = |_: &str| None;
    let Ok(cfg) = portcullis_config::load_str(&yaml, None, Path::new("/nonexistent"), &env) else {
        return;
    };
    for route in &cfg.routes {
        let Some(rw) = route.rewrite.as_deref() else {
            continue;
        };
        let mut p = path.to_owned();
        if let Some(pre) = &rw.strip_prefix
            && let Some(rest) = p.strip_prefix(pre.as_str())
        {
            p = rest.to_owned();
        }
        if let Some((re, rep)) = &rw.path_regex {
            let _ = re.replace(&p, rep.as_str());
        }
    }
});
