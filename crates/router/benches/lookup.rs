//! Route lookup cost with 10, 1,000 and 10,000 routes: it must stay flat as routes grow.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use portcullis_router::{HostMatch, PathMatch, Request, RouteSpec, Router, Template};

fn table(n: usize) -> Router<usize> {
    let routes = (0..n)
        .map(|i| {
            let path = match i % 3 {
                0 => PathMatch::Exact(format!("/svc{i}/items")),
                1 => PathMatch::Prefix(format!("/svc{i}/")),
                _ => PathMatch::Template(
                    Template::parse(&format!("/svc{i}/items/{{id}}")).expect("valid template"),
                ),
            };
            let mut spec = RouteSpec::new(path);
            if i % 5 == 0 {
                spec.hosts = vec![HostMatch::parse(&format!("h{i}.example.com")).expect("host")];
            }
            if i % 4 == 0 {
                spec.methods = vec![Method::GET, Method::POST];
            }
            (spec, i)
        })
        .collect();
    Router::new(routes)
}

fn lookup(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("router_lookup");
    for n in [10usize, 1_000, 10_000] {
        let r = table(n);
        let paths: Vec<String> = [n / 3 * 3 + 1, n / 2 / 3 * 3 + 2, 7]
            .iter()
            .map(|i| match i % 3 {
                1 => format!("/svc{i}/some/deep/path"),
                2 => format!("/svc{i}/items/42"),
                _ => format!("/svc{i}/items"),
            })
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for p in &paths {
                    let hit = r.lookup(&Request {
                        host: Some("api.example.com"),
                        path: p,
                        method: &Method::GET,
                        headers: &headers,
                        query: None,
                    });
                    black_box(hit.map(|h| h.index));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
