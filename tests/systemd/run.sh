#!/usr/bin/env bash
# tests/systemd/run.sh — `make test-systemd`: deploy/switchyard.service and
# deploy/upgrade.sh under a real systemd, installed by `make install`.
#
#   make build && sudo make test-systemd      # or: sudo tests/systemd/run.sh
#
# Boots Debian bookworm's systemd in a systemd-nspawn container that shares
# the host's network (loopback included), installs switchyard into it with
# `make install DESTDIR=<container root>`, and checks from the host, with
# switchyard-echo backends on 127.0.0.1 and continuous load (fresh and
# keep-alive curl clients):
#   - start: the unit is active, its process runs as a non-root user with
#     CAP_NET_BIND_SERVICE only, and serves on a port below 1024;
#   - three `systemctl reload` (binary upgrades): the first as is, the second
#     after installing a changed binary (the new process runs it), the third
#     with a new listener on another port below 1024; each time MainPID moves
#     to the new process and the old one exits;
#   - a reload whose new binary dies at start fails, and the old process keeps
#     serving with the unit active (Restart= does not interfere);
#   - `systemctl kill -s HUP` with a backend added to the pool;
#   - admin changes (state file) and the access log are written despite the
#     read-only file system;
#   - `systemctl stop` with a request in flight for 1 s: it completes;
#   - zero failed requests, and `systemd-analyze security` at most 3.0.
#
# Needs root, systemd-nspawn and debootstrap (installed with apt-get when
# missing) and curl. The root file system is built once (debootstrap, from the
# Debian mirror in /etc/apt) and cached in SWITCHYARD_TEST_ROOTFS
# [/var/lib/machines/switchyard-bookworm]; each run boots a fresh copy of it
# (switchyard-run.* beside it), removed afterwards. Every process started
# here is stopped by PID. A machine that cannot boot the container makes the
# test FAIL, never pass.
#
# Environment: RELEASE_DIR [target/release], SWITCHYARD_TEST_ROOTFS,
# SWITCHYARD_TEST_MIRROR (default: from /etc/apt), KEEP_TMP=1 keeps the work
# directory (logs, journal) even on success.
# shellcheck disable=SC2015 # `A && B || fail ...` means: fail unless both hold
set -Eeuo pipefail
trap 'printf "\nsystemd-test: FAIL: line %s: %s exited with %s\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

CACHE=${SWITCHYARD_TEST_ROOTFS:-/var/lib/machines/switchyard-bookworm}
RELEASE_DIR=${RELEASE_DIR:-target/release}
MAX_EXPOSURE=3.0
GRACE=2 # grace_period_seconds of the test config; a retiring process exits ~5 s + GRACE after SIGQUIT

WORK=""
ROOT=""
NSPAWN=""
PID1=""
BACKENDS=() # host processes started here: switchyard-echo backends
CLIENTS=()  # and load clients (subshells running curl)
FAILED=1

log() { printf '%s systemd-test: %s\n' "$(date +%T)" "$*"; }
fail() {
    printf '\nsystemd-test: FAIL: %s\n' "$*" >&2
    exit 1
}

