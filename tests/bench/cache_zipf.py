#!/usr/bin/env python3
"""Hit ratio and memory of switchyard's cache on a Zipf-distributed key set
larger than the store.

Usage: python3 tests/bench/cache_zipf.py [path/to/switchyard]
Env: KEYS (2000), OBJECT (8192 bytes), MEMORY (4MiB), REQUESTS (20000),
ZIPF_S (1.0), SEED (1), EVICTION (tinyufo; or lru: `cache.eviction`).
Starts an origin and switchyard on 127.0.0.1; sends REQUESTS GETs whose keys
follow Zipf(s) over KEYS objects of OBJECT bytes (KEYS*OBJECT well above
MEMORY) on one keep-alive connection; prints the hit ratio (Cache-Status
`hit`), the ideal ratio of an oracle that keeps the most popular keys that
fit, switchyard_cache_bytes, and the proxy's peak RSS.
"""
import http.client
import http.server
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

KEYS = int(os.environ.get("KEYS", 2000))
OBJECT = int(os.environ.get("OBJECT", 8192))
MEMORY = os.environ.get("MEMORY", "4MiB")
REQUESTS = int(os.environ.get("REQUESTS", 20000))
S = float(os.environ.get("ZIPF_S", 1.0))
EVICTION = os.environ.get("EVICTION", "tinyufo")
BODY = b"x" * OBJECT


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Cache-Control", "max-age=3600")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def size(text):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "B": 1}
    for u, m in units.items():
        if text.endswith(u):
            return int(text[: -len(u)]) * m
    return int(text)


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    binary = sys.argv[1] if len(sys.argv) > 1 else next(
        p for p in (f"{root}/target/release/switchyard", f"{root}/target/debug/switchyard")
        if os.path.exists(p))
    tmp = tempfile.mkdtemp(prefix="cache-zipf-")
    origin, port, admin = free_port(), free_port(), free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", origin), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with open(f"{tmp}/sy.yaml", "w") as f:
        f.write(f"""server: {{pid_file: {tmp}/sy.pid, upgrade_sock: {tmp}/sy.sock, grace_period_seconds: 0, threads: 1}}
listen: [{{addr: "127.0.0.1:{port}"}}]
routing: {{default_pool: web}}
admin: {{listen: "127.0.0.1:{admin}"}}
pools:
  web:
    backends: [{{url: "http://127.0.0.1:{origin}"}}]
    health_check: {{type: none}}
    cache: {{}}
  plain:
    backends: [{{url: "http://127.0.0.1:{origin}"}}]
    health_check: {{type: none}}
cache: {{memory: {MEMORY}, max_object: 1MiB, eviction: {EVICTION}}}
""")
    proc = subprocess.Popen([binary, "-c", f"{tmp}/sy.yaml"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        rng = random.Random(int(os.environ.get("SEED", 1)))
        weights = [1 / (k ** S) for k in range(1, KEYS + 1)]
        keys = rng.choices(range(KEYS), weights=weights, k=REQUESTS)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        hits = 0
        start = time.time()
        for k in keys:
            c.request("GET", f"/obj/{k}")
            r = c.getresponse()
            r.read()
            hits += "; hit" in (r.getheader("Cache-Status") or "")
        took = time.time() - start

        def per_request(headers):
            t = time.time()
            for _ in range(500):
                c.request("GET", "/obj/0", headers=headers)
                c.getresponse().read()
            return (time.time() - t) / 500 * 1e3
        hit_ms = per_request({})
        plain_ms = per_request({"App-Name": "plain"})
        a = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        a.request("GET", "/metrics")
        metrics = a.getresponse().read().decode()
        stored = next(l.split()[1] for l in metrics.splitlines()
                      if l.startswith("switchyard_cache_bytes "))
        with open(f"/proc/{proc.pid}/status") as st:
            rss = next(l.split()[1] for l in st if l.startswith("VmHWM"))
        fit = size(MEMORY) // (OBJECT + 200)
        total = sum(weights)
        oracle = sum(weights[:fit]) / total
        print(f"keys={KEYS} object={OBJECT}B store={MEMORY} (~{fit} objects) requests={REQUESTS} zipf_s={S} "
              f"eviction={EVICTION}")
        print(f"hit ratio {hits / REQUESTS:.3f} (oracle keeping the {fit} most popular: {oracle:.3f}; "
              f"cold misses included)")
        print(f"switchyard_cache_bytes {stored} (limit {size(MEMORY)}), peak RSS {int(rss) // 1024} MiB, "
              f"{REQUESTS / took:.0f} req/s on one connection")
        print(f"sequential latency on one connection: hit {hit_ms:.2f} ms, "
              f"plain proxied (non-caching pool, same object) {plain_ms:.2f} ms")
    finally:
        proc.terminate()
        proc.wait(5)
        srv.shutdown()


if __name__ == "__main__":
    main()
