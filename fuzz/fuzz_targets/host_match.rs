//! Host conditions and request hosts: parsing a route host never panics; looking up any request
//! host (ports, IPv6 literals, trailing dots, case) never panics, and a route's exact host
//! always finds its own route.
#![no_main]

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use portcullis_router::{HostMatch, PathMatch, Request, RouteSpec, Router, normalize_host};

fuzz_target!(|data: (&str, &str)| {
    let (route_host, request_host) = data;
    let _ = normalize_host(request_host);
    let Ok(h) = HostMatch::parse(route_host) else {
        return;
    };
    let own = match &h {
        HostMatch::Exact(name) => Some(name.clone()),
        HostMatch::Wildcard(_) => None,
    };
    let spec = RouteSpec {
        hosts: vec![h],
        path: PathMatch::Prefix("/".into()),
        methods: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        priority: 0,
    };
    let router = Router::new(vec![(spec, ())]);
    let headers = HeaderMap::new();
    let lookup = |host: &str| {
        router
            .lookup(&Request {
                host: Some(host),
                path: "/x",
                method: &Method::GET,
                headers: &headers,
                query: None,
            })
            .is_some()
    };
    let _ = lookup(request_host);
    if let Some(name) = own {
        assert!(lookup(&name), "exact host {name} does not find its route");
    }
});
