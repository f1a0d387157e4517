#!/usr/bin/env python3
"""Open N keep-alive connections to a proxy, send one GET on each, keep them
open, and measure the proxy's memory meanwhile. Used by run.sh (scenario
`idle`). Standard library only; talks to 127.0.0.1 only.

  idle_conns.py --port P --conns 10000 --hold 5 --pid PROXY_PID --target NAME

Prints one JSON line: rss_before_kb, rss_open_kb (VmRSS summed over the
proxy's processes, read after the hold), hwm_kb, opened, still_open (not closed
by the proxy during the hold), failed.
"""
import argparse
import asyncio
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import proc_stat  # noqa: E402

OPEN_DEADLINE = 120.0   # seconds for the whole opening phase
OP_TIMEOUT = 10.0       # per connect / request


def raise_nofile(want=65536):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for lim in ((want, max(hard, want)), (max(soft, min(want, hard)), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, lim)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def one(port, path, sem, conns, stats):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), OP_TIMEOUT)
        except Exception:
            stats["failed"] += 1
            return
        try:
            w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), OP_TIMEOUT)
            status = int(head.split(b" ", 2)[1])
            clen = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    clen = int(line.split(b":", 1)[1])
            if clen:
                await asyncio.wait_for(r.readexactly(clen), OP_TIMEOUT)
            if status != 200:
                stats["non200"] += 1
            conns.append((r, w))
        except Exception:
            stats["failed"] += 1
            w.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--target", default="?")
    ap.add_argument("--path", default="/")
    ap.add_argument("--concurrency", type=int, default=64,
                    help="connections being opened at once (bounds upstream connections)")
    a = ap.parse_args()
    nofile = raise_nofile()
    if nofile < a.conns + 100:
        print(f"idle_conns: RLIMIT_NOFILE {nofile} too low for {a.conns} connections",
              file=sys.stderr)
        sys.exit(1)
    _, _, rss_before, _ = proc_stat(a.pid)
    sem = asyncio.Semaphore(a.concurrency)
    conns, stats = [], {"failed": 0, "non200": 0}
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one(a.port, a.path, sem, conns, stats)) for _ in range(a.conns)]
    done, pending = await asyncio.wait(tasks, timeout=OPEN_DEADLINE)
    for t in pending:
        t.cancel()
    stats["failed"] += len(pending)
    open_secs = time.monotonic() - t0
    await asyncio.sleep(a.hold)
    _, hwm, rss_open, nproc = proc_stat(a.pid)
    still_open = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        w.close()
    print(json.dumps({
        "target": a.target, "target_conns": a.conns, "opened": len(conns),
        "still_open": still_open, "failed": stats["failed"], "non200": stats["non200"],
        "rss_before_kb": rss_before, "rss_open_kb": rss_open, "hwm_kb": hwm,
        "nproc": nproc, "open_seconds": round(open_secs, 2), "hold_seconds": a.hold,
    }))


if __name__ == "__main__":
    asyncio.run(main())
