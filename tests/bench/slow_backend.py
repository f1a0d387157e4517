#!/usr/bin/env python3
"""Slow-backend benchmark: one backend of three turns slow (SPEC §4a).

Three HTTP backends on 127.0.0.1 (asyncio, keep-alive), two answering after
FAST_MS and one after SLOW_MS, behind each proxy in turn; an open-loop load
generator sends RATE requests per second for DURATION seconds (each request
on its own connection, latency measured from its scheduled start, so a
stalled proxy cannot hide its queue: no coordinated omission) and reports
p50 / p99 / p99.9. The reference row is switchyard round_robin over three
fast backends.

    python3 tests/bench/slow_backend.py --switchyard target/release/switchyard

Targets: switchyard (round_robin, least_conn, peak_ewma, peak_ewma + hedge
p95), HAProxy (roundrobin, leastconn), nginx (least_conn); a missing
haproxy or nginx binary skips its rows. Every process started here is
stopped by PID.
"""

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def serve_backend(port, delay_s):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if delay_s:
                    await asyncio.sleep(delay_s)
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)


def backend_process(port, delay_ms):
    """A backend in its own process, so the load generator does not delay it."""
    code = (
        "import asyncio,sys;sys.path.insert(0,%r);import slow_backend as m\n"
        "async def main():\n"
        "    s=await m.serve_backend(%d,%f)\n"
        "    await s.serve_forever()\n"
        "asyncio.run(main())\n" % (os.path.dirname(os.path.abspath(__file__)), port, delay_ms / 1000)
    )
    return subprocess.Popen([sys.executable, "-c", code])


async def one_request(port, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nApp-Name: web\r\nConnection: close\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        return head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def open_loop(port, rate, duration, timeout):
    """Latencies (s) of RATE x DURATION requests started on schedule; failures as None."""
    start = time.perf_counter() + 0.05
    n = int(rate * duration)
    results = [None] * n

    async def fire(i, due):
        try:
            ok = await one_request(port, timeout)
            results[i] = time.perf_counter() - due if ok else None
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            results[i] = None

    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(fire(i, due)))
    await asyncio.gather(*tasks)
    return results


def pct(xs, q):
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, int(len(xs) * q + 0.5) - 1))
    return xs[i]


