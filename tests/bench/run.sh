#!/usr/bin/env bash
# switchyard benchmark: switchyard vs nginx vs HAProxy vs the pingora floor
# (examples/pingora_floor.rs) vs a backend directly.
#
#   make bench                 # runs: bash tests/bench/run.sh
#   bash tests/bench/run.sh    # the same
#   ROUNDS=1 DURATION=3 bash tests/bench/run.sh            # quick end-to-end check
#   SCENARIOS="rr idle" bash tests/bench/run.sh            # a subset
#
# Environment (defaults in brackets):
#   ROUNDS [3]       measured rounds per scenario; target order is rotated each round
#   DURATION [10]    seconds of each measured wrk run (wrk -t1 -c64 --latency)
#   WARMUP [2]       seconds of wrk warm-up before each measured run
#   SCENARIOS ["rr least_conn 1k 64k race idle https https_new h2 cache rate threads instructions"]
#                    cache: a cache hit of /1k (switchyard pool with `cache:`, nginx proxy_cache)
#                    against the same object proxied by a switchyard pool without cache
#                    https: HTTP/1.1 keep-alive over TLS (wrk); https_new: a new TLS
#                    connection (full handshake) per request (wrk, Connection: close);
#                    h2: HTTP/2 over TLS (h2load -c64 -m1); same certificate everywhere
#                    rate: open loop at 50 % and 80 % of HAProxy's rr req/s and at 50 % of each
#                    proxy's own (oha -q RATE
#                    --latency-correction; oha is installed with cargo when missing);
#                    threads: 2 threads/workers per proxy, proxy unpinned (wrk as rr)
#   IDLE_CONNS [10000], IDLE_HOLD [5]   idle scenario: connections held open, seconds held
#   SKIP_BUILD [0]   1 = use the existing target/release/switchyard and
#                    target/release/examples/pingora_floor as they are
#   SWITCHYARD_BIN   benchmark this binary instead (implies no build)
#   PINGORA_FLOOR_BIN  use this pingora_floor binary for target pingora
#                    [target/release/examples/pingora_floor]; missing = target skipped with a note
#   RESULTS_NAME [latest]  results file name under tests/bench/results/
#   TARGETS          only these targets (direct nginx haproxy pingora pingora_spec switchyard), e.g. for an A/B
#                    (pingora = the pingora floor: rr, 1k, 64k and idle only; pingora_spec = the
#                    floor with --spec-work, switchyard's forwarding fields and peer timeouts: rr only)
#   KEEP_TMP [0]     1 = keep the temp dir (configs, logs, raw wrk output)
#   PORT_BASE [19001]  first port tried (below 32000) for the backends and proxies (two runs at once need
#                    different bases)
#   NOISE_MAX [10]   a run during which the proxy's core was more than this many
#   NOISE_RETRIES [2]  % busy with other work is redone, up to NOISE_RETRIES times
#   QUIET_WAIT [120] before each run, wait up to this many seconds for the machine to be idle
#
# Needs wrk, nginx, haproxy, curl, python3, taskset. Missing Debian packages are
# installed with apt-get when running as root; otherwise the command is printed.
# Everything runs on 127.0.0.1; every process started here is stopped by PID.
# Results: stdout, tests/bench/results/latest.md and latest.json. See README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH_PY="$HERE/bench.py"
RESULTS="$HERE/results"

# the exact command, with the variables the caller set
CMD="bash tests/bench/run.sh"
for v in PORT_BASE PINGORA_FLOOR_BIN TARGETS QUIET_WAIT NOISE_RETRIES NOISE_MAX SWITCHYARD_BIN SKIP_BUILD KEEP_TMP IDLE_HOLD IDLE_CONNS WARMUP SCENARIOS DURATION ROUNDS; do
    if [ -n "${!v+x}" ]; then CMD="$v=$(printf '%q' "${!v}") $CMD"; fi
done
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SCENARIOS=${SCENARIOS:-"rr least_conn 1k 64k race idle https https_new h2 cache rate threads instructions"}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-5}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
NOISE_MAX=${NOISE_MAX:-10}
NOISE_RETRIES=${NOISE_RETRIES:-2}
QUIET_WAIT=${QUIET_WAIT:-120}
CONNS=64
PROXY_CPU=0
LOAD_CPU=1
PROXY_CPUS=$PROXY_CPU   # where proxies run: core 0, both cores in the threads scenario
THREADS=1               # worker threads/processes per proxy: 2 in the threads scenario

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

for n in "$ROUNDS" "$DURATION" "$WARMUP" "$IDLE_CONNS" "$IDLE_HOLD" "$NOISE_MAX" "$NOISE_RETRIES" "$QUIET_WAIT"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "ROUNDS, DURATION, WARMUP, IDLE_CONNS, IDLE_HOLD, NOISE_MAX, NOISE_RETRIES, QUIET_WAIT must be integers"
done
[ "$ROUNDS" -ge 1 ] && [ "$DURATION" -ge 1 ] || die "ROUNDS and DURATION must be >= 1"
for s in $SCENARIOS; do
    case $s in rr|least_conn|1k|64k|race|idle|https|https_new|h2|cache|rate|threads|instructions) ;; *) die "unknown scenario '$s' (rr least_conn 1k 64k race idle https https_new h2 cache rate threads instructions)";; esac
done
for t in ${TARGETS:-}; do
    case $t in direct|nginx|haproxy|pingora|pingora_spec|switchyard|switchyard_nocache) ;; *) die "unknown target '$t' (direct nginx haproxy pingora pingora_spec switchyard switchyard_nocache)";; esac
done

