use jsonwebtoken::{EncodingKey, Header, encode};

use super::*;

const SECRET: &str = "an-hmac-secret-that-is-long-enough-32";

fn ctx() -> RequestCtx {
    RequestCtx::new(
        HeaderValue::from_static("rid"),
        "127.0.0.1".parse().unwrap(),
        Arc::from("l"),
    )
}

fn plugin(cfg: Value) -> Arc<dyn Plugin> {
    build(
        &cfg,
        &BuildCtx {
            scope: "t",
            base_dir: std::path::Path::new("."),
        },
    )
    .unwrap()
}

fn token(alg: Algorithm, claims: Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn run(p: &Arc<dyn Plugin>, auth: Option<&str>) -> (Flow, http::request::Parts, RequestCtx) {
    let mut b = http::Request::get("/x").header("x-user-id", "spoofed");
    if let Some(a) = auth {
        b = b.header("authorization", format!("Bearer {a}"));
    }
    let (mut parts, _) = b.body(()).unwrap().into_parts();
    let mut c = ctx();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let flow = rt.block_on(p.on_request(&mut c, &mut parts).resolve());
    (flow, parts, c)
}

fn exp_in(secs: i64) -> i64 {
    now_secs() as i64 + secs
}

#[test]
fn valid_hs256_token_passes_and_claims_become_headers() {
    let p = plugin(serde_json::json!({
        "keys": [{"algorithm": "HS256", "secret": SECRET}],
        "issuer": "https://auth.test", "audience": ["api"],
        "claims_to_headers": {"sub": "X-User-ID", "scope": "X-Scopes"},
        "required_scopes": ["read"]
    }));
    let t = token(
        Algorithm::HS256,
        serde_json::json!({
            "sub": "u-1", "iss": "https://auth.test", "aud": "api", "exp": exp_in(60), "scope": "read write"
        }),
    );
    let (flow, parts, c) = run(&p, Some(&t));
    assert!(matches!(flow, Flow::Continue), "{flow:?}");
    assert_eq!(parts.headers.get("x-user-id").unwrap(), "u-1");
    assert_eq!(parts.headers.get("x-scopes").unwrap(), "read write");
    assert_eq!(c.consumer.as_deref(), Some("u-1"));
    // Second time from the cache, same result.
    let (flow, parts, _) = run(&p, Some(&t));
    assert!(matches!(flow, Flow::Continue));
    assert_eq!(parts.headers.get("x-user-id").unwrap(), "u-1");
}

fn refused(flow: Flow) -> (StatusCode, String) {
    match flow {
        Flow::Respond(Reply::Error {
            status, headers, ..
        }) => {
            let www = headers
                .iter()
                .find(|(n, _)| n == header::WWW_AUTHENTICATE)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, www)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn attacks_and_bad_tokens_are_refused() {
    let p = plugin(serde_json::json!({
        "keys": [{"algorithm": "HS256", "secret": SECRET}],
        "audience": ["api"], "claims_to_headers": {"sub": "X-User-ID"}
    }));
    // Missing: 401 with a bare challenge; the spoofed header is gone.
    let (flow, parts, _) = run(&p, None);
    let (s, www) = refused(flow);
    assert_eq!(s, 401);
    assert_eq!(www, "Bearer realm=\"portcullis\"");
    assert!(parts.headers.get("x-user-id").is_none());
    // alg: none.
    let none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(format!(r#"{{"sub":"x","aud":"api","exp":{}}}"#, exp_in(60)).as_bytes())
    );
    let (s, www) = refused(run(&p, Some(&none)).0);
    assert_eq!(s, 401);
    assert!(www.contains("invalid_token"), "{www}");
    // Expired.
    let t = token(
        Algorithm::HS256,
        serde_json::json!({"sub": "x", "aud": "api", "exp": exp_in(-120)}),
    );
    let (s, www) = refused(run(&p, Some(&t)).0);
    assert_eq!(s, 401);
    assert!(www.contains("expired"), "{www}");
    // Another audience.
    let t = token(
        Algorithm::HS256,
        serde_json::json!({"sub": "x", "aud": "other", "exp": exp_in(60)}),
    );
    let (s, www) = refused(run(&p, Some(&t)).0);
    assert_eq!(s, 401);
    assert!(www.contains("audience"), "{www}");
    // Wrong signature.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "x", "aud": "api", "exp": exp_in(60)}),
        &EncodingKey::from_secret(b"another-secret-that-is-long-enough-1234"),
    )
    .unwrap();
    assert_eq!(refused(run(&p, Some(&forged)).0).0, 401);
    // No exp.
    let t = token(
        Algorithm::HS256,
        serde_json::json!({"sub": "x", "aud": "api"}),
    );
    assert_eq!(refused(run(&p, Some(&t)).0).0, 401);
}

#[test]
fn missing_scope_is_403() {
    let p = plugin(serde_json::json!({
        "keys": [{"algorithm": "HS256", "secret": SECRET}], "required_scopes": ["admin"]
    }));
    let t = token(
        Algorithm::HS256,
        serde_json::json!({"sub": "x", "exp": exp_in(60), "scope": "read"}),
    );
    let (s, www) = refused(run(&p, Some(&t)).0);
    assert_eq!(s, 403);
    assert!(www.contains("insufficient_scope"), "{www}");
}

#[test]
fn a_key_only_verifies_its_own_algorithm() {
    // An HS384 token against an HS256-only key is refused even with the right secret.
    let p = plugin(serde_json::json!({"keys": [{"algorithm": "HS256", "secret": SECRET}]}));
    let t = token(
        Algorithm::HS384,
        serde_json::json!({"sub": "x", "exp": exp_in(60)}),
    );
    let (s, www) = refused(run(&p, Some(&t)).0);
    assert_eq!(s, 401);
    assert!(www.contains("no key"), "{www}");
}

#[test]
fn config_mistakes_are_reported() {
    let b = |v: Value| {
        build(
            &v,
            &BuildCtx {
                scope: "t",
                base_dir: std::path::Path::new("."),
            },
        )
        .unwrap_err()
    };
    assert_eq!(
        b(serde_json::json!({})).message,
        "give `keys` or a `jwks_url`"
    );
    assert_eq!(
        b(serde_json::json!({"keys": [{"algorithm": "RS256", "secret": SECRET}]})).path,
        "keys[0].secret"
    );
    assert_eq!(
        b(serde_json::json!({"keys": [{"algorithm": "none", "secret": SECRET}]})).path,
        "keys[0].algorithm"
    );
    assert_eq!(
        b(serde_json::json!({"keys": [{"algorithm": "HS256", "secret": "short"}]})).path,
        "keys[0].secret"
    );
    assert_eq!(
        b(serde_json::json!({"keys": [{"algorithm": "RS256", "public_key": "not pem"}]})).path,
        "keys[0].public_key"
    );
}

fn base64url(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
