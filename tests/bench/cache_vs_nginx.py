#!/usr/bin/env python3
"""RFC 9111 cases against switchyard's cache and nginx proxy_cache, side by side.

Usage: python3 tests/bench/cache_vs_nginx.py [path/to/switchyard]
(default target/release/switchyard, else target/debug/switchyard; nginx from
PATH). Starts one origin, one switchyard and one nginx on 127.0.0.1, runs each
case against both proxies and prints a Markdown table of how many requests
reached the origin (and the last cache status header each proxy sent).
"""
import http.client
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from email.utils import formatdate

HITS = Counter()

CASES = {
    # path: (response headers, RFC 9111 expectation)
    "/fresh": ([("Cache-Control", "max-age=60")], "stored, 2nd from cache"),
    "/expires": ([("Expires", None)], "stored (Expires 60 s ahead)"),
    "/silent": ([], "not stored (no freshness, default_ttl 0)"),
    "/no-store": ([("Cache-Control", "no-store, max-age=60")], "not stored"),
    "/private": ([("Cache-Control", "private, max-age=60")], "not stored (shared cache)"),
    "/no-cache": ([("Cache-Control", "no-cache"), ("ETag", '"e1"')], "stored, revalidated each time (304)"),
    "/auth": ([("Cache-Control", "max-age=60")], "not stored: request had Authorization (§3.5)"),
    "/auth-smaxage": ([("Cache-Control", "s-maxage=60")], "stored: s-maxage allows it (§3.5)"),
    "/cookie": ([("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")], "RFC: may store; switchyard: not (deliberate)"),
    "/cookie-public": ([("Cache-Control", "public, max-age=60"), ("Set-Cookie", "s=1")], "stored (explicit public)"),
    "/vary": ([("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")], "one entry per Accept-Language"),
    "/post": ([("Cache-Control", "max-age=60")], "POST invalidates (§4.4)"),
    "/head": ([("Cache-Control", "max-age=60")], "HEAD served from the stored GET"),
}


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def answer(self, body=True):
        path = self.path.split("?")[0]
        HITS[path] += 1
        headers, _ = CASES.get(path, ([], ""))
        if path == "/no-cache" and self.headers.get("If-None-Match") == '"e1"':
            self.send_response(304)
            self.send_header("ETag", '"e1"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = f"{path} {HITS[path]} {self.headers.get('Accept-Language', '')}".encode()
        self.send_response(200)
        self.send_header("Date", formatdate(usegmt=True))
        for k, v in headers:
            if k == "Expires":
                v = formatdate(time.time() + 60, usegmt=True)
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self):
        self.answer()

    def do_HEAD(self):
        self.answer(body=False)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        HITS[self.path + " POST"] += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def req(port, method, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path, body=b"x" if method == "POST" else None, headers=headers or {})
    r = c.getresponse()
    r.read()
    status = r.getheader("Cache-Status") or r.getheader("X-Cache-Status") or ""
    c.close()
    return status


def run_case(port, path):
    start = HITS[path]
    last = ""
    if path in ("/auth", "/auth-smaxage"):
        for _ in range(2):
            last = req(port, "GET", path, {"Authorization": "Bearer a"})
    elif path == "/vary":
        for lang in ("en", "fr", "en", "fr"):
            last = req(port, "GET", path, {"Accept-Language": lang})
    elif path == "/post":
        req(port, "GET", path)
        req(port, "POST", path)
        last = req(port, "GET", path)
    elif path == "/head":
        req(port, "GET", path)
        last = req(port, "HEAD", path)
    else:
        for _ in range(2):
            last = req(port, "GET", path)
    return HITS[path] - start, last


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    binary = sys.argv[1] if len(sys.argv) > 1 else next(
        p for p in (f"{root}/target/release/switchyard", f"{root}/target/debug/switchyard")
        if os.path.exists(p))
    tmp = tempfile.mkdtemp(prefix="cache-vs-nginx-")
    os.chmod(tmp, 0o755)  # nginx workers may run as another user
    user = "user root;" if os.geteuid() == 0 else ""
    origin_port, sy_port, ngx_port = free_port(), free_port(), free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", origin_port), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    with open(f"{tmp}/sy.yaml", "w") as f:
        f.write(f"""server: {{pid_file: {tmp}/sy.pid, upgrade_sock: {tmp}/sy.sock, grace_period_seconds: 0}}
listen: [{{addr: "127.0.0.1:{sy_port}"}}]
routing: {{default_pool: web}}
pools:
  web:
    backends: [{{url: "http://127.0.0.1:{origin_port}"}}]
    health_check: {{type: none}}
    cache: {{}}
cache: {{memory: 64MiB}}
""")
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(f"""{user} daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{}}
http {{
  access_log off;
  proxy_cache_path {tmp}/cache keys_zone=c:10m max_size=64m;
  proxy_temp_path {tmp}/proxy_temp;
  server {{
    listen 127.0.0.1:{ngx_port};
    location / {{
      proxy_pass http://127.0.0.1:{origin_port};
      proxy_http_version 1.1;
      proxy_cache c;
      proxy_cache_revalidate on;
      proxy_cache_lock on;
      proxy_cache_background_update on;
      proxy_cache_use_stale error timeout updating http_502 http_503 http_504;
      add_header X-Cache-Status $upstream_cache_status always;
    }}
  }}
}}
""")
    procs = [
        subprocess.Popen([binary, "-c", f"{tmp}/sy.yaml"], stderr=subprocess.DEVNULL),
        subprocess.Popen(["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp], stderr=subprocess.DEVNULL),
    ]
    try:
        wait_port(sy_port)
        wait_port(ngx_port)
        print("| case | RFC 9111 | switchyard: origin requests, Cache-Status | nginx: origin requests, $upstream_cache_status |")
        print("|---|---|---|---|")
        for path, (_, rfc) in CASES.items():
            sy = run_case(sy_port, path)
            ngx = run_case(ngx_port, path)
            print(f"| `{path}` | {rfc} | {sy[0]}, `{sy[1]}` | {ngx[0]}, `{ngx[1]}` |")
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
        srv.shutdown()


if __name__ == "__main__":
    main()