# --- cleanup: everything by PID ------------------------------------------------
cleanup() {
    local rc=$?
    trap - ERR
    set +e
    # clients stop by themselves after their current request; then by PID
    [ -n "$WORK" ] && touch "$WORK/stop-load"
    for _ in $(seq 1 50); do
        running=""
        for p in "${CLIENTS[@]}"; do kill -0 "$p" 2>/dev/null && running=yes; done
        [ -z "$running" ] && break
        sleep 0.1
    done
    for p in "${CLIENTS[@]}"; do
        pkill -TERM -P "$p" 2>/dev/null # its curl, by parent PID
        kill "$p" 2>/dev/null
    done
    for p in "${BACKENDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${CLIENTS[@]}" "${BACKENDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ -n "$PID1" ] && kill -0 "$PID1" 2>/dev/null; then
        nsenter -t "$PID1" -a journalctl --no-pager -u switchyard >"$WORK/journal.txt" 2>&1
        nsenter -t "$PID1" -a systemctl poweroff >/dev/null 2>&1
    fi
    if [ -n "$NSPAWN" ]; then
        for _ in $(seq 1 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$NSPAWN" 2>/dev/null; then
            kill -TERM "$NSPAWN" 2>/dev/null
            for _ in $(seq 1 50); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$NSPAWN" 2>/dev/null
        fi
        wait "$NSPAWN" 2>/dev/null
    fi
    case $ROOT in
    */switchyard-run.*) rm -rf --one-file-system "$ROOT" ;;
    esac
    if [ -n "$WORK" ]; then
        if [ "$FAILED" = 1 ] || [ "${KEEP_TMP:-0}" = 1 ]; then
            [ -s "$WORK/journal.txt" ] && { echo "--- journal of switchyard.service (last 40 lines):" >&2; tail -40 "$WORK/journal.txt" >&2; }
            echo "systemd-test: logs kept in $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites -------------------------------------------------------------
[ "$(id -u)" = 0 ] || fail "must run as root (systemd-nspawn, debootstrap, nsenter): sudo make test-systemd"
for b in switchyard switchyard-echo; do
    [ -x "$RELEASE_DIR/$b" ] || fail "$RELEASE_DIR/$b not found; run 'make build' first"
done
command -v curl >/dev/null || fail "curl is needed on the host"
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing debootstrap and systemd-container"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap systemd-container; } >/dev/null ||
        fail "could not install debootstrap and systemd-container with apt-get"
fi
WORK=$(mktemp -d /tmp/switchyard-systemd-test.XXXXXX)

debian_mirror() {
    if [ -n "${SWITCHYARD_TEST_MIRROR:-}" ]; then echo "$SWITCHYARD_TEST_MIRROR"; return; fi
    local m
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -z "$m" ] && m=$(awk '$1 == "deb" && $2 ~ /debian/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${m:-http://deb.debian.org/debian}"
}

# --- root file system (cached) -------------------------------------------------
mkdir -p "$(dirname "$CACHE")"
exec 9>"$CACHE.lock"
flock 9 # one build at a time; concurrent runs wait for it
if [ ! -e "$CACHE/.switchyard-rootfs" ]; then
    mirror=$(debian_mirror)
    log "building the bookworm root file system in $CACHE from $mirror (once; later runs reuse it)"
    rm -rf --one-file-system "$CACHE.partial"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$CACHE.partial" "$mirror" \
        >"$WORK/debootstrap.log" 2>&1 || fail "debootstrap failed: $(tail -3 "$WORK/debootstrap.log")"
    touch "$CACHE.partial/.switchyard-rootfs"
    rm -rf --one-file-system "$CACHE"
    mv "$CACHE.partial" "$CACHE"
fi
ROOT=$(mktemp -d "$(dirname "$CACHE")/switchyard-run.XXXXXX")
chmod 0755 "$ROOT"
cp -a "$CACHE/." "$ROOT/"
exec 9>&-

# --- install into the container root -------------------------------------------
log "make install DESTDIR=$ROOT"
make -s install DESTDIR="$ROOT" RELEASE_DIR="$RELEASE_DIR" >"$WORK/install-1.log" 2>&1 ||
    fail "make install failed: $(cat "$WORK/install-1.log")"
CONF="$ROOT/etc/switchyard/switchyard.yaml"
cmp -s deploy/switchyard.yaml "$CONF" || fail "make install did not install deploy/switchyard.yaml as $CONF"
# -t opens the access log as a start would (nginx -t does too); its directory
# is systemd's LogsDirectory=, made at service start: check a copy logging here
mkdir -p "$WORK/logs"
sed "s#/var/log/switchyard#$WORK/logs#g" "$CONF" >"$WORK/shipped-check.yaml"
"$ROOT/usr/local/bin/switchyard" -t -c "$WORK/shipped-check.yaml" >/dev/null 2>"$WORK/shipped-conf.log" ||
    fail "the shipped deploy/switchyard.yaml is invalid: $(cat "$WORK/shipped-conf.log")"

# --- backends on the host --------------------------------------------------------
# starts switchyard-echo on an OS-chosen port; prints the port
start_echo() {
    local name=$1 out="$WORK/echo-$1.log" addr
    "$RELEASE_DIR/switchyard-echo" --listen 127.0.0.1:0 --name "$name" >"$out" 2>&1 &
    BACKENDS+=($!)
    for _ in $(seq 1 100); do
        addr=$(sed -n 's/^listening on //p' "$out" 2>/dev/null || true)
        if [ -n "$addr" ]; then echo "${addr##*:}"; return; fi
        sleep 0.05
    done
    fail "switchyard-echo $name did not start: $(cat "$out")"
}
start_echo b1 >"$WORK/port-b1"
start_echo b2 >"$WORK/port-b2"
start_echo b3 >"$WORK/port-b3"
start_echo b4 >"$WORK/port-b4"
B1=$(cat "$WORK/port-b1") B2=$(cat "$WORK/port-b2") B3=$(cat "$WORK/port-b3") B4=$(cat "$WORK/port-b4")

# switchyard's own ports: two below 1024 (CAP_NET_BIND_SERVICE) and the admin one
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
CHOSEN=" "
pick_port() { # $1: variable to set, $2-$3: range
    local p
    for _ in $(seq 1 500); do
        p=$(($2 + RANDOM % ($3 - $2)))
        case $CHOSEN in *" $p "*) continue ;; esac
        if port_free "$p"; then
            CHOSEN="$CHOSEN$p "
            printf -v "$1" %s "$p"
            return
        fi
    done
    fail "no free port in $2-$3"
}
pick_port LOW 600 1000
pick_port LOW2 600 1000
pick_port ADMIN 20000 30000

