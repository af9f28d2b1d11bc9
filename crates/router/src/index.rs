//! The path indexes of one host table: exact paths in a hash map, templates in a segment trie,
//! prefixes in a byte radix tree. Each yields buckets of candidates sorted by rank; the cost of
//! a lookup depends on the path's length, not on the number of routes.
//!
//! Why not `matchit`: it returns one match per path, but a template whose route fails its
//! method or header condition must fall through to the next most specific template or prefix,
//! so every matching bucket has to be visited.

use std::collections::HashMap;

use crate::spec::Rank;
use crate::template::Segment;

/// A route reachable from an index bucket, with its rank for the bucket's host class.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    pub rank: Rank,
    pub route: u32,
}

fn insert_sorted(bucket: &mut Vec<Cand>, c: Cand) {
    let at = bucket.partition_point(|x| x.rank <= c.rank);
    bucket.insert(at, c);
}

/// Exact, template and prefix indexes for one host table.
#[derive(Debug, Default)]
pub(crate) struct PathIndex {
    exact: HashMap<Box<str>, Vec<Cand>>,
    templates: Vec<TNode>,
    prefixes: Vec<PNode>,
}

#[derive(Debug, Default)]
struct TNode {
    statics: HashMap<Box<str>, u32>,
    param: Option<u32>,
    cands: Vec<Cand>,
}

#[derive(Debug, Default)]
struct PNode {
    /// Edges sorted by their first byte; labels never share a first byte.
    edges: Vec<(Box<[u8]>, u32)>,
    cands: Vec<Cand>,
}

impl PathIndex {
    pub(crate) fn insert_exact(&mut self, path: &str, c: Cand) {
        insert_sorted(self.exact.entry(path.into()).or_default(), c);
    }

    pub(crate) fn insert_template(&mut self, segments: &[Segment], c: Cand) {
        if self.templates.is_empty() {
            self.templates.push(TNode::default());
        }
        let mut node = 0usize;
        for seg in segments {
            let next = match seg {
                Segment::Literal(l) => self.templates[node].statics.get(l.as_str()).copied(),
                Segment::Param(_) => self.templates[node].param,
            };
            node = match next {
                Some(n) => n as usize,
                None => {
                    let n = self.templates.len();
                    self.templates.push(TNode::default());
                    match seg {
                        Segment::Literal(l) => {
                            self.templates[node]
                                .statics
                                .insert(l.as_str().into(), n as u32);
                        }
                        Segment::Param(_) => self.templates[node].param = Some(n as u32),
                    }
                    n
                }
            };
        }
        insert_sorted(&mut self.templates[node].cands, c);
    }

    pub(crate) fn insert_prefix(&mut self, prefix: &str, c: Cand) {
        if self.prefixes.is_empty() {
            self.prefixes.push(PNode::default());
        }
        let mut node = 0usize;
        let mut rest = prefix.as_bytes();
        while !rest.is_empty() {
            let pos = self.prefixes[node]
                .edges
                .binary_search_by_key(&rest[0], |(l, _)| l[0]);
            match pos {
                Err(at) => {
                    let n = self.prefixes.len() as u32;
                    self.prefixes.push(PNode::default());
                    self.prefixes[node].edges.insert(at, (rest.into(), n));
                    node = n as usize;
                    rest = &[];
                }
                Ok(i) => {
                    let (label, child) = &self.prefixes[node].edges[i];
                    let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    let child = *child;
                    if common == label.len() {
                        node = child as usize;
                        rest = &rest[common..];
                        continue;
                    }
                    // Split the edge at `common`.
                    let mid = self.prefixes.len() as u32;
                    let tail: Box<[u8]> = label[common..].into();
                    let head: Box<[u8]> = label[..common].into();
                    self.prefixes.push(PNode {
                        edges: vec![(tail, child)],
                        cands: Vec::new(),
                    });
                    self.prefixes[node].edges[i] = (head, mid);
                    node = mid as usize;
                    rest = &rest[common..];
                }
            }
        }
        insert_sorted(&mut self.prefixes[node].cands, c);
    }

    /// Calls `visit` with every non-empty bucket matching `path`.
    pub(crate) fn for_each_bucket(&self, path: &str, visit: &mut dyn FnMut(&[Cand])) {
        if !self.exact.is_empty()
            && let Some(b) = self.exact.get(path)
        {
            visit(b);
        }
        if !self.templates.is_empty()
            && let Some(rest) = path.strip_prefix('/')
        {
            self.walk_templates(0, rest, visit);
        }
        if !self.prefixes.is_empty() {
            self.walk_prefixes(path.as_bytes(), visit);
        }
    }

    fn walk_templates(&self, node: usize, rest: &str, visit: &mut dyn FnMut(&[Cand])) {
        let n = &self.templates[node];
        let (seg, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if let Some(&child) = n.statics.get(seg) {
            self.template_step(child as usize, tail, visit);
        }
        if !seg.is_empty()
            && let Some(child) = n.param
        {
            self.template_step(child as usize, tail, visit);
        }
    }

    fn template_step(&self, child: usize, tail: Option<&str>, visit: &mut dyn FnMut(&[Cand])) {
        match tail {
            None => {
                let c = &self.templates[child].cands;
                if !c.is_empty() {
                    visit(c);
                }
            }
            Some(t) => self.walk_templates(child, t, visit),
        }
    }

    fn walk_prefixes(&self, mut rest: &[u8], visit: &mut dyn FnMut(&[Cand])) {
        let mut node = 0usize;
        loop {
            let n = &self.prefixes[node];
            if !n.cands.is_empty() {
                visit(&n.cands);
            }
            let Some(&first) = rest.first() else { return };
            let Ok(i) = n.edges.binary_search_by_key(&first, |(l, _)| l[0]) else {
                return;
            };
            let (label, child) = &n.edges[i];
            if !rest.starts_with(label) {
                return;
            }
            rest = &rest[label.len()..];
            node = *child as usize;
        }
    }
}
