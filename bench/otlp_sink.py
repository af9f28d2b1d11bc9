#!/usr/bin/env python3
"""A tiny OTLP/HTTP trace sink for bench/run.sh: answers 200 (an empty protobuf
ExportTraceServiceResponse) to every POST /v1/traces and counts what it received.

usage: otlp_sink.py PORT

GET /stats answers `posts=N spans=N bytes=N bad=N` (one line): export requests, spans in them
(resource_spans -> scope_spans -> spans, read with a minimal protobuf walker), body bytes, and
requests it could not read or parse. Standard library only.
"""

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATS = {"posts": 0, "spans": 0, "bytes": 0, "bad": 0}


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """(field number, bytes) of the length-delimited fields of one message; others skipped."""
    i, n = 0, len(buf)
    while i < n:
        key, i = varint(buf, i)
        wire = key & 7
        if wire == 0:
            _, i = varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            ln, i = varint(buf, i)
            yield key >> 3, buf[i:i + ln]
            i += ln
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
    if i != n:
        raise ValueError("truncated message")


def count_spans(body):
    spans = 0
    for f1, resource_spans in fields(memoryview(body)):
        if f1 != 1:
            continue
        for f2, scope_spans in fields(resource_spans):
            if f2 != 2:
                continue
            for f3, _ in fields(scope_spans):
                if f3 == 2:
                    spans += 1
    return spans


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status, body=b"", ctype="application/x-protobuf"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_POST(self):
        try:
            body = self._body()
        except Exception:
            with LOCK:
                STATS["bad"] += 1
            self.close_connection = True
            self._reply(400)
            return
        if self.path.split("?")[0] != "/v1/traces":
            self._reply(404)
            return
        try:
            spans, bad = count_spans(body), 0
        except Exception:
            spans, bad = 0, 1
        with LOCK:
            STATS["posts"] += 1
            STATS["spans"] += spans
            STATS["bytes"] += len(body)
            STATS["bad"] += bad
        self._reply(200)

    def do_GET(self):
        if self.path != "/stats":
            self._reply(404)
            return
        with LOCK:
            line = " ".join(f"{k}={v}" for k, v in STATS.items())
        self._reply(200, (line + "\n").encode(), "text/plain")


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