# the test configuration: the shipped file's server, admin and log paths, our ports and backends
write_conf() { # $1: extra listener (yes/no), $2: backends of pool web
    {
        cat <<YAML
server:
  threads: 2
  pid_file: /run/switchyard/switchyard.pid
  upgrade_sock: /run/switchyard/upgrade.sock
  error_log: null
  grace_period_seconds: $GRACE
  graceful_shutdown_timeout_seconds: 2
listen:
  - addr: 127.0.0.1:$LOW
YAML
        [ "$1" = yes ] && echo "  - addr: 127.0.0.1:$LOW2"
        cat <<YAML
routing:
  default_pool: web
pools:
  web:
    backends:
YAML
        for port in $2; do echo "      - url: http://127.0.0.1:$port"; done
        cat <<YAML
    health_check: { type: http, path: /health, interval: 1s }
admin:
  listen: 127.0.0.1:$ADMIN
  token_env: SWITCHYARD_ADMIN_TOKEN
  state_file: /var/lib/switchyard/state.json
log:
  access: /var/log/switchyard/access.log
YAML
    } >"$CONF.new"
    mv "$CONF.new" "$CONF"
}
write_conf no "$B1 $B2"

# the admin token, in the root-only environment file the unit reads (README)
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
install -m 0600 /dev/null "$ROOT/etc/switchyard/env"
printf 'SWITCHYARD_ADMIN_TOKEN=%s\n' "$TOKEN" >"$ROOT/etc/switchyard/env"
admin() { # $1: path, then curl arguments
    local path=$1
    shift
    curl -s --max-time 2 -H "Authorization: Bearer $TOKEN" "$@" "http://127.0.0.1:$ADMIN$path"
}

# --- boot systemd ----------------------------------------------------------------
log "booting systemd in $ROOT"
(cd / && exec systemd-nspawn -q -D "$ROOT" --register=no --keep-unit --machine=switchyard-test \
    --boot --console=passive) </dev/null >"$WORK/nspawn.log" 2>&1 &
