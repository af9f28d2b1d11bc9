//! A framing watcher for HTTP/1.1 client connections: follows message boundaries in the raw
//! bytes and flags a request whose head carries both `Content-Length` and `Transfer-Encoding`.
//!
//! Why this exists: hyper's parser handles such a request safely (chunked wins, the
//! `Content-Length` header is dropped, the connection closes after the response), but it drops
//! the evidence before the request reaches us, so the gateway could not refuse it. Envoy and
//! Pingora refuse ambiguous framing outright with 400, and so must we (request smuggling). The
//! watcher only reads bytes that pass by: heads are scanned line by line, bodies are skipped by
//! length (chunk data is never scanned).

/// Where the watcher is in the byte stream.
#[derive(Debug)]
enum State {
    /// Reading a request head; bytes of a head split across reads are kept in `partial`.
    Head,
    /// Skipping a Content-Length body.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    /// Reading trailer lines until the empty line.
    Trailers,
    /// Not HTTP/1.1 any more (h2c preface, upgrade, garbage): stop watching.
    Off,
}

/// Follows one connection's request stream.
#[derive(Debug)]
pub struct FramingWatch {
    state: State,
    partial: Vec<u8>,
    heads: u64,
    max_head: usize,
    pending: Pending,
    /// 1-based index of the last request whose head had ambiguous framing; 0 for none.
    pub ambiguous: u64,
    /// The connection left HTTP/1.1 (h2c preface or an upgrade): its bytes are another protocol.
    pub switched: bool,
    /// The first bytes of the last request line, for the access-log line of a head the parser
    /// refuses (the request never reaches the pipeline). Inline: no allocation per request.
    line: [u8; LINE_KEPT],
    line_len: u8,
}

/// How much of a request line is kept.
const LINE_KEPT: usize = 96;

impl FramingWatch {
    /// A watcher that gives up on heads longer than `max_head` bytes.
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Head,
            partial: Vec::new(),
            heads: 0,
            max_head: max_head.max(1024) * 2,
            pending: Pending::default(),
            ambiguous: 0,
            switched: false,
            line: [0; LINE_KEPT],
            line_len: 0,
        }
    }

    /// Feeds bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Body(n) => {
                    let take = (n as usize).min(data.len());
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::ChunkData(n) => {
                    let take = (n as usize).min(data.len());
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkSize
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        self.partial.extend_from_slice(data);
                        if self.partial.len() > self.max_head {
                            self.state = State::Off;
                        }
                        return;
                    };
                    let line_end = nl + 1;
                    let line: &[u8] = if self.partial.is_empty() {
                        &data[..line_end]
                    } else {
                        self.partial.extend_from_slice(&data[..line_end]);
                        &[]
                    };
                    let owned;
                    let line = if line.is_empty() {
                        owned = std::mem::take(&mut self.partial);
                        owned.as_slice()
                    } else {
                        line
                    };
                    self.line(line);
                    data = &data[line_end..];
                }
            }
        }
    }

    /// Handles one complete line (with its `\n`) in a line-oriented state.
    fn line(&mut self, line: &[u8]) {
        let trimmed = trim_crlf(line);
        match self.state {
            State::ChunkSize => {
                // A stray CRLF after chunk data, then `size[;ext]`.
                if trimmed.is_empty() {
                    return;
                }
                let hex = trimmed.split(|b| *b == b';').next().unwrap_or(b"");
                let size = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
                self.state = match size {
                    Some(0) => State::Trailers,
                    // The data, then its CRLF (eaten by ChunkSize as an empty line).
                    Some(n) => State::ChunkData(n),
                    None => State::Off,
                };
            }
            State::Trailers if trimmed.is_empty() => self.state = State::Head,
            State::Head => self.head_line(trimmed),
            _ => {}
        }
    }

    fn head_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            if self.pending.started {
                self.end_head();
            }
            // Empty lines before a request line are allowed (RFC 9112 2.2).
            return;
        }
        if !self.pending.started {
            self.pending = Pending {
                started: true,
                ..Pending::default()
            };
            let n = line.len().min(LINE_KEPT);
            self.line[..n].copy_from_slice(&line[..n]);
            self.line_len = n as u8;
            if line.starts_with(b"PRI * HTTP/2") {
                self.state = State::Off;
                self.switched = true;
            }
            return;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            self.pending.content_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .or(Some(u64::MAX));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.pending.chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| trim(last).eq_ignore_ascii_case(b"chunked"));
            self.pending.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.pending.upgrade = true;
        }
    }

    /// Method and request target of the last request line seen, when it was read whole enough
    /// to show them (a target cut at the kept length is not returned).
    pub fn request_line(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        let line = &self.line[..self.line_len as usize];
        let mut parts = line.splitn(3, |b| *b == b' ');
        let method = parts.next().filter(|m| !m.is_empty());
        let target = parts.next();
        let whole = parts.next().is_some();
        (method, target.filter(|t| whole && !t.is_empty()))
    }

    fn end_head(&mut self) {
        let p = std::mem::take(&mut self.pending);
        self.heads += 1;
        if p.transfer_encoding && p.content_length.is_some() {
            self.ambiguous = self.heads;
        }
        self.state = if p.upgrade {
            // After a 101 the bytes are another protocol; after a refused upgrade the client
            // usually closes. Either way, stop following.
            self.switched = true;
            State::Off
        } else if p.transfer_encoding {
            if p.chunked {
                State::ChunkSize
            } else {
                State::Off
            }
        } else {
            match p.content_length {
                Some(0) | None => State::Head,
                Some(u64::MAX) => State::Off,
                Some(n) => State::Body(n),
            }
        };
    }
}

