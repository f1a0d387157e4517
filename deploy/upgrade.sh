#!/usr/bin/env bash
# Graceful binary upgrade of a running switchyard (what `systemctl reload` runs).
#
#   SWITCHYARD_BIN=/usr/local/bin/switchyard SWITCHYARD_CONF=/etc/switchyard/switchyard.yaml \
#     deploy/upgrade.sh
#
# 1. validate the configuration with the new binary (nothing changes if invalid);
# 2. start the new binary with `-u -d`: it loads and checks everything it needs
#    (configuration, admin state, access log, token), then binds server.upgrade_sock
#    and waits there for the listening sockets;
# 3. only once that socket is up and the new process still runs, SIGQUIT the old
#    instance: it hands its listening sockets over, stops accepting, finishes its
#    in-flight requests (grace_period_seconds) and exits;
# 4. the new instance, once it holds the sockets, detaches and writes the pid file.
# Both processes accept on the same sockets during the hand-over: no connection is refused.
# If the new process dies (or does not open the socket within SWITCHYARD_UPGRADE_TIMEOUT
# seconds, default 20) the old instance is not signalled, keeps serving, and this script
# exits 1.
set -euo pipefail

BIN=${SWITCHYARD_BIN:-/usr/local/bin/switchyard}
CONF=${SWITCHYARD_CONF:-/etc/switchyard/switchyard.yaml}
TIMEOUT=${SWITCHYARD_UPGRADE_TIMEOUT:-20}

"$BIN" -t -c "$CONF" >/dev/null
PIDFILE=$("$BIN" -c "$CONF" --show pid_file)
SOCK=$("$BIN" -c "$CONF" --show upgrade_sock)

old=$(cat "$PIDFILE" 2>/dev/null || true)
if [ -z "$old" ] || ! kill -0 "$old" 2>/dev/null; then
    echo "upgrade: no running instance in $PIDFILE; start switchyard instead" >&2
    exit 1
fi

before=$(stat -c %i "$SOCK" 2>/dev/null || echo none)
"$BIN" -u -d -c "$CONF" &
starter=$!

# wait until the new process listens on the upgrade socket (a new inode), or dies
ready=
for _ in $(seq 1 $((TIMEOUT * 10))); do
    kill -0 "$starter" 2>/dev/null || break
    now=$(stat -c %i "$SOCK" 2>/dev/null || echo none)
    if [ -S "$SOCK" ] && [ "$now" != "$before" ]; then
        ready=1
        break
    fi
    sleep 0.1
done
# re-check: the new process must still be there when the old one is told to go
if [ -z "$ready" ] || ! kill -0 "$starter" 2>/dev/null; then
    if kill -0 "$starter" 2>/dev/null; then
        kill -TERM "$starter" 2>/dev/null || true
        why="did not open $SOCK within ${TIMEOUT}s (stopped it)"
    else
        status=0
        wait "$starter" || status=$?
        why="exited with status $status before taking over"
    fi
    echo "upgrade: the new instance $why; the old one ($old) was not signalled and keeps serving" >&2
    exit 1
fi

kill -QUIT "$old"

# the starter exits once the new instance holds the sockets and has detached
if ! wait "$starter"; then
    echo "upgrade: the new instance failed to start; the old one ($old) keeps serving until its grace period ends" >&2
    exit 1
fi
for _ in $(seq 1 $((TIMEOUT * 10))); do
    new=$(cat "$PIDFILE" 2>/dev/null || true)
    if [ -n "$new" ] && [ "$new" != "$old" ] && kill -0 "$new" 2>/dev/null; then
        echo "upgrade: $old -> $new"
        exit 0
    fi
    sleep 0.1
done
echo "upgrade: new instance did not write $PIDFILE" >&2
exit 1