NSPAWN=$!
cannot_boot() {
    fail "cannot boot a systemd container on this machine ($1). systemd-nspawn says: $(tail -5 "$WORK/nspawn.log" | tr '\n' ' ')
The systemd test needs root with the privileges to create namespaces and mounts (a VM or a privileged container)."
}
state=""
for _ in $(seq 1 300); do
    kill -0 "$NSPAWN" 2>/dev/null || cannot_boot "systemd-nspawn exited"
    if [ -z "$PID1" ]; then PID1=$(pgrep -P "$NSPAWN" -x systemd | head -1 || true); fi
    if [ -n "$PID1" ]; then
        state=$(nsenter -t "$PID1" -a systemctl is-system-running 2>/dev/null || true)
        case $state in running | degraded) break ;; esac
    fi
    sleep 0.2
done
case $state in running | degraded) ;; *) cannot_boot "system state '${state:-none}' after 60 s" ;; esac
log "systemd $(nsenter -t "$PID1" -a systemctl --version | head -1 | awk '{print $2}') is up (PID 1 = host PID $PID1, state $state)"

# runs a command inside the container
in_ct() { nsenter -t "$PID1" -a "$@"; }
main_pid() { in_ct systemctl show -p MainPID --value switchyard.service; }
unit_state() { in_ct systemctl is-active switchyard.service || true; }
alive() { in_ct test -d "/proc/$1"; }
exe_sum() { in_ct sha256sum "/proc/$1/exe" | cut -d' ' -f1; }
journal_tail() { in_ct journalctl --no-pager -n 30 -u switchyard.service 2>&1 || true; }

URL="http://127.0.0.1:$LOW"
wait_serving() { # $1: url
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1/" || true)" = 200 ] && return 0
        sleep 0.1
    done
    fail "nothing serves $1: $(journal_tail)"
}

# --- start -----------------------------------------------------------------------
log "systemctl enable --now switchyard"
in_ct systemctl daemon-reload
in_ct systemctl enable --now switchyard.service >"$WORK/start.log" 2>&1 ||
    fail "systemctl start failed: $(cat "$WORK/start.log") $(journal_tail)"
[ "$(unit_state)" = active ] || fail "unit is $(unit_state) after start"
wait_serving "$URL"
pid=$(main_pid)
[ "$pid" -gt 1 ] || fail "no MainPID after start"
[ "$(in_ct cat /run/switchyard/switchyard.pid)" = "$pid" ] || fail "pid file does not hold MainPID $pid"
status=$(in_ct cat "/proc/$pid/status")
uid=$(awk '/^Uid:/ {print $2}' <<<"$status")
[ "$uid" != 0 ] || fail "switchyard runs as root"
for cap in CapEff CapPrm CapBnd CapAmb; do
    v=$(awk -v c="$cap:" '$1 == c {print $2}' <<<"$status")
    [ "$v" = 0000000000000400 ] || fail "$cap of the service is $v, not CAP_NET_BIND_SERVICE (0x400) only"
