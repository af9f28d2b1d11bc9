#!/usr/bin/env python3
"""Opens N keep-alive connections to a proxy, sends one GET on each, keeps them all open,
measures the proxy's RSS, then closes them.

usage: idle_conns.py HOST PORT PID [N] [CONCURRENCY]

Prints key=value lines on stdout (RSS in KiB):
  conns_opened, conns_failed, rss_before_kb, rss_with_conns_kb, rss_after_close_kb,
  conns_still_open (connections the proxy had not closed when RSS was read), open_seconds
"""

import asyncio
import resource
import sys
import time


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


async def open_one(host, port, sem, request):
    # The semaphore only bounds connections *being set up* (and so the number of requests in
    # flight through the proxy to the upstream); established ones stay open afterwards.
    async with sem:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = None
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None:
            await reader.readexactly(length)
        elif chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        if status != b"200":
            raise RuntimeError(f"status {status!r}")
        return reader, writer


async def main():
    host, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 64

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft < want:
        new_soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        if new_soft < want:
            print(f"warning: RLIMIT_NOFILE hard limit {hard} < {want}", file=sys.stderr)

    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: idle-conns\r\n\r\n".encode()
    await asyncio.sleep(0.5)
    before = rss_kb(pid)

    sem = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(open_one(host, port, sem, request) for _ in range(n)), return_exceptions=True
    )
    open_seconds = time.monotonic() - t0
    conns = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        kinds = {}
        for e in errors:
            kinds[repr(e)[:120]] = kinds.get(repr(e)[:120], 0) + 1
        for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:5]:
            print(f"warning: {v} connections failed: {k}", file=sys.stderr)

    # Let the proxy settle (finish per-request cleanup, return pooled upstream connections).
    await asyncio.sleep(2.0)
    with_conns = rss_kb(pid)
    # A connection the proxy closed shows up as EOF on our side.
    await asyncio.sleep(0)
    still_open = sum(1 for r, _ in conns if not r.at_eof())

    for _, w in conns:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    await asyncio.sleep(2.0)
    after = rss_kb(pid)

    print(f"conns_opened={len(conns)}")
    print(f"conns_failed={len(errors)}")
    print(f"conns_still_open={still_open}")
    print(f"open_seconds={open_seconds:.2f}")
    print(f"rss_before_kb={before}")
    print(f"rss_with_conns_kb={with_conns}")
    print(f"rss_after_close_kb={after}")


if __name__ == "__main__":
    asyncio.run(main())
