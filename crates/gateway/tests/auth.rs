//! End-to-end authentication and access plugins against the real binary: `jwt` with static keys
//! (HS256, RS256, ES256) and with a JWKS served by the test (rotation, random-`kid` floods), the
//! usual JWT attacks, `key_auth`, `ip_restriction` (with `trusted_proxies`), `cors`, and how
//! `validate` reports plugin config errors.
//!
//! Tokens are signed here with `jsonwebtoken`; the RSA keys are fixed test keys in `keys/`
//! (generating RSA keys in a debug build is slow), the EC key is made by rcgen per run.

#[path = "e2e/harness.rs"]
mod harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use harness::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// Test-only RSA key pairs (2048 bits), never used anywhere else.
const RS1_KEY: &str = include_str!("keys/rs256_k1.key");
const RS1_PUB: &str = include_str!("keys/rs256_k1.pub");
const RS2_KEY: &str = include_str!("keys/rs256_k2.key");

const SECRET: &str = "an-hs256-secret-that-is-long-enough-0123";
const ISS: &str = "https://auth.example.test";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Claims that pass the issuer and audience checks, valid for 5 minutes.
fn claims(sub: &str, scope: &str) -> Value {
    json!({
        "sub": sub,
        "scope": scope,
        "iss": ISS,
        "aud": "api",
        "iat": now(),
        "exp": now() + 300,
        "jti": fastrand::u64(..).to_string(),
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    encode(&h, claims, key).expect("sign")
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn rs_key(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA key")
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWK (public part, with `kid` and `alg: RS256`) of an RSA private key.
fn rsa_jwk(pem: &str, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&rs_key(pem), Algorithm::RS256).expect("JWK");
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

fn jwks(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).expect("JWKS")
}

/// GET `url` with extra headers.
async fn call(url: &str, headers: &[(&str, &str)]) -> Got {
    call_m("GET", url, headers).await
}

async fn call_m(method: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = req(method, url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(&h1_client(), b.body(Full::default()).expect("request")).await
}

async fn with_token(url: &str, token: &str, extra: &[(&str, &str)]) -> Got {
    let auth = format!("Bearer {token}");
    let mut h = vec![("authorization", auth.as_str())];
    h.extend_from_slice(extra);
    call(url, &h).await
}

/// An upstream that counts requests and echoes every request header (all values, as a list)
/// and the query.
async fn recorder() -> (Upstream, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let up = upstream(move |req: Request<Incoming>| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let mut headers = serde_json::Map::new();
            for name in req.headers().keys() {
                let values: Vec<Value> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| Value::String(v.to_str().unwrap_or("").to_owned()))
                    .collect();
                headers.insert(name.as_str().to_owned(), Value::Array(values));
            }
            let out = json!({
                "path": req.uri().path(),
                "query": req.uri().query(),
                "headers": headers,
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(out.to_string())))
                .expect("response")
        }
    })
    .await;
    (up, hits)
}

/// A JWKS endpoint at `/jwks.json` serving whatever is in the returned cell, counting fetches.
async fn jwks_server(initial: String) -> (Upstream, Arc<Mutex<String>>, Arc<AtomicUsize>) {
    let doc = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (d, f) = (doc.clone(), fetches.clone());
    let up = upstream(move |req: Request<Incoming>| {
        let (d, f) = (d.clone(), f.clone());
        async move {
            let _ = req.into_body().collect().await;
            f.fetch_add(1, Ordering::SeqCst);
            let body = d.lock().expect("jwks").clone();
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("response")
        }
    })
    .await;
    (up, doc, fetches)
}

/// Asserts a 401 with `WWW-Authenticate: Bearer error="invalid_token", error_description=..`
/// and the contract's JSON error; returns the description.
fn assert_invalid_token(got: &Got, what: &str) -> String {
    assert_eq!(
        got.status,
        401,
        "{what}: {}",
        String::from_utf8_lossy(&got.body)
    );
    let body = got.json();
    assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
    assert_eq!(body["error"]["status"], 401, "{what}: {body}");
    let challenge = got.header("www-authenticate").unwrap_or_default();
    let desc = challenge
        .strip_prefix("Bearer error=\"invalid_token\", error_description=\"")
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{what}: bad challenge `{challenge}`"));
    assert!(!desc.is_empty(), "{what}: empty description");
    desc.to_owned()
}

/// Headers the recorder saw, by name (values as a list).
fn seen(got: &Got, name: &str) -> Value {
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    got.json()["headers"][name].clone()
}

fn jwt_plugin(keys: &str, extra: &str) -> String {
    format!(
        "      jwt:\n        keys: [{keys}]\n        issuer: {ISS}\n        audience: [api]\n        claims_to_headers: {{ sub: X-User-ID, scope: X-Scopes }}\n{extra}"
    )
}

fn route(name: &str, prefix: &str, plugins: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path_prefix: {prefix} }}\n    upstream: echo\n    plugins:\n{plugins}"
    )
}

