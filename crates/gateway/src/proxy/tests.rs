use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn hop_by_hop_headers_go_including_connection_named_ones() {
    let mut h = headers(&[
        ("connection", "keep-alive, x-secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("te", "gzip"),
        ("upgrade", "h2c"),
        ("trailer", "x-checksum"),
        ("x-kept", "yes"),
    ]);
    strip_hop_by_hop(&mut h, false);
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["x-kept"]);

    let mut h = headers(&[
        ("te", "trailers"),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
    ]);
    strip_hop_by_hop(&mut h, true);
    assert_eq!(h.get("te").unwrap(), "trailers");
    assert_eq!(h.get("upgrade").unwrap(), "websocket");
    assert_eq!(h.get("connection").unwrap(), "upgrade");
}

#[test]
fn ipv4_text_matches_display() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.30.40",
        "255.255.255.255",
        "1.100.99.9",
    ] {
        let a: IpAddr = ip.parse().unwrap();
        assert_eq!(IpText::new(a).as_str(), a.to_string());
    }
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(IpText::new(v6).as_str(), "2001:db8::1");
    let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
        .parse()
        .expect("v6");
    assert_eq!(IpText::new(longest).as_str(), longest.to_string());
}

#[test]
fn client_ip_uses_forwarded_for_only_from_trusted_peers() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]);
    let proxy: IpAddr = "10.0.0.2".parse().unwrap();
    let stranger: IpAddr = "198.51.100.7".parse().unwrap();
    assert_eq!(
        client_ip(proxy, &h, &trusted),
        "203.0.113.9".parse::<IpAddr>().unwrap()
    );
    assert_eq!(client_ip(stranger, &h, &trusted), stranger);
    assert_eq!(client_ip(proxy, &h, &[]), proxy);
}

#[test]
fn forwarded_for_is_appended_for_trusted_and_replaced_otherwise() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let mut h = headers(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
    ]);
    set_forwarded(
        &mut h,
        "10.0.0.2".parse().unwrap(),
        &trusted,
        false,
        Some(&HeaderValue::from_static("api.example.com")),
    );
    assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, 10.0.0.2");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example.com");

    let mut h = headers(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
    ]);
    set_forwarded(
        &mut h,
        "198.51.100.7".parse().unwrap(),
        &trusted,
        false,
        None,
    );
    assert_eq!(h.get("x-forwarded-for").unwrap(), "198.51.100.7");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
}

#[test]
fn request_ids_are_kept_when_sane_and_made_otherwise() {
    let h = headers(&[("x-request-id", "abc-123")]);
    assert_eq!(request_id(&h), "abc-123");
    let h = headers(&[("x-request-id", "bad id with spaces")]);
    let made = request_id(&h);
    assert_eq!(made.len(), 32);
    assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
}

#[test]
fn rewrites_keep_the_query() {
    let (mut parts, _) = Request::get("/api/v1/users/7?x=1")
        .body(())
        .unwrap()
        .into_parts();
    let rw = Rewrite {
        strip_prefix: Some("/api".into()),
        path_regex: None,
        host: Some(HeaderValue::from_static("users.internal")),
    };
    rewrite(&mut parts, &rw);
    assert_eq!(parts.uri, "/v1/users/7?x=1");
    assert_eq!(parts.headers.get("host").unwrap(), "users.internal");

    let (mut parts, _) = Request::get("/api/x").body(()).unwrap().into_parts();
    let rw = Rewrite {
        strip_prefix: None,
        path_regex: Some((regex::Regex::new("^/api/(.*)$").unwrap(), "/v2/$1".into())),
        host: None,
    };
    rewrite(&mut parts, &rw);
    assert_eq!(parts.uri, "/v2/x");
}

#[test]
fn ambiguous_framing_and_oversize_are_refused() {
    let (parts, _) = Request::post("/")
        .header("content-length", "5")
        .header("transfer-encoding", "chunked")
        .body(())
        .unwrap()
        .into_parts();
    assert_eq!(check_request(&parts, 65536, 100).unwrap_err().status, 400);
    let (parts, _) = Request::post("/")
        .header("content-length", "500")
        .body(())
        .unwrap()
        .into_parts();
    assert_eq!(check_request(&parts, 65536, 100).unwrap_err().status, 413);
    let (parts, _) = Request::get("/")
        .header("x-big", "a".repeat(3000))
        .body(())
        .unwrap()
        .into_parts();
    assert_eq!(
        check_request(&parts, 2048, 100)
            .unwrap_err()
            .status
            .as_u16(),
        431
    );
}
