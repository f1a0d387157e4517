#!/usr/bin/env bash
# Graceful binary upgrade of a running switchyard (what `systemctl reload` runs).
#
#   SWITCHYARD_BIN=/usr/local/bin/switchyard SWITCHYARD_CONF=/etc/switchyard/switchyard.yaml \
#     deploy/upgrade.sh
#
# 1. validate the configuration with the new binary (nothing changes if invalid);
# 2. start the new binary with `-u -d`: it binds server.upgrade_sock and waits there
#    for the listening sockets (if it exits first, the script fails and changes nothing);
# 3. SIGQUIT the old instance: it hands its listening sockets over the upgrade socket,
#    stops accepting, finishes its in-flight requests (grace_period_seconds) and exits;
# 4. the new instance, once it holds the sockets, detaches and writes the pid file.
# Both processes accept on the same sockets during the hand-over: no connection is refused.
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

# wait until the new process listens on the upgrade socket (a new inode)
for _ in $(seq 1 $((TIMEOUT * 10))); do
    now=$(stat -c %i "$SOCK" 2>/dev/null || echo none)
    [ "$now" != none ] && [ "$now" != "$before" ] && break
    kill -0 "$starter" 2>/dev/null || break
    sleep 0.1
done
# never retire the old instance unless the new one is waiting for its sockets
if [ "${now:-none}" = none ] || [ "$now" = "$before" ]; then
    kill "$starter" 2>/dev/null || true
    wait "$starter" 2>/dev/null || true
    echo "upgrade: the new instance did not come up on $SOCK; the old one ($old) keeps serving" >&2
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