/// Facts about the head being read.
#[derive(Debug, Default)]
struct Pending {
    started: bool,
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    upgrade: bool,
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parts: &[&[u8]]) -> FramingWatch {
        let mut w = FramingWatch::new(8192);
        for p in parts {
            w.feed(p);
        }
        w
    }

    #[test]
    fn plain_requests_are_not_flagged() {
        let w = feed_all(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n"]);
        assert_eq!(w.heads, 3);
        assert_eq!(w.ambiguous, 0);
    }

    #[test]
    fn both_framing_headers_flag_the_request_in_any_order_and_split() {
        let w = feed_all(&[b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"]);
        assert_eq!(w.ambiguous, 2);
        let msg = b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n";
        for cut in 1..msg.len() {
            let w = feed_all(&[&msg[..cut], &msg[cut..]]);
            assert_eq!(w.ambiguous, 1, "cut at {cut}");
        }
    }

    #[test]
    fn chunked_bodies_are_skipped_without_scanning_their_data() {
        // The chunk data looks like a head with both headers: it must not be taken for one.
        let body = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut msg = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        msg.extend_from_slice(format!("{:x};ext=1\r\n", body.len()).as_bytes());
        msg.extend_from_slice(body);
        msg.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
        for cut in 1..msg.len() {
            let w = feed_all(&[&msg[..cut], &msg[cut..]]);
            assert_eq!(w.ambiguous, 0, "cut at {cut}");
            assert_eq!(w.heads, 2, "cut at {cut}");
        }
    }

    #[test]
    fn the_last_request_line_is_kept() {
        let w = feed_all(&[b"GET /a HTTP/1.1\r\n\r\nPOST /b?x=1 HTTP/1.1\r\nBad header\r\n"]);
        assert_eq!(w.request_line(), (Some(&b"POST"[..]), Some(&b"/b?x=1"[..])));
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 200));
        long.extend_from_slice(b" HTTP/1.1\r\n");
        let w = feed_all(&[&long]);
        assert_eq!(w.request_line(), (Some(&b"GET"[..]), None));
    }

    #[test]
    fn h2c_preface_and_upgrades_turn_it_off() {
        let w = feed_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"]);
        assert!(matches!(w.state, State::Off));
        let w = feed_all(&[
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nanything",
        ]);
        assert!(matches!(w.state, State::Off));
    }
}