# ------------------------------------------------------------------ tools
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
command -v openssl >/dev/null || missing+=(openssl)
if [[ " $SCENARIOS " == *" h2 "* || " $SCENARIOS " == *" instructions "* ]]; then command -v h2load >/dev/null || missing+=(nghttp2-client); fi
if [[ " $SCENARIOS " == *" instructions "* ]]; then command -v valgrind >/dev/null || missing+=(valgrind); fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    else
        echo "missing tools; install them with:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
# ---- rate scenario: oha (open-loop load generator), from crates.io when missing
export PATH="$PATH:$HOME/.cargo/bin"
if [[ " $SCENARIOS " == *" rate "* ]] && ! command -v oha >/dev/null; then
    log "cargo install oha --locked (for the rate scenario)"
    cargo install oha --locked >&2 || die "cargo install oha failed (needed by the rate scenario)"
fi
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (proxy on core $PROXY_CPU, load on core $LOAD_CPU)"

# ------------------------------------------------------------------ build
SY_BIN=${SWITCHYARD_BIN:-"$ROOT/target/release/switchyard"}
SY_BIN=$(realpath "$SY_BIN" 2>/dev/null || echo "$SY_BIN")
# the pingora floor (target pingora): the smallest pingora load balancer
PF_BIN=${PINGORA_FLOOR_BIN:-"$ROOT/target/release/examples/pingora_floor"}
PF_BIN=$(realpath "$PF_BIN" 2>/dev/null || echo "$PF_BIN")
if [ "$SKIP_BUILD" != 1 ] && [ -z "${SWITCHYARD_BIN:-}" ]; then
    log "cargo build --release --bins --example pingora_floor"
    (cd "$ROOT" && cargo build --release --bins --example pingora_floor) || die "cargo build failed"
fi
[ -x "$SY_BIN" ] || die "$SY_BIN not found (build failed or SKIP_BUILD=1 without a build)"
PF_OK=1; [ -x "$PF_BIN" ] || PF_OK=0   # missing: target pingora skipped with a note (below)
# the source the binary was built from (others may commit while this runs)
SY_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain -- src examples Cargo.toml Cargo.lock 2>/dev/null)" ]; then SY_REV="$SY_REV + uncommitted changes"; fi
[ -n "${SWITCHYARD_BIN:-}" ] && SY_REV="$SY_BIN"
[ "$SKIP_BUILD" = 1 ] && SY_REV="existing build (SKIP_BUILD=1; tree at $SY_REV)"

# ------------------------------------------------------------------ temp dir, cleanup
WORK=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as an unprivileged user and read $WORK/www
PIDS=()          # everything still running that we started
cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    if [ "$KEEP_TMP" = 1 ] || [ $rc -ne 0 ]; then
        log "temp dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}

