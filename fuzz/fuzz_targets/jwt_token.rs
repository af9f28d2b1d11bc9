//! The `jwt` plugin on any bearer token (header segment, claims, signature): never panics, and
//! nothing but a token signed with the configured key passes.
#![no_main]

use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use portcullis_plugins::{BuildCtx, Flow, Plugin, RequestCtx};

fn plugin() -> &'static Arc<dyn Plugin> {
    static P: OnceLock<Arc<dyn Plugin>> = OnceLock::new();
    P.get_or_init(|| {
        let cfg = serde_json::json!({
            "keys": [
                { "kid": "k1", "algorithm": "HS256", "secret": "a-fuzzing-secret-that-is-long-enough-01" }
            ],
            "claims_to_headers": { "sub": "x-user" }
        });
        let ctx = BuildCtx {
            scope: "fuzz",
            base_dir: std::path::Path::new("/nonexistent"),
        };
        portcullis_plugins::jwt::build(&cfg, &ctx).expect("plugin")
    })
}

fuzz_target!(|token: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(&[b"Bearer ".as_slice(), token].concat()) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut parts = http::Request::get("/x")
        .header("authorization", value)
        .body(())
        .expect("request")
        .into_parts()
        .0;
    let mut ctx = RequestCtx::new(
        HeaderValue::from_static("fuzz"),
        std::net::IpAddr::from([127, 0, 0, 1]),
        Arc::from("fuzz"),
    );
    let flow = rt.block_on(plugin().on_request(&mut ctx, &mut parts).resolve());
    // A random token never carries a valid HS256 signature of our secret.
    assert!(matches!(flow, Flow::Respond(_)), "a fuzzed token was accepted");
});