done
log "active: MainPID $pid, uid $uid, capabilities CAP_NET_BIND_SERVICE only, serving on port $LOW"
score=$(in_ct systemd-analyze security switchyard.service --no-pager 2>&1 |
    sed -n 's/.*Overall exposure level for switchyard.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "systemd-analyze security printed no exposure level"
awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN {exit !(s <= m)}' ||
    fail "systemd-analyze security rates the unit $score, above $MAX_EXPOSURE"
log "systemd-analyze security: exposure $score (at most $MAX_EXPOSURE)"

# an admin change, kept in the state file under StateDirectory=
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN/status" || true)
[ "$code" = 401 ] || fail "admin /status without the token answered $code, not 401"
code=$(admin /backends -o "$WORK/admin-post.json" -w '%{http_code}' -X POST \
    -d "{\"pool\":\"web\",\"url\":\"http://127.0.0.1:$B3\"}" || true)
[ "$code" = 201 ] || fail "admin POST /backends answered $code: $(cat "$WORK/admin-post.json")"
in_ct grep -q "127.0.0.1:$B3" /var/lib/switchyard/state.json || fail "the admin change is not in /var/lib/switchyard/state.json"

# --- continuous load from the host ---------------------------------------------------
# Each client appends one line per request, "<status> <new connections>", to
# its own file; a failed curl run adds a "curl-exit-N" line. Bounded by count and time.
fresh_client() {
    local n=0 r deadline=$((SECONDS + 600))
    while [ ! -e "$WORK/stop-load" ] && [ $n -lt 50000 ] && [ $SECONDS -lt $deadline ]; do
        r=$(curl -s -o /dev/null -w '%{http_code} %{num_connects}' --max-time 10 "$URL/fresh") || r="$r curl-exit-$?"
        echo "$r" >>"$1"
        n=$((n + 1))
    done
}
keepalive_client() { # 25 requests per connection
    local n=0 rc out args=() deadline=$((SECONDS + 600))
    for _ in $(seq 1 25); do args+=(-o /dev/null "$URL/keepalive"); done
    while [ ! -e "$WORK/stop-load" ] && [ $n -lt 5000 ] && [ $SECONDS -lt $deadline ]; do
        rc=0
        out=$(curl -s --max-time 30 -w '%{http_code} %{num_connects}\n' "${args[@]}") || rc=$?
        printf '%s\n' "$out" >>"$1"
        [ $rc = 0 ] || echo "batch curl-exit-$rc" >>"$1"
        n=$((n + 1))
    done
}
load_count() { { cat "$WORK"/load-* 2>/dev/null || true; } | wc -l; }
check_load() { # no request has failed so far; $1: the last step
    local bad
    bad=$({ cat "$WORK"/load-* 2>/dev/null || true; } | grep -vc '^200 [01]$' || true)
    [ "$bad" = 0 ] || fail "$bad requests failed by the end of step '$1': $(cat "$WORK"/load-* |
        grep -v '^200 [01]$' | sort | uniq -c | head -5 | tr '\n' ';')"
}
load_flows() { # load continues after $1 requests were counted
    local target=$(($1 + 50))
    for _ in $(seq 1 200); do
        [ "$(load_count)" -ge $target ] && return 0
        sleep 0.1
    done
    fail "the load stalled (fewer than 50 requests in 20 s)"
}
LOAD=()
fresh_client "$WORK/load-fresh-1" &
LOAD+=($!)
fresh_client "$WORK/load-fresh-2" &
LOAD+=($!)
keepalive_client "$WORK/load-keepalive-1" &
LOAD+=($!)
keepalive_client "$WORK/load-keepalive-2" &
LOAD+=($!)
CLIENTS+=("${LOAD[@]}")
load_flows 0
log "load running: 2 fresh-connection and 2 keep-alive curl clients on $URL"

# --- binary upgrades: systemctl reload ------------------------------------------------
wait_gone() {
    for _ in $(seq 1 300); do
        alive "$1" || return 0
        sleep 0.1
    done
    fail "the old process $1 is still alive 30 s after the upgrade"
}
NEW_PID=""
upgrade() { # $1: label
    local old new n
    old=$(main_pid)
    n=$(load_count)
    in_ct systemctl reload switchyard.service >"$WORK/reload.log" 2>&1 ||
        fail "systemctl reload ($1) failed: $(cat "$WORK/reload.log") $(journal_tail)"
    new=$(main_pid)
    [ "$new" -gt 1 ] && [ "$new" != "$old" ] || fail "MainPID did not follow the upgrade ($1): $old -> $new"
    [ "$(in_ct cat /run/switchyard/switchyard.pid)" = "$new" ] || fail "pid file does not hold the new MainPID $new"
    wait_gone "$old"
    [ "$(unit_state)" = active ] || fail "unit is $(unit_state) after the upgrade ($1)"
    [ "$(main_pid)" = "$new" ] || fail "MainPID changed again after the old process exited: $(main_pid)"
    load_flows "$n"
    check_load "reload $1"
    NEW_PID=$new
    log "reload ($1): MainPID $old -> $new, $old exited, unit active"
}

upgrade "1/3, same binary"

