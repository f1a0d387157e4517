#!/usr/bin/env bash
# demo.sh — the `make run` demo: starts three switchyard-echo backends on
# 127.0.0.1:8001, 8002 and 8003, then switchyard on conf/switchyard.yaml.
# Ctrl-C (or SIGTERM, or switchyard exiting) stops everything it started,
# by PID.
#
# Environment: BIN_DIR (default target/release), CONFIG (default
# conf/switchyard.yaml), DEMO_PORTS (default "8001 8002 8003"; must match
# the config), ECHO_ARGS (extra switchyard-echo flags, e.g.
# "--max-delay 200ms --error-rate 0.1").
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR=${BIN_DIR:-target/release}
CONFIG=${CONFIG:-conf/switchyard.yaml}
ECHO_ARGS=${ECHO_ARGS:-}
read -r -a PORTS <<<"${DEMO_PORTS:-8001 8002 8003}"

for bin in switchyard switchyard-echo; do
  if [[ ! -x "$BIN_DIR/$bin" ]]; then
    echo "demo: $BIN_DIR/$bin not found; run 'make build' first" >&2
    exit 1
  fi
done
if [[ ! -f "$CONFIG" ]]; then
  echo "demo: config $CONFIG not found" >&2
  exit 1
fi

LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-demo.XXXXXX")
pids=()

cleanup() {
  trap - EXIT INT TERM
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  # Bounded wait (~6 s, switchyard's grace period is 5 s), then SIGKILL.
  local _i
  for _i in $(seq 1 60); do
    local alive=0
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$LOG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for port in "${PORTS[@]}"; do
  # shellcheck disable=SC2086 # ECHO_ARGS is split on purpose
  "$BIN_DIR/switchyard-echo" --listen "127.0.0.1:$port" --name "echo-$port" $ECHO_ARGS \
    >"$LOG_DIR/echo-$port.out" 2>&1 &
  pids+=("$!")
done

# Wait (bounded) for every backend's "listening on" line.
for i in "${!PORTS[@]}"; do
  port=${PORTS[$i]}
  pid=${pids[$i]}
  ready=0
  for _ in $(seq 1 100); do
    if grep -q '^listening on' "$LOG_DIR/echo-$port.out" 2>/dev/null; then ready=1; break; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.05
  done
  if [[ $ready != 1 ]]; then
    echo "demo: switchyard-echo on 127.0.0.1:$port did not start:" >&2
    cat "$LOG_DIR/echo-$port.out" >&2 || true
    exit 1
  fi
  echo "demo: backend echo-$port $(cat "$LOG_DIR/echo-$port.out")"
done

echo "demo: starting $BIN_DIR/switchyard -c $CONFIG (Ctrl-C to stop)"
echo "demo: try   curl -s localhost:8080/hello   and   curl -s -H 'App-Name: api' localhost:8080/"
"$BIN_DIR/switchyard" -c "$CONFIG" &
sy_pid=$!
pids+=("$sy_pid")
set +e
wait "$sy_pid"
rc=$?
set -e
echo "demo: switchyard exited with $rc"
exit "$rc"
