#!/usr/bin/env bash
# Runs the Portcullis demo on this machine, all on loopback:
#   http://127.0.0.1:9000  the OpenID Provider test fixture (crates/testkit/idp, oidc-provider)
#   http://127.0.0.1:7001  a sample API (demo/api.mjs)
#   http://localhost:8080  Portcullis (demo/portcullis.toml) serving the demo PWA, examples/pwa
#                          (built first by scripts/build-pwa.sh: the @portcullis/client SDK in
#                          clients/web is installed, built and copied to examples/pwa/vendor/)
# Logs go to demo/run/*.log. Ctrl-C stops everything.
#
# PORTCULLIS_DEMO_PROFILE=debug builds and runs a debug binary instead of the release one.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

PROFILE=${PORTCULLIS_DEMO_PROFILE:-release}
RUN_DIR=demo/run
CONFIG=demo/portcullis.toml
APP_URL=http://localhost:8080
IDP_PORT=9000
API_PORT=7001
GATEWAY_PORT=8080
CLIENT_ID=portcullis
CLIENT_SECRET=portcullis-secret   # the fixture's test client; a demo value, not a real secret
TEST_USER=alice
TEST_PASSWORD=wonderland

say "Checking tools"
ensure_base_tools
ensure_apt_packages curl:curl

say "IdP fixture dependencies"
ensure_idp_node_modules

say "Building the demo PWA (clients/web → examples/pwa/vendor/portcullis-client)"
"$REPO_ROOT/scripts/build-pwa.sh"

case "$PROFILE" in
  release)
    say "cargo build --release -p portcullis"
    cargo build --release -p portcullis
    ;;
  debug)
    say "cargo build -p portcullis"
    cargo build -p portcullis
    ;;
  *) die "PORTCULLIS_DEMO_PROFILE must be release or debug (got $PROFILE)" ;;
esac
BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/$PROFILE/portcullis"
[ -x "$BIN" ] || die "built binary not found at $BIN"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$IDP_PORT" "$API_PORT" "$GATEWAY_PORT"; do
  if port_in_use "$port"; then
    die "127.0.0.1:$port is already in use (another demo still running?)"
  fi
done

mkdir -p "$RUN_DIR"
PIDS=()
NAMES=()

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  trap - EXIT INT TERM
  [ "${#PIDS[@]}" -gt 0 ] || return 0
  printf '\nStopping the demo...\n'
  local pid alive
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    [ "$alive" -eq 1 ] || break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  printf 'Demo stopped. Logs are in %s/.\n' "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# started NAME: records the last background job so Ctrl-C (or a failure) stops it.
started() {
  PIDS+=("$!")
  NAMES+=("$1")
}

# wait_until NAME SECONDS COMMAND...: polls COMMAND every 0.2 s while every child is alive.
wait_until() {
  local name=$1 seconds=$2 j
  shift 2
  for _ in $(seq $((seconds * 5))); do
    if "$@"; then return 0; fi
    for j in "${!PIDS[@]}"; do
      if ! kill -0 "${PIDS[$j]}" 2>/dev/null; then
        tail -n 20 "$RUN_DIR/${NAMES[$j]}.log" >&2 || true
        die "${NAMES[$j]} exited while waiting for $name (log: $RUN_DIR/${NAMES[$j]}.log)"
      fi
    done
    sleep 0.2
  done
  die "$name not ready after ${seconds}s"
}

say "Starting the OpenID Provider fixture on http://127.0.0.1:$IDP_PORT"
(
  cd "$IDP_DIR"
  IDP_PORT=$IDP_PORT \
    IDP_CLIENT_ID=$CLIENT_ID \
    IDP_CLIENT_SECRET=$CLIENT_SECRET \
    IDP_REDIRECT_URIS="$APP_URL/bff/callback" \
    IDP_POST_LOGOUT_REDIRECT_URIS="$APP_URL/" \
    IDP_USER=$TEST_USER \
    IDP_PASSWORD=$TEST_PASSWORD \
    exec node server.mjs
) >"$RUN_DIR/idp.log" 2>&1 &
started idp
wait_until "the IdP" 30 grep -q '^IDP_READY ' "$RUN_DIR/idp.log"

say "Starting the sample API on http://127.0.0.1:$API_PORT"
API_PORT=$API_PORT node demo/api.mjs >"$RUN_DIR/api.log" 2>&1 &
started api
wait_until "the sample API" 10 port_in_use "$API_PORT"

say "Starting Portcullis on $APP_URL"
# A fresh session key for this run (sessions do not outlive the demo anyway: memory store).
SESSION_KEYS=$("$BIN" gen-key)
PORTCULLIS_SESSION_KEYS=$SESSION_KEYS PORTCULLIS_CLIENT_SECRET=$CLIENT_SECRET \
  "$BIN" check-config --config "$CONFIG"
# NO_COLOR: plain text in the log file.
NO_COLOR=1 PORTCULLIS_SESSION_KEYS=$SESSION_KEYS PORTCULLIS_CLIENT_SECRET=$CLIENT_SECRET \
  "$BIN" serve --config "$CONFIG" >"$RUN_DIR/portcullis.log" 2>&1 &
started portcullis
# shellcheck disable=SC2317 # called through wait_until
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GATEWAY_PORT/readyz")" = 200 ]; }
wait_until "Portcullis /readyz" 60 ready

cat <<EOF

  Portcullis demo is running.

    Open       $APP_URL/
               (exactly this origin: it is the configured public_origin, so Origin checks and the
               IdP's registered redirect URI match; 127.0.0.1:8080 would not)
    Log in as  $TEST_USER / $TEST_PASSWORD
    Logs       $RUN_DIR/idp.log, $RUN_DIR/api.log, $RUN_DIR/portcullis.log

  Press Ctrl-C to stop.
EOF

# Runs until Ctrl-C, or until one of the processes dies.
set +e
wait -n
status=$?
set -e
for j in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[$j]}" 2>/dev/null; then
    printf '\n%s exited (status %s); last lines of %s:\n' "${NAMES[$j]}" "$status" "$RUN_DIR/${NAMES[$j]}.log" >&2
    tail -n 20 "$RUN_DIR/${NAMES[$j]}.log" >&2 || true
  fi
done
exit 1