# a new binary that passes the checks but dies at start: the reload fails,
# the old process keeps serving, the unit stays active
BIN="$ROOT/usr/local/bin/switchyard"
mv "$BIN" "$BIN.real"
cat >"$BIN" <<'SH'
#!/bin/sh
# passes `-t` and `--show`, dies when started
case " $* " in *" -u "*) echo "switchyard: simulated start failure" >&2; exit 2 ;; esac
exec /usr/local/bin/switchyard.real "$@"
SH
chmod 0755 "$BIN"
old=$(main_pid)
n=$(load_count)
if in_ct systemctl reload switchyard.service >"$WORK/reload-bad.log" 2>&1; then
    fail "systemctl reload succeeded although the new binary dies at start"
fi
mv -f "$BIN.real" "$BIN"
# a retired process would exit within ~5 s + grace period: watch that long
for _ in $(seq 1 $(((5 + GRACE + 2) * 4))); do
    [ "$(unit_state)" = active ] || fail "unit is $(unit_state) after a failed reload: $(journal_tail)"
    [ "$(main_pid)" = "$old" ] && alive "$old" || fail "the old process $old did not survive a failed reload: $(journal_tail)"
    sleep 0.25
done
load_flows "$n"
check_load "failed reload"
log "reload with a binary that dies at start: reload failed, $old still serving, unit active"

# a changed binary (different bytes: a trailer after the ELF image), installed with make install
mkdir "$WORK/rebuilt"
cp "$RELEASE_DIR/switchyard" "$RELEASE_DIR/switchyard-echo" "$WORK/rebuilt/"
printf '\nswitchyard systemd test build %s\n' "$(date +%s%N)" >>"$WORK/rebuilt/switchyard"
NEW_SUM=$(sha256sum "$WORK/rebuilt/switchyard" | cut -d' ' -f1)
cp "$CONF" "$WORK/conf.before"
make -s install DESTDIR="$ROOT" RELEASE_DIR="$WORK/rebuilt" >"$WORK/install-2.log" 2>&1 ||
    fail "make install (changed binary) failed: $(cat "$WORK/install-2.log")"
cmp -s "$WORK/conf.before" "$CONF" || fail "make install overwrote the existing $CONF"
[ "$(exe_sum "$(main_pid)")" != "$NEW_SUM" ] || fail "the running process already runs the changed binary"
upgrade "2/3, changed binary"
[ "$(exe_sum "$NEW_PID")" = "$NEW_SUM" ] || fail "after the reload MainPID $NEW_PID does not run the installed binary"
log "MainPID $NEW_PID runs the newly installed binary"

# a new listener, on another port below 1024
write_conf yes "$B1 $B2"
upgrade "3/3, new listener on port $LOW2"
wait_serving "http://127.0.0.1:$LOW2"
admin /status | grep -q "127.0.0.1:$B3" ||
    fail "the admin change (backend $B3) did not survive the upgrades"
log "port $LOW2 serves after the upgrade; the admin change survived three upgrades"

# --- routing reload: systemctl kill -s HUP --------------------------------------------
write_conf yes "$B1 $B2 $B4"
pid=$(main_pid)
in_ct systemctl kill -s HUP switchyard.service
seen=""
for _ in $(seq 1 200); do
    if curl -s --max-time 2 "$URL/hup" | grep -q '"backend":"b4"'; then seen=yes; break; fi
    sleep 0.1
done
[ -n "$seen" ] || fail "backend b4 added to the pool gets no traffic 20 s after SIGHUP: $(journal_tail)"
[ "$(main_pid)" = "$pid" ] && [ "$(unit_state)" = active ] || fail "SIGHUP changed MainPID or the unit state"
check_load "SIGHUP"
log "systemctl kill -s HUP: the new backend takes traffic, MainPID $pid unchanged"