fn upstream_yaml(addr: &str) -> String {
    format!("upstreams:\n  echo:\n    targets: [{{ address: \"{addr}\" }}]\n")
}

/// A gateway with static-key JWT routes: /hs (HS256 from `${JWT_SECRET}`), /rs (RS256 key
/// `k1` from a PEM file), /es (ES256 from a PEM file), /leeway (HS256, 30s leeway), /scoped
/// (HS256, scope `admin` required). Returns the gateway and the EC private key.
fn static_gateway(echo: &str) -> (Gateway, EncodingKey) {
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
    let ec_private = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("EC PEM");
    let ec_public = ec.public_key_pem();
    let hs_key = "{ algorithm: HS256, secret: \"${JWT_SECRET}\" }";
    let yaml = config(&format!(
        "{}routes:\n{}{}{}{}{}",
        upstream_yaml(echo),
        route("hs", "/hs", &jwt_plugin(hs_key, "")),
        route(
            "rs",
            "/rs",
            &jwt_plugin(
                "{ kid: k1, algorithm: RS256, public_key_file: keys/jwt-rs.pub }",
                ""
            )
        ),
        route(
            "es",
            "/es",
            &jwt_plugin("{ algorithm: ES256, public_key_file: es.pub }", "")
        ),
        route(
            "leeway",
            "/leeway",
            &jwt_plugin(hs_key, "        leeway: 30s\n")
        ),
        route(
            "scoped",
            "/scoped",
            &jwt_plugin(hs_key, "        required_scopes: [admin]\n")
        ),
    ));
    let gw = Gateway::start_full(
        &yaml,
        |dir| {
            std::fs::create_dir(dir.join("keys")).expect("mkdir");
            std::fs::write(dir.join("keys/jwt-rs.pub"), RS1_PUB).expect("write key");
            std::fs::write(dir.join("es.pub"), &ec_public).expect("write key");
        },
        &[("JWT_SECRET", SECRET)],
    );
    (gw, ec_private)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_keys_hs256_rs256_es256_pass_and_claims_become_headers() {
    let (up, hits) = recorder().await;
    let (gw, ec) = static_gateway(&up.address());

    let hs_token = hs(&claims("alice", "read write"));
    let got = with_token(&gw.url("/hs/x"), &hs_token, &[]).await;
    assert_eq!(seen(&got, "x-user-id"), json!(["alice"]));
    assert_eq!(seen(&got, "x-scopes"), json!(["read write"]));
    // The token itself still reaches the upstream (it may want to read it).
    assert_eq!(
        seen(&got, "authorization"),
        json!([format!("Bearer {hs_token}")])
    );

    let rs_token = sign(
        Algorithm::RS256,
        Some("k1"),
        &claims("bob", "read"),
        &rs_key(RS1_KEY),
    );
    let got = with_token(&gw.url("/rs/x"), &rs_token, &[]).await;
    assert_eq!(seen(&got, "x-user-id"), json!(["bob"]));
    assert_eq!(seen(&got, "x-scopes"), json!(["read"]));

    let es_token = sign(Algorithm::ES256, None, &claims("carol", "write"), &ec);
    let got = with_token(&gw.url("/es/x"), &es_token, &[]).await;
    assert_eq!(seen(&got, "x-user-id"), json!(["carol"]));
    assert_eq!(seen(&got, "x-scopes"), json!(["write"]));

    // Each key verifies only its own route's tokens.
    assert_invalid_token(
        &with_token(&gw.url("/rs/x"), &hs_token, &[]).await,
        "HS on RS",
    );
    assert_invalid_token(
        &with_token(&gw.url("/es/x"), &rs_token, &[]).await,
        "RS on ES",
    );
    assert_invalid_token(
        &with_token(&gw.url("/hs/x"), &es_token, &[]).await,
        "ES on HS",
    );
    // An RS256 token with another kid than the configured key's.
    let other_kid = sign(
        Algorithm::RS256,
        Some("k9"),
        &claims("bob", "read"),
        &rs_key(RS1_KEY),
    );
    assert_invalid_token(
        &with_token(&gw.url("/rs/x"), &other_kid, &[]).await,
        "unknown kid",
    );
    // An RS256 token signed with another RSA key.
    let wrong_key = sign(
        Algorithm::RS256,
        Some("k1"),
        &claims("bob", "read"),
        &rs_key(RS2_KEY),
    );
    assert_invalid_token(
        &with_token(&gw.url("/rs/x"), &wrong_key, &[]).await,
        "wrong RSA key",
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "only valid tokens are forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_audience_and_leeway_are_checked() {
    let (up, _) = recorder().await;
    let (gw, _) = static_gateway(&up.address());

    let mut expired_10s = claims("alice", "read");
    expired_10s["exp"] = json!(now() - 10);
    let t = hs(&expired_10s);
    let got = with_token(&gw.url("/leeway/x"), &t, &[]).await;
    assert_eq!(
        seen(&got, "x-user-id"),
        json!(["alice"]),
        "within the 30s leeway"
    );
    let desc = assert_invalid_token(&with_token(&gw.url("/hs/x"), &t, &[]).await, "no leeway");
    assert!(desc.contains("expired"), "{desc}");

    // Past the leeway too.
    let mut expired_60s = claims("alice", "read");
    expired_60s["exp"] = json!(now() - 60);
    let desc = assert_invalid_token(
        &with_token(&gw.url("/leeway/x"), &hs(&expired_60s), &[]).await,
        "past leeway",
    );
    assert!(desc.contains("expired"), "{desc}");

    // Not valid yet (nbf in 10 s): refused without leeway, accepted with it.
    let mut early = claims("alice", "read");
    early["nbf"] = json!(now() + 10);
    let t = hs(&early);
    assert_invalid_token(&with_token(&gw.url("/hs/x"), &t, &[]).await, "nbf");
    assert_eq!(with_token(&gw.url("/leeway/x"), &t, &[]).await.status, 200);

    let mut wrong_iss = claims("alice", "read");
    wrong_iss["iss"] = json!("https://evil.example.test");
    let desc = assert_invalid_token(
        &with_token(&gw.url("/hs/x"), &hs(&wrong_iss), &[]).await,
        "issuer",
    );
    assert!(desc.contains("issuer"), "{desc}");

    let mut no_iss = claims("alice", "read");
    no_iss.as_object_mut().expect("object").remove("iss");
    assert_invalid_token(
        &with_token(&gw.url("/hs/x"), &hs(&no_iss), &[]).await,
        "missing issuer",
    );

    // A configured issuer or audience is required, not only checked when present.
    let mut no_aud = claims("alice", "read");
    no_aud.as_object_mut().expect("object").remove("aud");
    let desc = assert_invalid_token(
        &with_token(&gw.url("/hs/x"), &hs(&no_aud), &[]).await,
        "missing audience",
    );
    assert!(desc.contains("aud"), "{desc}");
    let mut bad_iss_type = claims("alice", "read");
    bad_iss_type["iss"] = json!(42);
    assert_invalid_token(
        &with_token(&gw.url("/hs/x"), &hs(&bad_iss_type), &[]).await,
        "numeric issuer",
    );

    // `aud` may be a list; one match is enough.
    let mut many_aud = claims("alice", "read");
    many_aud["aud"] = json!(["other", "api"]);
    assert_eq!(
        with_token(&gw.url("/hs/x"), &hs(&many_aud), &[])
            .await
            .status,
        200
    );

    let mut no_exp = claims("alice", "read");
    no_exp.as_object_mut().expect("object").remove("exp");
    let desc = assert_invalid_token(
        &with_token(&gw.url("/hs/x"), &hs(&no_exp), &[]).await,
        "no exp",
    );
    assert!(desc.contains("exp"), "{desc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attacks_are_refused_as_invalid_tokens() {
    let (up, hits) = recorder().await;
    let (gw, _) = static_gateway(&up.address());

    // alg: none, in the spellings attackers try, with and without a signature part.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let head = b64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        let body = b64url(claims("admin", "admin").to_string().as_bytes());
        for token in [format!("{head}.{body}."), format!("{head}.{body}")] {
            for path in ["/hs/x", "/rs/x", "/es/x"] {
                assert_invalid_token(
                    &with_token(&gw.url(path), &token, &[]).await,
                    &format!("alg {alg} on {path}"),
                );
            }
        }
    }

    // Key confusion: HS256 with the RS256 public key's PEM bytes as the HMAC secret, on the
    // route whose key is that RS256 public key (with and without its kid).
    let confused = EncodingKey::from_secret(RS1_PUB.as_bytes());
    for kid in [Some("k1"), None] {
        let t = sign(Algorithm::HS256, kid, &claims("admin", "admin"), &confused);
        assert_invalid_token(
            &with_token(&gw.url("/rs/x"), &t, &[]).await,
            "HS256 signed with the RSA public key",
        );
    }

    let mut expired = claims("alice", "read");
    expired["exp"] = json!(now() - 3600);
    let desc = assert_invalid_token(
        &with_token(&gw.url("/hs/x"), &hs(&expired), &[]).await,
        "expired",
    );
    assert!(desc.contains("expired"), "{desc}");

    let mut other_aud = claims("alice", "read");
    other_aud["aud"] = json!("billing");
    let desc = assert_invalid_token(
        &with_token(&gw.url("/hs/x"), &hs(&other_aud), &[]).await,
        "other audience",
    );
    assert!(desc.contains("audience"), "{desc}");

    // A valid token whose payload was swapped for a more privileged one.
    let good = hs(&claims("alice", "read"));
    let parts: Vec<&str> = good.split('.').collect();
    let evil = b64url(claims("admin", "admin").to_string().as_bytes());
    let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_invalid_token(
        &with_token(&gw.url("/hs/x"), &tampered, &[]).await,
        "tampered payload",
    );
    // Garbage.
    for junk in ["a.b.c", "not-a-jwt", "....", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        assert_invalid_token(&with_token(&gw.url("/hs/x"), junk, &[]).await, junk);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_claim_headers_never_reach_the_upstream() {
    let (up, hits) = recorder().await;
    let (gw, _) = static_gateway(&up.address());
    let forged = [("x-user-id", "admin"), ("X-Scopes", "admin superuser")];

    // A valid token for alice: the upstream sees alice, whatever the client claimed. Twice:
    // the second answer comes from the verified-token cache.
    let t = hs(&claims("alice", "read"));
    for _ in 0..2 {
        let got = with_token(&gw.url("/hs/x"), &t, &forged).await;
        assert_eq!(seen(&got, "x-user-id"), json!(["alice"]));
        assert_eq!(seen(&got, "x-scopes"), json!(["read"]));
    }

    // A valid token without `sub` or `scope`: the forged headers are removed, not kept.
    let mut anon = claims("x", "x");
    let m = anon.as_object_mut().expect("object");
    m.remove("sub");
    m.remove("scope");
    let got = with_token(&gw.url("/hs/x"), &hs(&anon), &forged).await;
    assert_eq!(seen(&got, "x-user-id"), Value::Null, "{}", got.json());
    assert_eq!(seen(&got, "x-scopes"), Value::Null, "{}", got.json());
    let before = hits.load(Ordering::SeqCst);
    assert_eq!(before, 3);

    // Without a token (or with a bad one) the request is refused and nothing is forwarded.
    let got = call(&gw.url("/hs/x"), &forged).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        got.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );
    let got = with_token(&gw.url("/hs/x"), "forged.token.value", &forged).await;
    assert_invalid_token(&got, "bad token with forged headers");
    assert_eq!(hits.load(Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_is_403_and_missing_token_is_401_with_realm() {
    let (up, hits) = recorder().await;
    let (gw, _) = static_gateway(&up.address());

    let got = with_token(
        &gw.url("/scoped/x"),
        &hs(&claims("alice", "read write")),
        &[],
    )
    .await;
    assert_eq!(got.status, 403, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"]["code"], "forbidden");
    let challenge = got.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("admin"), "{challenge}");

    // Scopes are whole words: `administrator` is not `admin`.
    let got = with_token(
        &gw.url("/scoped/x"),
        &hs(&claims("a", "administrator")),
        &[],
    )
    .await;
    assert_eq!(got.status, 403);

    let got = with_token(
        &gw.url("/scoped/x"),
        &hs(&claims("alice", "read admin")),
        &[],
    )
    .await;
    assert_eq!(seen(&got, "x-user-id"), json!(["alice"]));
    // `scp` as a list works too.
    let mut scp = claims("bob", "");
    scp.as_object_mut().expect("object").remove("scope");
    scp["scp"] = json!(["read", "admin"]);
    assert_eq!(
        with_token(&gw.url("/scoped/x"), &hs(&scp), &[])
            .await
            .status,
        200
    );

    for headers in [
        vec![],
        vec![("authorization", "Basic YWxpY2U6c2VjcmV0")],
        vec![("authorization", "Bearer")],
    ] {
        let got = call(&gw.url("/hs/x"), &headers).await;
        assert_eq!(got.status, 401, "{headers:?}");
        assert_eq!(got.json()["error"]["code"], "unauthorized");
        let challenge = got.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm="),
            "{headers:?}: {challenge}"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

fn jwks_config(echo: &str, jwks: &str, extra: &str) -> String {
    config(&format!(
        "{}routes:\n{}",
        upstream_yaml(echo),
        route(
            "jwks",
            "/j",
            &format!(
                "      jwt:\n        jwks_url: http://{jwks}/jwks.json\n        issuer: {ISS}\n        audience: [api]\n        claims_to_headers: {{ sub: X-User-ID }}\n{extra}"
            )
        )
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_are_used_and_a_rotated_key_is_fetched() {
    let (up, hits) = recorder().await;
    let (js, doc, fetches) = jwks_server(jwks(vec![rsa_jwk(RS1_KEY, "k1")])).await;
    let gw = Gateway::start(&jwks_config(
        &up.address(),
        &js.address(),
        "        jwks_min_refresh: 200ms\n",
    ));
    let k1 = rs_key(RS1_KEY);
    let k2 = rs_key(RS2_KEY);

    for i in 0..5 {
        let t = sign(
            Algorithm::RS256,
            Some("k1"),
            &claims(&format!("u{i}"), ""),
            &k1,
        );
        let got = with_token(&gw.url("/j/x"), &t, &[]).await;
        assert_eq!(seen(&got, "x-user-id"), json!([format!("u{i}")]));
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "known kids need no refetch"
    );

    // A kid-k1 token signed with another key is still refused.
    let t = sign(Algorithm::RS256, Some("k1"), &claims("mallory", ""), &k2);
    assert_invalid_token(
        &with_token(&gw.url("/j/x"), &t, &[]).await,
        "k1 with k2's key",
    );
    // HMAC tokens never verify against a JWKS, even with the RSA key's bytes as secret.
    let t = sign(
        Algorithm::HS256,
        Some("k1"),
        &claims("mallory", ""),
        &EncodingKey::from_secret(RS1_PUB.as_bytes()),
    );
    assert_invalid_token(&with_token(&gw.url("/j/x"), &t, &[]).await, "HS256 on JWKS");

    // Rotate: the JWKS now holds k2 only. After jwks_min_refresh, the first k2 token makes
    // the gateway refetch, and passes.
    *doc.lock().expect("jwks") = jwks(vec![rsa_jwk(RS2_KEY, "k2")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = fetches.load(Ordering::SeqCst);
    let t = sign(Algorithm::RS256, Some("k2"), &claims("dave", ""), &k2);
    let got = with_token(&gw.url("/j/x"), &t, &[]).await;
    assert_eq!(seen(&got, "x-user-id"), json!(["dave"]));
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1, "one refetch");
    // More k2 tokens need no more fetches.
    for i in 0..5 {
        let t = sign(
            Algorithm::RS256,
            Some("k2"),
            &claims(&format!("v{i}"), ""),
            &k2,
        );
        assert_eq!(with_token(&gw.url("/j/x"), &t, &[]).await.status, 200);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);

    // k1 is gone from the JWKS: new k1 tokens are refused.
    let t = sign(Algorithm::RS256, Some("k1"), &claims("erin", ""), &k1);
    let desc = assert_invalid_token(&with_token(&gw.url("/j/x"), &t, &[]).await, "retired k1");
    assert!(desc.contains("k1"), "{desc}");
    assert_eq!(hits.load(Ordering::SeqCst), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kid_flood_fetches_the_jwks_at_most_twice() {
    let (up, hits) = recorder().await;
    let (js, _doc, fetches) = jwks_server(jwks(vec![rsa_jwk(RS1_KEY, "k1")])).await;
    // Default jwks_min_refresh (10s).
    let gw = Gateway::start(&jwks_config(&up.address(), &js.address(), ""));
    let k1 = rs_key(RS1_KEY);

    // 200 tokens with random kids, 20 at a time, from a cold start.
    let url = gw.url("/j/x");
    let tokens: Vec<String> = (0..200)
        .map(|_| {
            let kid = format!("kid-{:016x}", fastrand::u64(..));
            sign(Algorithm::RS256, Some(&kid), &claims("mallory", ""), &k1)
        })
        .collect();
    for batch in tokens.chunks(20) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|t| {
                let (url, t) = (url.clone(), t.clone());
                tokio::spawn(async move { with_token(&url, &t, &[]).await })
            })
            .collect();
        for task in tasks {
            let got = task.await.expect("task");
            let desc = assert_invalid_token(&got, "random kid");
            assert!(desc.contains("no key"), "{desc}");
        }
    }
    let n = fetches.load(Ordering::SeqCst);
    assert!((1..=2).contains(&n), "{n} JWKS fetches for 200 random kids");

    // The real key still works, without another fetch.
    let t = sign(Algorithm::RS256, Some("k1"), &claims("alice", ""), &k1);
    assert_eq!(with_token(&url, &t, &[]).await.status, 200);
    assert_eq!(fetches.load(Ordering::SeqCst), n);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_jwks_endpoint_is_not_hammered() {
    let (up, hits) = recorder().await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let js = upstream(move |_req: Request<Incoming>| {
        let f = f.clone();
        async move {
            f.fetch_add(1, Ordering::SeqCst);
            Response::builder()
                .status(503)
                .body(Full::new(Bytes::from_static(b"down")))
                .expect("response")
        }
    })
    .await;
    let gw = Gateway::start(&jwks_config(&up.address(), &js.address(), ""));
    let k1 = rs_key(RS1_KEY);
    let url = gw.url("/j/x");
    // Tokens are signed first: RSA signing in a debug build is slow, and only the requests'
    // own time counts against `jwks_min_refresh` (10 s by default).
    let tokens: Vec<String> = (0..20)
        .map(|i| {
            sign(
                Algorithm::RS256,
                Some("k1"),
                &claims(&format!("u{i}"), ""),
                &k1,
            )
        })
        .collect();
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let tasks: Vec<_> = tokens
            .iter()
            .map(|t| {
                let (url, t) = (url.clone(), t.clone());
                tokio::spawn(async move { with_token(&url, &t, &[]).await })
            })
            .collect();
        for task in tasks {
            assert_invalid_token(&task.await.expect("task"), "JWKS down");
        }
    }
    // The first request fetches; after that at most one fetch per started 10 s. On an idle
    // machine the whole run takes well under 10 s, so that is 2 at most.
    let allowed = 2 + started.elapsed().as_secs() / 10;
    let n = fetches.load(Ordering::SeqCst);
    assert!(
        n as u64 <= allowed,
        "{n} JWKS fetches for 100 requests while the endpoint fails (allowed {allowed} in {:?})",
        started.elapsed()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_header_query_hashed_keys_and_consumer_header() {
    let (up, hits) = recorder().await;
    // sha256("team-b-secret-key-0042")
    let b_hash = "97ac5c2dd0de9e36ac3966fe83f410bc9e5bfce8ed3a7727a68b7aab556c879b";
    let consumers = format!(
        "        consumers:\n          - {{ name: team-a, key: \"team-a-secret-key-0001\" }}\n          - {{ name: team-b, key_sha256: \"{b_hash}\" }}\n"
    );
    let yaml = config(&format!(
        "{}routes:\n{}{}{}",
        upstream_yaml(&up.address()),
        route("kh", "/kh", &format!("      key_auth:\n{consumers}")),
        route(
            "kq",
            "/kq",
            &format!("      key_auth:\n        query: api_key\n{consumers}")
        ),
        route(
            "kshow",
            "/kshow",
            &format!("      key_auth:\n        hide_credentials: false\n{consumers}")
        ),
    ));
    let gw = Gateway::start(&yaml);

    let got = call(&gw.url("/kh/x"), &[("x-api-key", "team-a-secret-key-0001")]).await;
    assert_eq!(seen(&got, "x-consumer"), json!(["team-a"]));
    assert_eq!(seen(&got, "x-api-key"), Value::Null, "the key is hidden");

    // The key stored as its SHA-256; and a client-sent X-Consumer is replaced.
    let got = call(
        &gw.url("/kh/x"),
        &[
            ("x-api-key", "team-b-secret-key-0042"),
            ("x-consumer", "team-a"),
        ],
    )
    .await;
    assert_eq!(seen(&got, "x-consumer"), json!(["team-b"]));

    let got = call(
        &gw.url("/kq/x?a=1&api_key=team-a-secret-key-0001&b=2"),
        &[("x-consumer", "root")],
    )
    .await;
    assert_eq!(seen(&got, "x-consumer"), json!(["team-a"]));
    assert_eq!(got.json()["query"], "a=1&b=2", "the key leaves the query");

    let got = call(
        &gw.url("/kshow/x"),
        &[("x-api-key", "team-a-secret-key-0001")],
    )
    .await;
    assert_eq!(seen(&got, "x-api-key"), json!(["team-a-secret-key-0001"]));
    let forwarded = hits.load(Ordering::SeqCst);
    assert_eq!(forwarded, 4);

    // Wrong, missing, hashed-value-as-key, and a key in the wrong place: 401, nothing sent.
    let refused = [
        ("/kh/x", vec![("x-api-key", "team-a-secret-key-0002")]),
        ("/kh/x", vec![("x-api-key", b_hash)]),
        ("/kh/x", vec![("x-consumer", "team-a")]),
        ("/kh/x?x-api-key=team-a-secret-key-0001", vec![]),
        ("/kq/x?api_key=nope", vec![]),
        ("/kq/x", vec![("x-api-key", "team-a-secret-key-0001")]),
    ];
    for (path, headers) in refused {
        let got = call(&gw.url(path), &headers).await;
        assert_eq!(got.status, 401, "{path} {headers:?}");
        assert_eq!(got.json()["error"]["code"], "unauthorized");
        assert!(got.header("www-authenticate").is_some(), "{path}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_restriction_allow_deny_and_the_real_client_behind_trusted_proxies() {
    let (up, hits) = recorder().await;
    let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let mut listeners = String::from(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\n  - name: edge\n    address: 127.0.0.1:0\n    trusted_proxies: [127.0.0.0/8]\n",
    );
    if v6 {
        listeners.push_str("  - name: v6\n    address: \"[::1]:0\"\n");
    }
    let ip = |allow: &str, deny: &str| {
        format!("      ip_restriction: {{ allow: [{allow}], deny: [{deny}] }}\n")
    };
    let yaml = format!(
        "{listeners}admin:\n  address: 127.0.0.1:0\n{}routes:\n{}{}{}{}{}",
        upstream_yaml(&up.address()),
        route("allow-local", "/allow-local", &ip("127.0.0.0/8", "")),
        route("deny-local", "/deny-local", &ip("", "127.0.0.1")),
        route(
            "allow-doc",
            "/allow-doc",
            &ip("203.0.113.0/24, \"2001:db8::/32\"", "")
        ),
        route(
            "deny-doc",
            "/deny-doc",
            &ip("", "203.0.113.0/24, \"2001:db8:1::/48\"")
        ),
        route("v6-only", "/v6-only", &ip("\"::1/128\"", "")),
    );
    let gw = Gateway::start(&yaml);
    let direct = |p: &str| gw.url(p);
    let edge = |p: &str| format!("http://{}{p}", gw.listeners["edge"]);
    let forbidden = |got: &Got, what: &str| {
        assert_eq!(got.status, 403, "{what}");
        let body = got.json();
        assert_eq!(body["error"]["code"], "forbidden", "{what}");
        assert_eq!(body["error"]["status"], 403, "{what}");
    };

    assert_eq!(call(&direct("/allow-local"), &[]).await.status, 200);
    forbidden(&call(&direct("/deny-local"), &[]).await, "deny 127.0.0.1");
    forbidden(
        &call(&direct("/allow-doc"), &[]).await,
        "not on the allow list",
    );
    // From an untrusted peer, X-Forwarded-For is not believed.
    let xff = [("x-forwarded-for", "203.0.113.9")];
    forbidden(
        &call(&direct("/allow-doc"), &xff).await,
        "spoofed XFF, untrusted peer",
    );
    assert_eq!(call(&direct("/deny-doc"), &xff).await.status, 200);

    // Behind a trusted proxy, the real client is checked.
    assert_eq!(call(&edge("/allow-doc"), &xff).await.status, 200);
    forbidden(&call(&edge("/deny-doc"), &xff).await, "denied real client");
    forbidden(&call(&edge("/allow-doc"), &[]).await, "the proxy itself");
    assert_eq!(
        call(&edge("/deny-doc"), &[("x-forwarded-for", "198.51.100.7")])
            .await
            .status,
        200
    );
    forbidden(
        &call(&edge("/allow-local"), &xff).await,
        "the proxy's address is not the client's",
    );
    // The right-most untrusted address counts: a client cannot prepend an allowed one.
    forbidden(
        &call(
            &edge("/allow-doc"),
            &[("x-forwarded-for", "203.0.113.9, 198.51.100.7")],
        )
        .await,
        "prepended address",
    );
    assert_eq!(
        call(
            &edge("/allow-doc"),
            &[("x-forwarded-for", "198.51.100.7, 203.0.113.9, 127.0.0.9")],
        )
        .await
        .status,
        200
    );
    // IPv6 CIDRs.
    assert_eq!(
        call(&edge("/allow-doc"), &[("x-forwarded-for", "2001:db8::7")])
            .await
            .status,
        200
    );
    forbidden(
        &call(&edge("/deny-doc"), &[("x-forwarded-for", "2001:db8:1::5")]).await,
        "denied IPv6",
    );
    assert_eq!(
        call(&edge("/deny-doc"), &[("x-forwarded-for", "2001:db8:2::5")])
            .await
            .status,
        200
    );
    forbidden(
        &call(&direct("/v6-only"), &[]).await,
        "IPv4 client on v6-only",
    );
    if v6 {
        let got = call(&format!("http://{}/v6-only", gw.listeners["v6"]), &[]).await;
        assert_eq!(got.status, 200, "an IPv6 client");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 7 + usize::from(v6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_simple_requests_and_origin_patterns() {
    let (up, hits) = recorder().await;
    let cors = "      cors:\n        origins: [\"https://app.example.com\", \"https://*.example.org\"]\n        methods: [GET, POST]\n        headers: [Authorization, X-Custom]\n        credentials: true\n        max_age: 10m\n";
    let yaml = config(&format!(
        "{}routes:\n{}{}",
        upstream_yaml(&up.address()),
        route("c", "/c", cors),
        route(
            "cj",
            "/cj",
            &format!(
                "{cors}      jwt:\n        keys: [{{ algorithm: HS256, secret: \"{SECRET}\" }}]\n"
            )
        ),
    ));
    let gw = Gateway::start(&yaml);
    let has_vary_origin = |got: &Got| {
        got.headers.get_all("vary").iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .to_ascii_lowercase()
                .contains("origin")
        })
    };
    let preflight = |origin: &'static str| {
        let url = gw.url("/c/items");
        async move {
            call_m(
                "OPTIONS",
                &url,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "authorization"),
                ],
            )
            .await
        }
    };

    let got = preflight("https://app.example.com").await;
    assert_eq!(got.status, 204);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        got.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        got.header("access-control-allow-headers"),
        Some("Authorization, X-Custom")
    );
    assert_eq!(got.header("access-control-max-age"), Some("600"));
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
    assert!(has_vary_origin(&got));

    // Patterns: one or more labels in place of `*`, same scheme.
    for origin in ["https://tenant1.example.org", "https://a.b.example.org"] {
        let got = preflight(origin).await;
        assert_eq!(got.status, 204, "{origin}");
        assert_eq!(got.header("access-control-allow-origin"), Some(origin));
    }
    for origin in [
        "https://evil.test",
        "https://example.org",
        "http://tenant1.example.org",
        "https://example.org.evil.test",
        "https://evilexample.org",
        "https://app.example.com.evil.test",
    ] {
        let got = preflight(origin).await;
        assert_eq!(got.status, 403, "{origin}");
        assert_eq!(got.json()["error"]["code"], "forbidden");
        assert_eq!(got.header("access-control-allow-origin"), None, "{origin}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "preflights stay at the gateway"
    );

    // Simple requests go through, with the CORS headers for allowed origins only.
    let got = call(
        &gw.url("/c/items"),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
    assert!(has_vary_origin(&got));
    let got = call(&gw.url("/c/items"), &[("origin", "https://x.example.org")]).await;
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://x.example.org")
    );
    let got = call(&gw.url("/c/items"), &[("origin", "https://evil.test")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("access-control-allow-origin"), None);
    assert_eq!(got.header("access-control-allow-credentials"), None);
    assert!(has_vary_origin(&got), "caches must key on Origin");
    // An OPTIONS request that is not a preflight is the upstream's business.
    let got = call_m(
        "OPTIONS",
        &gw.url("/c/items"),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 4);

    // With auth on the route: the preflight (which carries no credentials) is answered before
    // authentication, and a refusal still carries the CORS headers so the page can read it.
    let got = call_m(
        "OPTIONS",
        &gw.url("/cj/x"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(got.status, 204);
    let got = call(&gw.url("/cj/x"), &[("origin", "https://app.example.com")]).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[test]
fn validate_reports_plugin_config_errors_with_their_field_paths() {
    let yaml = config(
        r#"upstreams:
  echo:
    targets: [{ address: "127.0.0.1:1" }]
plugins:
  rate_limit: { limit: 10, per: 1s, key: "cookie:session" }
routes:
  - name: a
    match: { path_prefix: /a }
    upstream: echo
    plugins:
      jwt:
        keys:
          - { algorithm: RS257, public_key_file: missing.pub }
  - name: b
    match: { path_prefix: /b }
    upstream: echo
    plugins:
      jwt:
        keys:
          - { algorithm: RS256, public_key_file: missing.pub }
  - name: c
    match: { path_prefix: /c }
    upstream: echo
    plugins:
      jwt:
        keys: [{ algorithm: HS256, secret: "short" }]
      ip_restriction: { allow: [10.0.0.0/8, 10.0.0.300] }
  - name: d
    match: { path_prefix: /d }
    upstream: echo
    plugins:
      key_auth:
        consumers: [{ name: x, key: "k-0123456789" }, { name: y, key_sha256: "abc" }]
      cors: { origins: ["https://a.test"], methods: [GET, "G ET"] }
  - name: e
    match: { path_prefix: /e }
    upstream: echo
    plugins:
      rate_limit: { limit: 10, per: soon }
      jwt: { keys: [{ algorithm: HS256, secret: "an-hs256-secret-that-is-long-enough-0123" }], isuer: x }
"#,
    );
    let (code, _, err) = validate(&yaml);
    assert_eq!(code, 1, "{err}");
    for path in [
        "routes[0].plugins.jwt.keys[0].algorithm",
        "routes[1].plugins.jwt.keys[0].public_key_file",
        "routes[2].plugins.jwt.keys[0].secret",
        "routes[2].plugins.ip_restriction.allow[1]",
        "routes[3].plugins.key_auth.consumers[1].key_sha256",
        "routes[3].plugins.cors.methods[1]",
        "routes[4].plugins.rate_limit.per",
        "plugins.rate_limit.key",
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!(" {path}: ")))
            .unwrap_or_else(|| panic!("no error for {path}:\n{err}"));
        assert!(line.contains("gw.yaml:"), "{line}");
    }
    assert!(err.contains("RS257"), "{err}");
    assert!(err.contains("unknown field `isuer`"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("routes[4].plugins.jwt") && l.contains("isuer")),
        "{err}"
    );
    // A positioned error: FILE:LINE:COL.
    let line = err
        .lines()
        .find(|l| l.contains("routes[4].plugins.rate_limit.per"))
        .expect("per");
    let pos = line.split(": ").next().expect("position");
    assert_eq!(pos.split(':').count(), 3, "{line}");

    // The same plugins, fixed, validate.
    let good = config(
        r#"upstreams:
  echo:
    targets: [{ address: "127.0.0.1:1" }]
routes:
  - name: a
    match: { path_prefix: /a, hosts: [api.example.test] }
    upstream: echo
    plugins:
      jwt: { keys: [{ algorithm: HS256, secret: "an-hs256-secret-that-is-long-enough-0123" }] }
      ip_restriction: { allow: [10.0.0.0/8, "2001:db8::/32", "::1"], deny: ["fe80::/10"] }
      cors: { origins: ["https://*.example.test"], methods: [GET] }
      rate_limit: { limit: 10, per: 1s, key: "header:X-Tenant" }
"#,
    );
    let (code, _, err) = validate(&good);
    assert_eq!(code, 0, "{err}");
}
