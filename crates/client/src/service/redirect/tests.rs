//! The redirect rules, one by one.

use super::*;

fn uri(s: &str) -> Uri {
    s.parse().expect("uri")
}

fn follow(status: u16, method: Method, loc: &str, replayable: bool) -> Next {
    next(
        Redirects::default(),
        0,
        StatusCode::from_u16(status).expect("status"),
        &method,
        &uri("https://a.example/x/y?q=1"),
        Some(&HeaderValue::from_str(loc).expect("value")),
        replayable,
    )
}

#[test]
fn methods_and_bodies_per_status() {
    for (status, method, want, keep) in [
        (301, Method::POST, Method::GET, false),
        (302, Method::POST, Method::GET, false),
        (303, Method::POST, Method::GET, false),
        (303, Method::PUT, Method::GET, false),
        (303, Method::HEAD, Method::HEAD, false),
        (301, Method::PUT, Method::PUT, true),
        (307, Method::POST, Method::POST, true),
        (308, Method::PUT, Method::PUT, true),
    ] {
        match follow(status, method.clone(), "/z", true) {
            Next::Follow {
                method: m,
                keep_body,
                to,
            } => {
                assert_eq!((m, keep_body), (want, keep), "{status} {method}");
                assert_eq!(to, uri("https://a.example/z"));
            }
            other => panic!("{status} {method}: {other:?}"),
        }
    }
}

#[test]
fn a_streamed_body_stops_at_307_and_308() {
    assert!(matches!(
        follow(307, Method::POST, "/z", false),
        Next::Return
    ));
    assert!(matches!(
        follow(308, Method::PUT, "/z", false),
        Next::Return
    ));
    // A 303 drops the body anyway, so it is followed.
    assert!(matches!(
        follow(303, Method::POST, "/z", false),
        Next::Follow { .. }
    ));
}

#[test]
fn location_forms_resolve() {
    let to = |loc: &str| match follow(302, Method::GET, loc, true) {
        Next::Follow { to, .. } => to.to_string(),
        other => panic!("{loc}: {other:?}"),
    };
    assert_eq!(to("z"), "https://a.example/x/z");
    assert_eq!(to("//b.example:8443/p#frag"), "https://b.example:8443/p");
    assert_eq!(to("https://c.example/?a=b"), "https://c.example/?a=b");
}

#[test]
fn refusals_and_limits() {
    assert!(matches!(
        follow(302, Method::GET, "http://a.example/", true),
        Next::Refuse(_)
    ));
    assert!(matches!(
        follow(302, Method::GET, "ftp://a.example/", true),
        Next::Refuse(_)
    ));
    let allowed = next(
        Redirects::default().allow_https_to_http(true),
        0,
        StatusCode::FOUND,
        &Method::GET,
        &uri("https://a.example/"),
        Some(&HeaderValue::from_static("http://a.example/")),
        true,
    );
    assert!(matches!(allowed, Next::Follow { .. }));
    let too_many = next(
        Redirects::limit(2),
        2,
        StatusCode::FOUND,
        &Method::GET,
        &uri("https://a.example/"),
        Some(&HeaderValue::from_static("/again")),
        true,
    );
    assert!(matches!(too_many, Next::Refuse(_)));
    let off = next(
        Redirects::none(),
        0,
        StatusCode::FOUND,
        &Method::GET,
        &uri("https://a.example/"),
        Some(&HeaderValue::from_static("/again")),
        true,
    );
    assert!(matches!(off, Next::Return));
    // Not a redirect status, or no Location: returned as is.
    assert!(matches!(follow(304, Method::GET, "/z", true), Next::Return));
}

#[test]
fn origins_compare_scheme_host_and_port() {
    assert!(same_origin(
        &uri("https://A.example/x"),
        &uri("https://a.example:443/y")
    ));
    assert!(!same_origin(
        &uri("https://a.example/"),
        &uri("http://a.example/")
    ));
    assert!(!same_origin(
        &uri("http://a.example/"),
        &uri("http://a.example:8080/")
    ));
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
    h.insert(header::COOKIE, HeaderValue::from_static("s=1"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert("x-other", HeaderValue::from_static("kept"));
    next_headers(&mut h, true, false);
    assert_eq!(h.len(), 1, "{h:?}");
}