in_ct test -s /var/log/switchyard/access.log || fail "the access log /var/log/switchyard/access.log is empty"
modes=""
for f in /var/log/switchyard /var/log/switchyard/access.log /var/lib/switchyard /var/lib/switchyard/state.json \
    /run/switchyard /run/switchyard/switchyard.pid; do
    mode=$(in_ct stat -L -c %a "$f")
    [ $((8#$mode & 8#007)) = 0 ] || fail "$f has mode $mode: open to other users"
    modes="$modes $f $mode,"
done
log "written as the service user, closed to others:${modes%,}"

# --- load summary ------------------------------------------------------------------------
n=$(load_count)
load_flows "$n"
touch "$WORK/stop-load"
for p in "${LOAD[@]}"; do wait "$p" || true; done
total=$(cat "$WORK"/load-* | wc -l)
ok=$(cat "$WORK"/load-* | grep -c '^200 [01]$' || true)
reused=$(cat "$WORK"/load-keepalive-* | grep -c '^200 0$' || true)
failed=$((total - ok))
if [ "$failed" != 0 ]; then
    grep -v '^200 [01]$' "$WORK"/load-* | sort | uniq -c | head >&2
    fail "$failed of $total requests failed"
fi
[ "$reused" -gt 0 ] || fail "no request reused a keep-alive connection"
log "load: $total requests, 0 failed ($reused on reused keep-alive connections)"

# --- a crash: Restart=on-failure ---------------------------------------------------------
pid=$(main_pid)
in_ct systemctl kill -s KILL switchyard.service
restarted=""
for _ in $(seq 1 100); do
    new=$(main_pid)
    if [ "$new" -gt 1 ] && [ "$new" != "$pid" ] && [ "$(unit_state)" = active ]; then restarted=yes; break; fi
    sleep 0.1
done
[ -n "$restarted" ] || fail "the unit did not restart 10 s after its process was killed: $(journal_tail)"
wait_serving "$URL"
admin /status | grep -q "127.0.0.1:$B3" ||
    fail "the admin change (backend $B3) did not survive the restart"
log "killed with SIGKILL: restarted (MainPID $pid -> $(main_pid)), serving, admin change kept"

# --- systemctl stop with a request in flight ------------------------------------------------
# The request's body arrives in two parts 1.2 s apart (chunked upload from a pipe).
start_ns=$(date +%s%N)
(
    rc=0
    { printf 'first part '; sleep 1.2; printf 'second part'; } |
        curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 30 -T - "$URL/inflight" >"$WORK/inflight.out" 2>&1 || rc=$?
    echo "exit $rc" >>"$WORK/inflight.out"
) &
INFLIGHT=$!
CLIENTS+=("$INFLIGHT")
busy=""
for _ in $(seq 1 100); do
    if admin /status | grep -Eq '"active_connections": ?[1-9]'; then busy=yes; break; fi
    sleep 0.02
done
[ -n "$busy" ] || fail "the in-flight request never reached a backend"
stop_ns=$(date +%s%N)
pid=$(main_pid)
in_ct systemctl stop switchyard.service >"$WORK/stop.log" 2>&1 || fail "systemctl stop failed: $(cat "$WORK/stop.log")"
wait "$INFLIGHT" || true
read -r code secs <"$WORK/inflight.out" || true
[ "$code" = 200 ] && grep -q '^exit 0$' "$WORK/inflight.out" ||
    fail "the request in flight during systemctl stop failed: $(tr '\n' ' ' <"$WORK/inflight.out")"
end_ns=$(awk -v s="$start_ns" -v t="$secs" 'BEGIN {printf "%.0f", s + t * 1e9}')
[ "$stop_ns" -lt "$end_ns" ] || fail "systemctl stop began after the request had completed"
awk -v t="$secs" 'BEGIN {exit !(t >= 1)}' || fail "the request in flight took only ${secs}s"
[ "$(unit_state)" = inactive ] || fail "unit is $(unit_state) after systemctl stop"
[ "$(main_pid)" = 0 ] && ! alive "$pid" || fail "a switchyard process survived systemctl stop"
log "systemctl stop: the ${secs}s request in flight got 200; unit inactive, process $pid gone"

FAILED=0
echo "systemd-test: PASS (systemd, $total requests under load, 0 failed, exposure $score)"