def wait_port(port, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def switchyard_conf(d, port, backends, strategy, hedge, tag=""):
    race = "    race: {hedge_delay: p95}\n" if hedge else ""
    lines = "".join("      - url: http://127.0.0.1:%d\n" % b for b in backends)
    path = os.path.join(d, "sy-%s%s%s.yaml" % (strategy, "-hedge" if hedge else "", tag))
    with open(path, "w") as f:
        f.write(
            "server: {threads: 1, pid_file: %s/sy.pid, upgrade_sock: %s/sy.sock, grace_period_seconds: 0}\n"
            "listen: [{addr: \"127.0.0.1:%d\"}]\n"
            "routing: {default_pool: web}\n"
            "pools:\n  web:\n    strategy: %s\n    health_check: {type: none}\n    backends:\n%s%s"
            % (d, d, port, strategy, lines, race)
        )
    return path


def haproxy_conf(d, port, backends, balance):
    path = os.path.join(d, "haproxy-%s.cfg" % balance)
    servers = "".join("    server b%d 127.0.0.1:%d\n" % (i, b) for i, b in enumerate(backends))
    with open(path, "w") as f:
        f.write(
            "global\n    nbthread 1\n    maxconn 4096\n"
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n"
            "    timeout server 60s\n    http-reuse always\n"
            "frontend fe\n    bind 127.0.0.1:%d\n    default_backend web\n"
            "backend web\n    balance %s\n%s" % (port, balance, servers)
        )
    return path


def nginx_conf(d, port, backends):
    path = os.path.join(d, "nginx.conf")
    servers = "".join("        server 127.0.0.1:%d;\n" % b for b in backends)
    with open(path, "w") as f:
        f.write(
            "daemon off;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/nginx.err;\n"
            "events { worker_connections 10000; }\n"
            "http {\n    access_log off;\n    client_body_temp_path %s;\n    proxy_temp_path %s;\n"
            "    upstream web {\n        least_conn;\n%s        keepalive 64;\n    }\n"
            "    server {\n        listen 127.0.0.1:%d;\n        location / {\n"
            "            proxy_pass http://web;\n            proxy_http_version 1.1;\n"
            "            proxy_set_header Connection \"\";\n        }\n    }\n}\n"
            % (d, d, d, d, servers, port)
        )
    return path


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_target(cmd, port, args):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port):
            return None
        # warm-up: a second at the same rate (peak_ewma learns, pools fill)
        asyncio.run(open_loop(port, args.rate, 1, args.timeout))
        return asyncio.run(open_loop(port, args.rate, args.duration, args.timeout))
    finally:
        stop(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--switchyard", default="target/release/switchyard")
    ap.add_argument("--rate", type=float, default=200, help="requests per second [200]")
    ap.add_argument("--duration", type=float, default=10, help="seconds per target [10]")
    ap.add_argument("--fast-ms", type=float, default=2, help="fast backends' latency [2]")
    ap.add_argument("--slow-ms", type=float, default=200, help="slow backend's latency [200]")
    ap.add_argument("--timeout", type=float, default=10)
    args = ap.parse_args()

    d = tempfile.mkdtemp(prefix="sy-slow-")
    ports = [free_port() for _ in range(4)]
    procs = [
        backend_process(ports[0], args.fast_ms),
        backend_process(ports[1], args.fast_ms),
        backend_process(ports[2], args.slow_ms),
        backend_process(ports[3], args.fast_ms),
    ]
    slow3 = ports[:3]
    fast3 = [ports[0], ports[1], ports[3]]
    port = free_port()
    sy = args.switchyard
    targets = [
        ("switchyard round_robin, 3 fast (reference)", [sy, "-c", switchyard_conf(d, port, fast3, "round_robin", False, "-fast")]),
        ("switchyard round_robin", [sy, "-c", switchyard_conf(d, port, slow3, "round_robin", False)]),
        ("switchyard least_conn", [sy, "-c", switchyard_conf(d, port, slow3, "least_conn", False)]),
        ("switchyard peak_ewma", [sy, "-c", switchyard_conf(d, port, slow3, "peak_ewma", False)]),
        ("switchyard peak_ewma + hedge_delay p95", [sy, "-c", switchyard_conf(d, port, slow3, "peak_ewma", True)]),
    ]
    if shutil.which("haproxy"):
        for bal in ("roundrobin", "leastconn"):
            targets.append(("HAProxy " + bal, ["haproxy", "-db", "-f", haproxy_conf(d, port, slow3, bal)]))
    if shutil.which("nginx"):
        targets.append(("nginx least_conn", ["nginx", "-c", nginx_conf(d, port, slow3)]))
    try:
        for p in ports:
            if not wait_port(p):
                sys.exit("backend on port %d did not start" % p)
        # warm the backends and the load generator up, directly
        for p in fast3:
            asyncio.run(open_loop(p, args.rate, 1, args.timeout))
        print("# slow backend: 2 of 3 backends answer in %g ms, one in %g ms; open loop, %g req/s for %g s\n"
              % (args.fast_ms, args.slow_ms, args.rate, args.duration))
        print("| target | p50 ms | p99 ms | p99.9 ms | failed |")
        print("|---|---|---|---|---|")
        for name, cmd in targets:
            res = run_target(cmd, port, args)
            if res is None:
                print("| %s | did not start | | | |" % name)
                continue
            ok = [r for r in res if r is not None]
            failed = len(res) - len(ok)
            if not ok:
                print("| %s | - | - | - | %d |" % (name, failed))
                continue
            print("| %s | %.1f | %.1f | %.1f | %d |" % (
                name, pct(ok, 0.5) * 1e3, pct(ok, 0.99) * 1e3, pct(ok, 0.999) * 1e3, failed))
            sys.stdout.flush()
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
