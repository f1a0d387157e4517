#!/usr/bin/env bash
# tests/bench/instructions.sh — user-space instructions per request, counted
# by callgrind: switchyard against the pingora floor on the same backends, and
# against the floor with --spec-work (the part of switchyard's work that runs
# inside pingora's own code: the forwarding fields and the peer timeouts).
#
# Unlike CPU time, an instruction count does not depend on what else the
# machine is doing, so two builds (or two proxies) can be compared to a
# fraction of a percent on a busy or virtual machine. Kernel time is not
# counted (both proxies make the same system calls per request: two sendto,
# two recvfrom and one getpeername). make bench runs it as the
# `instructions` scenario; alone:
#
#   tests/bench/instructions.sh [REQUESTS]       (default 10000)
#
# Environment: SWITCHYARD_BIN, PINGORA_FLOOR_BIN (release builds with
# debug line tables), PROFILE_DIR (keeps the callgrind
# files there, for callgrind_annotate --inclusive=yes). Prints a markdown
# section on stdout. Needs valgrind, nginx, h2load (nghttp2-client).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-10000}
SY=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
PF=${PINGORA_FLOOR_BIN:-$ROOT/target/release/examples/pingora_floor}
for tool in valgrind callgrind_control callgrind_annotate nginx h2load curl; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool missing (apt-get install valgrind nginx nghttp2-client curl)" >&2; exit 1; }
done
W=$(mktemp -d /tmp/sy-instr-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
# four free loopback ports: three backends and the proxy
read -r -a PORTS <<<"$(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
BE=()
for i in 0 1 2; do
    port=${PORTS[$i]}; d=$W/be$i; mkdir -p "$d"; BE+=("127.0.0.1:$port")
    cat >"$d/nginx.conf" <<C
daemon off; master_process off; worker_processes 1; pid $d/nginx.pid; error_log $d/error.log warn;
events { worker_connections 1024; }
http { access_log off; keepalive_timeout 75s; keepalive_requests 1000000;
  client_body_temp_path $d/cb; proxy_temp_path $d/p; fastcgi_temp_path $d/f; uwsgi_temp_path $d/u; scgi_temp_path $d/s;
  server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } } }
C
    nginx -c "$d/nginx.conf" -p "$d" >/dev/null 2>&1 & PIDS+=($!)
done
LISTEN=127.0.0.1:${PORTS[3]}
cat >"$W/sy.yaml" <<C
server: {threads: 1, pid_file: $W/sy.pid, upgrade_sock: $W/up.sock}
listen: [{addr: "$LISTEN"}]
routing: {default_pool: web}
pools:
  web:
    strategy: round_robin
    backends: [{url: "http://${BE[0]}"}, {url: "http://${BE[1]}"}, {url: "http://${BE[2]}"}]
    health_check: {type: tcp}
log: {access: off}
C

# count NAME CMD...: instructions per request of the proxy started by CMD
count() {
    local name=$1; shift
    local out=$W/cg-$name
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.%p" "$@" >"$W/$name.log" 2>&1 &
    local pid=$!; PIDS+=($pid)
    local ok=0
    for _ in $(seq 600); do
        curl -s -o /dev/null --max-time 2 "http://$LISTEN/" && { ok=1; break; }
        sleep 0.1
    done
    [ $ok = 1 ] || { echo "instructions.sh: $name did not start: $(tail -5 "$W/$name.log")" >&2; exit 1; }
    h2load --h1 -n 2000 -c 8 "http://$LISTEN/" >/dev/null   # warm-up, not counted
    callgrind_control -i on "$pid" >/dev/null 2>&1
    local res; res=$(h2load --h1 -n "$N" -c 8 "http://$LISTEN/")
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$res" | grep -q "$N succeeded" || { echo "instructions.sh: $name: not all requests succeeded: $res" >&2; exit 1; }
    local ir=0 f t
    for f in "$out".*; do
        # the dump holds the counts; the file written at exit holds none (".")
        t=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        [[ "$t" =~ ^[0-9]+$ ]] && ir=$((ir + t))
    done
    if [ -n "${PROFILE_DIR:-}" ]; then mkdir -p "$PROFILE_DIR"; cp "$out".* "$PROFILE_DIR/"; fi
    echo $((ir / N))
}

pf=$(count floor "$PF" "$LISTEN" "${BE[@]}")
ps=$(count floor-spec "$PF" --spec-work "$LISTEN" "${BE[@]}")
sy=$(count switchyard "$SY" -c "$W/sy.yaml")
ratio=$(python3 -c "print(f'{$sy / $pf:.2f}')")
ratio_spec=$(python3 -c "print(f'{$sy / $ps:.2f}')")
spec_share=$(python3 -c "print(f'{100 * ($ps - $pf) / ($sy - $pf):.0f}' if $sy > $pf else '-')")
cat <<EOF
## instructions — user-space instructions per request (callgrind), rr over 3 nginx backends

$N keep-alive requests (\`h2load --h1 -c 8\`) after 2 000 not counted; one worker thread each; kernel time not counted. Deterministic: a change of 1 % shows.

| target | instructions per request |
|---|---:|
| pingora floor | $pf |
| pingora floor \`--spec-work\` (+ the SPEC's forwarding fields and switchyard's peer timeouts, through pingora's API) | $ps |
| switchyard | $sy |

switchyard/pingora-floor instructions per request: **${ratio}×**; switchyard/pingora-floor-spec-work: **${ratio_spec}×** (the forwarding fields and peer timeouts are ${spec_share} % of the difference to the floor)
EOF