alive() {  # running and not a zombie
    local st
    st=$(awk '{sub(/.*\) /, ""); print $1}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# stop_pid PID [SIGNAL]: signal, wait up to 5 s, then SIGKILL the process and
# every descendant it still has (by PID).
stop_pid() {
    local pid=$1 sig=${2:-TERM} i tree
    if alive "$pid"; then
        tree=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); from bench import process_tree; print(*process_tree(int(sys.argv[2])))' "$HERE" "$pid" 2>/dev/null || echo "$pid")
        kill "-$sig" "$pid" 2>/dev/null
        for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            log "pid $pid did not stop on SIG$sig; SIGKILL"
            for p in $tree; do kill -KILL "$p" 2>/dev/null; done
        fi
    fi
    wait "$pid" 2>/dev/null || true
    local keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# file descriptors: 65536 wanted; without CAP_SYS_RESOURCE the hard limit caps it
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
NGX_CONNS=$((NOFILE > 33000 ? 32768 : NOFILE - 200))
# HAProxy: room for the idle scenario's clients; it reserves 2 fds per
# connection and refuses to start when it cannot, so relax that check when
# the fd limit is lower (idle client connections need one fd each)
HA_MAXCONN=$((IDLE_CONNS + 1000))
HA_STRICT=""; [ "$NOFILE" -lt $((HA_MAXCONN * 2 + 100)) ] && HA_STRICT="no strict-limits"

SY_LOG_DOWN=0
NOTES="$WORK/notes.txt"; : >"$NOTES"
note() { log "note: $*"; printf '%s\n' "$*" >>"$NOTES"; }
RAW="$WORK/runs.jsonl"; : >"$RAW"
IDLE_RAW="$WORK/idle.jsonl"; : >"$IDLE_RAW"
mkdir -p "$WORK/wrk" "$WORK/www"

# the pingora floor is missing: say so once, if a scenario would have run it
if [ "$PF_OK" = 0 ] && { [ -z "${TARGETS:-}" ] || [[ " $TARGETS " == *" pingora "* ]]; } \
        && [[ " $SCENARIOS " =~ \ (rr|1k|64k|idle)\  ]]; then
    note "pingora: skipped, $PF_BIN not found (build it with: cargo build --release --example pingora_floor, or set PINGORA_FLOOR_BIN)"
fi

# ------------------------------------------------------------------ ports
# PORT_BASE: where the search for free ports starts (two runs at once need
# different bases: each only sees the ports the other already listens on)
read -r -a PORTS <<<"$(python3 "$BENCH_PY" freeports 11 "${PORT_BASE:-19001}")"
BE_PORTS=("${PORTS[0]}" "${PORTS[1]}" "${PORTS[2]}")
NGINX_PORT=${PORTS[3]}
HAPROXY_PORT=${PORTS[4]}
SY_PORT=${PORTS[5]}
PF_PORT=${PORTS[6]}
# TLS listeners (https, https_new, h2 scenarios)
NGINX_TLS_PORT=${PORTS[7]}
HAPROXY_TLS_PORT=${PORTS[8]}
SY_TLS_PORT=${PORTS[9]}
SY_ADMIN_PORT=${PORTS[10]}   # race scenario: switchyard's admin API (metrics)
log "ports: backends ${BE_PORTS[*]}, nginx $NGINX_PORT, haproxy $HAPROXY_PORT, switchyard $SY_PORT, pingora floor $PF_PORT; TLS: nginx $NGINX_TLS_PORT, haproxy $HAPROXY_TLS_PORT, switchyard $SY_TLS_PORT"

# one certificate (ECDSA P-256, as most sites now serve) for every TLS listener
TLS="$WORK/tls"; mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$TLS/key.pem" -out "$TLS/cert.pem" >/dev/null 2>&1 || die "openssl could not make the test certificate"
cat "$TLS/cert.pem" "$TLS/key.pem" >"$TLS/combined.pem"   # HAProxy wants both in one file
chmod 644 "$TLS"/*.pem   # nginx workers read them unprivileged

# wait_http URL [curl args...]: until the URL answers 200 (at most 15 s)
wait_http() {
    local url=$1; shift
    local i code
    for i in $(seq 150); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" 2>/dev/null || true)
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

# nginx_head DIR: the start of an nginx.conf shared by the backends and the
# nginx proxy (one worker, files under DIR, long keep-alive); the caller
# writes the rest of the http block and closes it
nginx_head() {
    local d=$1
    cat <<EOF
daemon off;
master_process on;
worker_processes ${NGX_WORKERS:-1};
worker_rlimit_nofile $NOFILE;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $NGX_CONNS; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
EOF
}

# ------------------------------------------------------------------ backends
head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/www/1k"
head -c 65536 /dev/zero | tr '\0' 'b' >"$WORK/www/64k"
BE_PIDS=()
for i in 0 1 2; do
    d="$WORK/backend$i"; mkdir -p "$d"
    { nginx_head "$d"; cat <<EOF
    default_type application/octet-stream;
    sendfile on;
    server {
        listen 127.0.0.1:${BE_PORTS[$i]};
        location / { return 200 "ok\n"; }
        location = /1k { root $WORK/www; }
        location = /64k { root $WORK/www; }
        location = /nginx_status { stub_status; }
    }
}
EOF
    } >"$d/nginx.conf"
    taskset -c "$LOAD_CPU" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
    BE_PIDS+=($!); PIDS+=($!)
done
for i in 0 1 2; do
    wait_http "http://127.0.0.1:${BE_PORTS[$i]}/" || die "backend $i did not start: $(cat "$WORK/backend$i/error.log" "$WORK/backend$i/stdout.log")"
done
[ "$(curl -s "http://127.0.0.1:${BE_PORTS[0]}/64k" | wc -c)" = 65536 ] || die "backend /64k body wrong"
log "backends up: pids ${BE_PIDS[*]}"

# requests served and connections accepted so far by each backend (nginx
# stub_status): "req0 req1 req2 acc0 acc1 acc2"
backend_counts() {
    local i req=() acc=() line
    for i in 0 1 2; do
        line=$(curl -s --max-time 2 "http://127.0.0.1:${BE_PORTS[$i]}/nginx_status" | awk 'NR==3 {print $1, $3}')
        acc+=("${line% *}"); req+=("${line#* }")
    done
    echo "${req[@]} ${acc[@]}"
}

# ------------------------------------------------------------------ proxy configs
# write_nginx STRATEGY(rr|least_conn) [cache]
write_nginx() {
    local d="$WORK/nginx"; mkdir -p "$d"
    local lc=""; [ "$1" = least_conn ] && lc="least_conn;"
    local cache_path="" cache_use=""
    [ "${2:-}" = cache ] && { cache_path=$(nginx_cache_path "$d"); cache_use=$(nginx_cache_use); }
    { nginx_head "$d"; cat <<EOF
    $cache_path
    upstream web {
        $lc
        server 127.0.0.1:${BE_PORTS[0]};
        server 127.0.0.1:${BE_PORTS[1]};
        server 127.0.0.1:${BE_PORTS[2]};
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $TLS/cert.pem;
        ssl_certificate_key $TLS/key.pem;
        location / {
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            $cache_use
        }
    }
}
EOF
    } >"$d/nginx.conf"
}

# ---- cache scenario: nginx proxy_cache set up like the switchyard pool
# `cache` below (64 MiB, objects without freshness kept 60 s, lock on)
nginx_cache_path() {
    echo "proxy_cache_path $1/cache levels=1:2 keys_zone=c:8m max_size=64m inactive=10m use_temp_path=off;"
}
nginx_cache_use() {
    echo 'proxy_cache c; proxy_cache_valid 200 60s; proxy_cache_lock on; add_header X-Cache-Status $upstream_cache_status;'
}
# switchyard_cache_pools: pool `cache` (App-Name: cache) caching every 200 for
# 60 s, and the shared store; the default pool `web` is the same object uncached
switchyard_cache_pools() {
    cat <<EOF
  cache:
    strategy: round_robin
    backends:
      - url: http://127.0.0.1:${BE_PORTS[0]}
      - url: http://127.0.0.1:${BE_PORTS[1]}
      - url: http://127.0.0.1:${BE_PORTS[2]}
    health_check: {type: tcp}
    cache: {default_ttl: 60s}
cache: {memory: 64MiB}
EOF
}

write_haproxy() {
    local d="$WORK/haproxy"; mkdir -p "$d"
    local bal=roundrobin; [ "$1" = least_conn ] && bal=leastconn
    cat >"$d/haproxy.cfg" <<EOF
global
    nbthread $THREADS
    maxconn $HA_MAXCONN
    $HA_STRICT

defaults
    mode http
    maxconn $HA_MAXCONN
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    bind 127.0.0.1:$HAPROXY_TLS_PORT ssl crt $TLS/combined.pem alpn h2,http/1.1
    default_backend web

backend web
    balance $bal
    server b0 127.0.0.1:${BE_PORTS[0]} check inter 2s
    server b1 127.0.0.1:${BE_PORTS[1]} check inter 2s
    server b2 127.0.0.1:${BE_PORTS[2]} check inter 2s
EOF
}

# write_switchyard STRATEGY(rr|least_conn) [race] -> $WORK/switchyard/<name>.yaml
write_switchyard() {
    local d="$WORK/switchyard"; mkdir -p "$d"
    local strat=round_robin; [ "$1" = least_conn ] && strat=least_conn
    local f="$d/$1${2:+-$2}.yaml"
    {
        cat <<EOF
server:
  threads: $THREADS
  pid_file: $d/switchyard.pid
  upgrade_sock: $d/upgrade.sock
EOF
        [ -n "${WORK_STEALING:-}" ] && echo "  work_stealing: $WORK_STEALING"
        cat <<EOF
listen:
  - addr: 127.0.0.1:$SY_PORT
  - addr: 127.0.0.1:$SY_TLS_PORT
    tls: {cert: $TLS/cert.pem, key: $TLS/key.pem}
routing:
  default_pool: web
pools:
  web:
    strategy: $strat
    backends:
      - url: http://127.0.0.1:${BE_PORTS[0]}
      - url: http://127.0.0.1:${BE_PORTS[1]}
      - url: http://127.0.0.1:${BE_PORTS[2]}
    health_check: {type: tcp}
EOF
        if [ "${2:-}" = race ]; then
            cat <<EOF
  race:
    strategy: round_robin
    backends:
      - url: http://127.0.0.1:${BE_PORTS[0]}
      - url: http://127.0.0.1:${BE_PORTS[1]}
      - url: http://127.0.0.1:${BE_PORTS[2]}
    health_check: {type: tcp}
    race: {}
EOF
        fi
        if [ "${2:-}" = cache ]; then switchyard_cache_pools; fi
        # race: the admin listener, to count each backend's wins (race_winners)
        [ "${2:-}" = race ] && printf 'admin:\n  listen: 127.0.0.1:%s\n' "$SY_ADMIN_PORT"
        cat <<EOF
log:
  access: off
EOF
    } >"$f"
    echo "$f"
}

# start_proxy TARGET STRATEGY [race] -> sets PROXY_PID, PROXY_PORT, PROXY_LOG
start_proxy() {
    local t=$1 strat=$2 extra=${3:-}
    case $t in
        nginx)
            write_nginx "$strat" $extra
            PROXY_PORT=$NGINX_PORT; PROXY_LOG="$WORK/nginx/error.log"
            taskset -c "$PROXY_CPUS" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
                >"$WORK/nginx/stdout.log" 2>&1 &
            ;;
        haproxy)
            write_haproxy "$strat"
            PROXY_PORT=$HAPROXY_PORT; PROXY_LOG="$WORK/haproxy/stderr.log"
            taskset -c "$PROXY_CPUS" haproxy -db -f "$WORK/haproxy/haproxy.cfg" >"$PROXY_LOG" 2>&1 &
            ;;
        switchyard|switchyard_nocache|switchyard_nows)
            local f ws=""; [ "$t" = switchyard_nows ] && ws=false
            f=$(WORK_STEALING=$ws write_switchyard "$strat" $extra)
            PROXY_PORT=$SY_PORT; PROXY_LOG="$WORK/switchyard/stderr.log"; : >>"$PROXY_LOG"
            taskset -c "$PROXY_CPUS" "$SY_BIN" -c "$f" >>"$PROXY_LOG" 2>&1 &
            ;;
        pingora|pingora_spec)   # the pingora floor: round robin only, no config file
            [ "$strat" = rr ] || die "target $t only does round robin (asked: $strat)"
            local spec=(); [ "$t" = pingora_spec ] && spec=(--spec-work)
            mkdir -p "$WORK/$t"
            PROXY_PORT=$PF_PORT; PROXY_LOG="$WORK/$t/stderr.log"; : >>"$PROXY_LOG"
            taskset -c "$PROXY_CPUS" "$PF_BIN" "${spec[@]}" "127.0.0.1:$PF_PORT" \
                "127.0.0.1:${BE_PORTS[0]}" "127.0.0.1:${BE_PORTS[1]}" "127.0.0.1:${BE_PORTS[2]}" >>"$PROXY_LOG" 2>&1 &
            ;;
        *) die "unknown target $t" ;;
    esac
    PROXY_PID=$!; PIDS+=("$PROXY_PID")
}

stop_proxy() {
    local t=$1 pid=$2
    case $t in
        switchyard|switchyard_nocache|switchyard_nows|pingora|pingora_spec) stop_pid "$pid" INT ;;   # pingora fast shutdown (SIGTERM waits for the grace period)
        *) stop_pid "$pid" TERM ;;
    esac
}

# ------------------------------------------------------------------ one measured run
# percent of all CPUs busy (all but idle and iowait) over 2 s
machine_busy() {
    python3 - <<'EOF'
import time
def snap():
    v = (list(map(int, open("/proc/stat").readline().split()[1:])) + [0] * 8)[:8]
    return sum(v) - v[3] - v[4], sum(v)
a = snap(); time.sleep(2); b = snap()
print(round(100 * (b[0] - a[0]) / max(1, b[1] - a[1])))
EOF
}

# wait_quiet WHAT: wait (at most QUIET_WAIT s) until the machine is at most
# 5 % busy; only the idle backends (and an idle proxy) of ours run then.
wait_quiet() {
    local busy waited=0
    busy=$(machine_busy)
    while [ "$busy" -gt 5 ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
        [ "$waited" = 0 ] && log "machine ${busy}% busy with other work before $1; waiting (at most ${QUIET_WAIT}s)"
        sleep 3; waited=$((waited + 5))
        busy=$(machine_busy)
    done
    if [ "$busy" -gt 5 ]; then
        note "$1: machine still ${busy}% busy with other work after waiting ${QUIET_WAIT}s"
    elif [ "$waited" -gt 0 ]; then
        log "machine quiet after ${waited}s"
    fi
    return 0
}

# run_target SCENARIO TARGET ROUND: one measured run, redone (up to
# NOISE_RETRIES times) when other work took more than NOISE_MAX % of the
# proxy's core during it; the last attempt is kept either way.
run_target() {
    local sc=$1 t=$2 rnd=$3 attempt noise
    for ((attempt = 0; attempt <= NOISE_RETRIES; attempt++)); do
        wait_quiet "$sc/$t round $rnd"
        : >"$WORK/noise"
        measure_once "$sc" "$t" "$rnd"
        [ "$sc" = threads ] && return 0   # proxy unpinned: core 0 is its own, no noise check
        noise=$(cat "$WORK/noise")
        [ -n "$noise" ] || return 0
        [ "$noise" -le "$NOISE_MAX" ] && return 0
        if [ "$attempt" -lt "$NOISE_RETRIES" ]; then
            note "$sc/$t round $rnd: other work took ${noise}% of core 0 during the run; redone"
            python3 "$BENCH_PY" drop-last "$RAW"
        else
            note "$sc/$t round $rnd: other work took ${noise}% of core 0 during the run; kept after $NOISE_RETRIES retries (numbers suspect)"
        fi
    done
}

# measure_once SCENARIO TARGET ROUND
measure_once() {
    local sc=$1 t=$2 rnd=$3
    local strat=rr path=/ extra="" hdr=() pid port
    case $sc in
        least_conn) strat=least_conn ;;
        1k) path=/1k ;;
        64k) path=/64k ;;
        race) extra=race; hdr=(-H "App-Name: race") ;;
        threads) ;;   # as rr; run_threads sets THREADS=2 and unpins the proxy
        https_new) hdr=(-H "Connection: close") ;;
        # a hit of /1k; target switchyard_nocache: the same object, pool `web` (no cache)
        cache) path=/1k; extra=cache; if [ "$t" = switchyard ]; then hdr=(-H "App-Name: cache"); fi ;;
    esac
    local scheme=http tls=0
    case $sc in https|https_new|h2) scheme=https; tls=1 ;; esac
    if [ "$t" = direct ]; then
        pid=${BE_PIDS[0]}; port=${BE_PORTS[0]}
    else
        start_proxy "$t" "$strat" $extra
        pid=$PROXY_PID; port=$PROXY_PORT
        if [ "$tls" = 1 ]; then
            case $t in nginx) port=$NGINX_TLS_PORT ;; haproxy) port=$HAPROXY_TLS_PORT ;; switchyard) port=$SY_TLS_PORT ;; esac
        fi
    fi
    # TLS: the certificate names localhost; curl checks nothing (-k)
    local host=127.0.0.1; [ "$tls" = 1 ] && host=localhost
    local url="$scheme://$host:$port$path"
    local curl_tls=(); [ "$tls" = 1 ] && curl_tls=(-k)
    local ylog_before=0
    if [[ "$t" == switchyard* ]]; then ylog_before=$(cat "$PROXY_LOG" 2>/dev/null | wc -l); fi
    if ! wait_http "$url" "${curl_tls[@]}" "${hdr[@]}"; then
        note "$sc/$t round $rnd: $t did not answer 200 on $url within 15 s; run skipped ($(tail -n 3 "${PROXY_LOG:-/dev/null}" 2>/dev/null | tr '\n' ' '))"
        [ "$t" != direct ] && stop_proxy "$t" "$pid"
        return 0
    fi
    local want_len=3; [ "$path" = /1k ] && want_len=1024; [ "$path" = /64k ] && want_len=65536
    local got_len
    got_len=$(curl -s --max-time 2 "${curl_tls[@]}" "${hdr[@]}" "$url" | wc -c)
    [ "$got_len" = "$want_len" ] || note "$sc/$t round $rnd: body was $got_len bytes, expected $want_len"
    if [ "$sc" = cache ] && [ "$t" != switchyard_nocache ]; then
        # the object is stored by now: the next answer must be a hit
        curl -s -o /dev/null -D "$WORK/cache-head" --max-time 2 "${hdr[@]}" "$url" || true
        grep -qiE '^(cache-status: switchyard; hit|x-cache-status: HIT)' "$WORK/cache-head" \
            || note "cache/$t round $rnd: not a cache hit: $(tr '\r\n' '  ' <"$WORK/cache-head" | head -c 300)"
    fi

    # load: wrk (HTTP/1.1), or h2load (HTTP/2, one stream per connection at a time)
    local load=(wrk -t1 -c$CONNS) run_args=(--latency) warm_args=()
    if [ "$sc" = h2 ]; then
        load=(h2load -t1 -c$CONNS -m1); run_args=(-D "$DURATION"); warm_args=(-D "$WARMUP")
    else
        run_args+=(-d"${DURATION}s"); warm_args=(-d"${WARMUP}s")
    fi
    timeout $((WARMUP + 30)) taskset -c "$LOAD_CPU" "${load[@]}" "${warm_args[@]}" "${hdr[@]}" "$url" >/dev/null 2>&1 || true
    local tb hb ta ha cb ca be_before be_after out="$WORK/wrk/$sc-$t-r$rnd.txt"
    read -r tb hb _ _ cb < <(python3 "$BENCH_PY" stat "$pid")
    be_before=$(backend_counts)
    local race_before="" race_after=""
    [ "$sc" = race ] && race_before=$(race_winners)
    timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" "${load[@]}" "${run_args[@]}" "${hdr[@]}" "$url" >"$out" 2>&1 || true
    read -r ta ha _ _ ca < <(python3 "$BENCH_PY" stat "$pid")
    be_after=$(backend_counts)
    [ "$sc" = race ] && race_after=$(race_winners)
    if ! grep -qE 'requests in|^finished in' "$out"; then
        note "$sc/$t round $rnd: ${load[0]} produced no result: $(tr '\n' ' ' <"$out" | head -c 300)"
    else
        python3 "$BENCH_PY" record --raw "$RAW" --wrk "$out" --scenario "$sc" --target "$t" --round "$rnd" \
            --ticks-before "$tb" --ticks-after "$ta" --hwm-kb "$ha" \
            --cores-before "$cb" --cores-after "$ca" \
            --backends-before "$be_before" --backends-after "$be_after" --noise-out "$WORK/noise" \
            --race-before "$race_before" --race-after "$race_after" >&2
    fi
    if [[ "$t" == switchyard* ]]; then
        # "Fail to proxy: Downstream ConnectionClosed/WriteError" lines come
        # from wrk closing its connections with requests in flight when a run
        # (warm-up or measured) ends; anything else is worth a look.
        local errs down other
        errs=$(tail -n +$((ylog_before + 1)) "$PROXY_LOG" | grep -E ' (ERROR|WARN) ' || true)
        down=$(printf '%s\n' "$errs" | grep -c 'Fail to proxy: Downstream' || true)
        other=$(printf '%s\n' "$errs" | grep -v 'Fail to proxy: Downstream' | grep -c . || true)
        SY_LOG_DOWN=$((SY_LOG_DOWN + down))
        if [ "$other" -gt 0 ]; then
            note "$sc/$t round $rnd: $other ERROR/WARN log lines besides client disconnects, first: $(printf '%s\n' "$errs" | grep -v 'Fail to proxy: Downstream' | head -n 1 | cut -c1-300)"
        fi
    fi
    if [ "$t" != direct ]; then
        alive "$pid" || note "$sc/$t round $rnd: $t (pid $pid) had exited before the end of the run"
        stop_proxy "$t" "$pid"
    fi
}

# ------------------------------------------------------------------ idle connections
run_idle() {
    local lo hi span t
    read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range
    span=$((hi - lo + 1))
    if [ "$span" -lt $((IDLE_CONNS + 1000)) ]; then
        note "idle: skipped, net.ipv4.ip_local_port_range $lo-$hi has $span ports, need $((IDLE_CONNS + 1000)) (widen it with sysctl)"
        return 0
    fi
    if [ "$NOFILE" -lt $((IDLE_CONNS + 1000)) ]; then
        note "idle: skipped, ulimit -n is $NOFILE, need $((IDLE_CONNS + 1000))"
        return 0
    fi
    for t in nginx haproxy pingora switchyard; do
        [ -n "${TARGETS:-}" ] && [[ " $TARGETS " != *" $t "* ]] && continue
        [ "$t" = pingora ] && [ "$PF_OK" = 0 ] && continue
        wait_quiet "idle/$t"
        log "idle: $t, $IDLE_CONNS connections held ${IDLE_HOLD}s"
        start_proxy "$t" rr
        if ! wait_http "http://127.0.0.1:$PROXY_PORT/"; then
            note "idle/$t: did not start"; stop_proxy "$t" "$PROXY_PID"; continue
        fi
        sleep 1
        if ! timeout $((IDLE_HOLD + 200)) taskset -c "$LOAD_CPU" python3 "$HERE/idle_conns.py" --port "$PROXY_PORT" \
                --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" --pid "$PROXY_PID" --target "$t" >>"$IDLE_RAW" 2>"$WORK/idle-$t.err"; then
            note "idle/$t: client failed: $(head -c 300 "$WORK/idle-$t.err")"
        fi
        alive "$PROXY_PID" || note "idle/$t: $t (pid $PROXY_PID) exited during the idle test"
        stop_proxy "$t" "$PROXY_PID"
        sleep 1
    done
}

# ------------------------------------------------------------------ race: winners
# race_winners: "w0 w1 w2 reused cut": answers of pool race served by each
# backend (switchyard_requests_total, i.e. races won) and the losers pooled
# or cut so far (switchyard_race_losers_total), from the admin API
race_winners() {
    curl -s --max-time 2 "http://127.0.0.1:$SY_ADMIN_PORT/metrics" | awk -v p0="${BE_PORTS[0]}" -v p1="${BE_PORTS[1]}" -v p2="${BE_PORTS[2]}" '
        /^switchyard_requests_total\{pool="race",backend="[^"]+"/ {
            for (i = 0; i < 3; i++) { p = (i == 0 ? p0 : i == 1 ? p1 : p2); if (index($0, ":" p "\"")) w[i] += $NF }
        }
        /^switchyard_race_losers_total\{pool="race",result="reused"/ { reused = $NF }
        /^switchyard_race_losers_total\{pool="race",result="cut"/ { cut = $NF }
        END { printf "%d %d %d %d %d\n", w[0], w[1], w[2], reused, cut }'
}

# ------------------------------------------------------------------ threads: 2 per proxy
# run_threads: switchyard (work stealing on, and off = target switchyard_nows)
# with `threads: 2`, HAProxy `nbthread 2`, nginx `worker_processes 2`; the
# proxy is not pinned (both cores, shared with wrk and the backends)
run_threads() {
    local targets=(nginx haproxy switchyard switchyard_nows) keep=() n r k
    if [ -n "${TARGETS:-}" ]; then
        for t in "${targets[@]}"; do [[ " $TARGETS " == *" ${t%_nows} "* ]] && keep+=("$t"); done
        targets=("${keep[@]}")
        [ ${#targets[@]} -gt 0 ] || return 0
    fi
    log "scenario threads: ${targets[*]}, $ROUNDS round(s) of ${DURATION}s, 2 threads, proxy unpinned"
    THREADS=2; export NGX_WORKERS=2; PROXY_CPUS=0,1
    n=${#targets[@]}
    for ((r = 0; r < ROUNDS; r++)); do
        for ((k = 0; k < n; k++)); do
            run_target threads "${targets[$(((k + r) % n))]}" $((r + 1))
        done
    done
    THREADS=1; unset NGX_WORKERS; PROXY_CPUS=$PROXY_CPU
}

# ------------------------------------------------------------------ rate: open loop
# run_rate: oha at a fixed rate, 50 % and 80 % of HAProxy's rr req/s in this
# run (measured now when the rr scenario did not run), then 50 % of each
# proxy's own rr req/s (skipped for a proxy without one), latency corrected for
# coordinated omission; nginx, HAProxy, the pingora floor and switchyard, and
# `direct` (oha to one backend, no proxy: the method's own tail at that rate)
RATE_RAW="$WORK/rate.jsonl"; : >"$RATE_RAW"
OPENLOOP_PY="$HERE/openloop.py"
run_rate() {
    local max level rate targets=(direct nginx haproxy pingora switchyard) keep=() n r k t
    [ "$PF_OK" = 0 ] && targets=(direct nginx haproxy switchyard)
    if [ -n "${TARGETS:-}" ]; then
        for t in "${targets[@]}"; do [[ " $TARGETS " == *" $t "* ]] && keep+=("$t"); done
        targets=("${keep[@]}")
        [ ${#targets[@]} -gt 0 ] || return 0
    fi
    max=$(python3 "$OPENLOOP_PY" max "$RAW" haproxy)
    if [ -z "$max" ]; then
        log "rate: no rr figure for HAProxy in this run; measuring its maximum now"
        run_target rr haproxy 1
        max=$(python3 "$OPENLOOP_PY" max "$RAW" haproxy)
    fi
    [ -n "$max" ] || { note "rate: skipped, no maximum req/s for HAProxy"; return 0; }
    log "scenario rate: ${targets[*]} at 50 % and 80 % of HAProxy's $max req/s, $ROUNDS round(s) of ${DURATION}s"
    n=${#targets[@]}
    for level in 50 80; do
        rate=$((max * level / 100))
        for ((r = 0; r < ROUNDS; r++)); do
            for ((k = 0; k < n; k++)); do
                t=${targets[$(((k + r) % n))]}
                wait_quiet "rate/$t $level% round $((r + 1))"
                rate_once "$t" "$level" "$rate" $((r + 1))
            done
        done
    done
    # the same relative load for every proxy: half of its own rr maximum
    local own
    for ((r = 0; r < ROUNDS; r++)); do
        for ((k = 0; k < n; k++)); do
            t=${targets[$(((k + r) % n))]}
            own=$(python3 "$OPENLOOP_PY" max "$RAW" "$t")
            if [ -z "$own" ]; then
                [ "$r" = 0 ] && note "rate/$t 50 % of own max: skipped, no rr figure for $t in this run"
                continue
            fi
            wait_quiet "rate/$t 50% of own max round $((r + 1))"
            rate_once "$t" own50 $((own * 50 / 100)) $((r + 1))
        done
    done
}

# rate_once TARGET LEVEL RATE ROUND
rate_once() {
    local t=$1 level=$2 rate=$3 rnd=$4 tb ta out="$WORK/wrk/rate$2-$1-r$4.json"
    if [ "$t" = direct ]; then
        # one backend, no proxy: the tail of oha and a backend sharing core 1
        PROXY_PID=${BE_PIDS[0]}; PROXY_PORT=${BE_PORTS[0]}
    else
        start_proxy "$t" rr
    fi
    local url="http://127.0.0.1:$PROXY_PORT/"
    if ! wait_http "$url"; then
        note "rate/$t $level% round $rnd: did not answer 200; run skipped"
        [ "$t" != direct ] && stop_proxy "$t" "$PROXY_PID"
        return 0
    fi
    timeout $((WARMUP + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c$CONNS -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true
    read -r tb _ < <(python3 "$BENCH_PY" stat "$PROXY_PID")
    timeout $((DURATION + 60)) taskset -c "$LOAD_CPU" oha -z "${DURATION}s" -w -q "$rate" -c $CONNS --latency-correction \
        --no-tui --output-format json "$url" >"$out" 2>"$out.err" || true
    read -r ta _ < <(python3 "$BENCH_PY" stat "$PROXY_PID")
    python3 "$OPENLOOP_PY" record --raw "$RATE_RAW" --oha "$out" --target "$t" --level "$level" --rate "$rate" \
        --round "$rnd" --ticks-before "$tb" --ticks-after "$ta" >&2
    alive "$PROXY_PID" || note "rate/$t $level% round $rnd: $t had exited before the end of the run"
    [ "$t" != direct ] && stop_proxy "$t" "$PROXY_PID"
    return 0
}

# ------------------------------------------------------------------ main
busy=$(machine_busy)
log "machine busy before start: ${busy}% of all CPUs"

for sc in $SCENARIOS; do
    case $sc in
        rr|1k|64k)
            targets=(direct nginx haproxy pingora switchyard)
            [ "$sc" = rr ] && targets=(direct nginx haproxy pingora pingora_spec switchyard)
            [ "$PF_OK" = 0 ] && targets=(direct nginx haproxy switchyard) ;;
        least_conn|https|https_new|h2) targets=(nginx haproxy switchyard) ;;
        race)
            f=$(write_switchyard rr race)
            if ! out=$("$SY_BIN" -t -c "$f" 2>&1); then
                note "race: skipped, switchyard -t rejects a pool with 'race: {}': $(echo "$out" | tr '\n' ' ' | cut -c1-300)"
                continue
            fi
            targets=(switchyard) ;;
        cache) targets=(nginx switchyard_nocache switchyard) ;;
        idle) run_idle; continue ;;
        threads) run_threads; continue ;;
        rate) run_rate; continue ;;
        instructions)
            # callgrind's instruction counts: see tests/bench/instructions.sh
            log "scenario instructions: pingora floor and switchyard under callgrind"
            SWITCHYARD_BIN="$SY_BIN" PINGORA_FLOOR_BIN="$PF_BIN" \
                bash "$HERE/instructions.sh" >"$WORK/instructions.md" ||
                note "instructions: failed (see the log above)"
            continue ;;
    esac
    if [ -n "${TARGETS:-}" ]; then   # e.g. TARGETS=switchyard for a quick A/B of two builds
        keep=()
        for t in "${targets[@]}"; do [[ " $TARGETS " == *" $t "* ]] && keep+=("$t"); done
        targets=("${keep[@]}")
        [ ${#targets[@]} -gt 0 ] || continue
    fi
    log "scenario $sc: ${targets[*]}, $ROUNDS round(s) of ${DURATION}s"
    n=${#targets[@]}
    for ((r = 0; r < ROUNDS; r++)); do
        for ((k = 0; k < n; k++)); do
            run_target "$sc" "${targets[$(((k + r) % n))]}" $((r + 1))
        done
    done
done

[ "$SY_LOG_DOWN" -gt 0 ] && note "switchyard logged $SY_LOG_DOWN 'Fail to proxy: Downstream ConnectionClosed/WriteError' errors in all; they come from wrk closing its connections with requests in flight at the end of each warm-up and measured run (at most $CONNS per wrk run), not from failed requests"

# ------------------------------------------------------------------ report
versions="$(wrk -v 2>&1 | head -n 1 | awk '{print $1, $2}'), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v 2>&1 | head -n 1 | awk '{print "HAProxy", $3}'), $(openssl version | awk '{print $1, $2}')"
if command -v h2load >/dev/null; then versions="$versions, $(h2load --version 2>&1 | head -n 1)"; fi
if command -v oha >/dev/null; then versions="$versions, $(oha --version 2>&1 | head -n 1)"; fi
PF_DESC="not found ($PF_BIN)"; [ "$PF_OK" = 1 ] && PF_DESC="$PF_BIN"
BENCH_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC') BENCH_CMD="$CMD" BENCH_REV="$SY_REV" BENCH_VERSIONS="$versions" \
BENCH_PF="$PF_DESC" \
BENCH_ROUNDS="$ROUNDS" BENCH_DURATION="$DURATION" BENCH_WARMUP="$WARMUP" BENCH_SCENARIOS="$SCENARIOS" \
python3 - "$WORK/meta.json" <<'EOF'
import json, os, platform, re, sys
cpu = "unknown"
with open("/proc/cpuinfo") as f:
    m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
    if m:
        cpu = m.group(1).strip()
e = os.environ
json.dump({
    "date": e["BENCH_DATE"], "nproc": os.cpu_count(), "cpu_model": cpu,
    "kernel": platform.release(), "command": e["BENCH_CMD"],
    "switchyard_rev": e["BENCH_REV"], "pingora_floor": e["BENCH_PF"], "versions": e["BENCH_VERSIONS"],
    "rounds": int(e["BENCH_ROUNDS"]), "duration": int(e["BENCH_DURATION"]),
    "warmup": int(e["BENCH_WARMUP"]), "scenarios": e["BENCH_SCENARIOS"].split(),
    "connections": 64, "clk_tck": os.sysconf("SC_CLK_TCK"),
}, open(sys.argv[1], "w"), indent=2)
EOF
mkdir -p "$RESULTS"
python3 "$BENCH_PY" report --raw "$RAW" --meta "$WORK/meta.json" --idle "$IDLE_RAW" --notes "$NOTES" --rate "$RATE_RAW" \
    --md "$RESULTS/${RESULTS_NAME:-latest}.md" --json "$RESULTS/${RESULTS_NAME:-latest}.json"
if [ -s "$WORK/instructions.md" ]; then
    printf '\n' >>"$RESULTS/${RESULTS_NAME:-latest}.md"
    cat "$WORK/instructions.md" >>"$RESULTS/${RESULTS_NAME:-latest}.md"
fi
log "written: $RESULTS/${RESULTS_NAME:-latest}.md, $RESULTS/${RESULTS_NAME:-latest}.json"
