# shellcheck shell=bash
# Shared by bench/run.sh and bench/callgrind.sh: start the IdP fixture, an nginx upstream, nginx
# baselines, redis-server and Portcullis instances on loopback; script the real login; check
# correctness. Every process started here is recorded in $RUN/pids and stopped by bench_cleanup.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PORT_BASE=${BENCH_PORT_BASE:-18400}
IDP_PORT=$PORT_BASE
UP_PORT=$((PORT_BASE + 1))        # upstream: {"ok":true} on any path, echo JSON on /echo
NGX_PORT=$((PORT_BASE + 2))       # nginx plain reverse proxy /api/ -> upstream
NGX_TLS_PORT=$((PORT_BASE + 3))   # the same over TLS
REDIS_PORT=$((PORT_BASE + 7))
declare -A PC_PORT=([mem]=$((PORT_BASE + 4)) [redis]=$((PORT_BASE + 5)) [tls]=$((PORT_BASE + 6)) [redis2]=$((PORT_BASE + 8)))
declare -A PC_SCHEME=([mem]=http [redis]=http [tls]=https [redis2]=http)
declare -A PC_PID=() COOKIE=() CSRF=()
COOKIE_NAME=__Host-SessionID
IDP_USER=alice IDP_PASSWORD=wonderland CLIENT_ID=portcullis CLIENT_SECRET=portcullis-secret
PC_BIN=${PORTCULLIS_BIN:-$REPO/target/release/portcullis}
RUN=${BENCH_RUN_DIR:-$(mktemp -d /tmp/portcullis-bench.XXXXXX)}
mkdir -p "$RUN"/{logs,nginx-up,nginx-proxy,nginx-tls,pc,tls,redis,results}
: >"$RUN/pids"

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
track_pid() { echo "$1" >>"$RUN/pids"; }

bench_cleanup() {
  local p
  [[ -f $RUN/pids ]] || return 0
  # `|| true`: under set -e a failed kill (the process already gone) would end the trap with 1.
  while read -r p; do [[ -n $p ]] && { kill "$p" 2>/dev/null || true; }; done <"$RUN/pids"
  sleep 0.3
  while read -r p; do [[ -n $p ]] && { kill -9 "$p" 2>/dev/null || true; }; done <"$RUN/pids"
  : >"$RUN/pids"
}

wait_http() { # url [seconds] -> 0 once it answers at all
  local i
  for ((i = 0; i < ${2:-30} * 10; i++)); do
    curl -ks -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  return 1
}

ensure_tools() { # [extra commands...]
  local missing=() t
  for t in wrk nginx redis-server redis-cli curl node npm openssl python3 "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
  if ((${#missing[@]})); then
    # shellcheck source=../scripts/common.sh
    source "$REPO/scripts/common.sh"
    ensure_bench_tools
  fi
}

build_release() {
  [[ -n ${PORTCULLIS_BIN:-} ]] && return 0
  log "cargo build --release -p portcullis"
  (cd "$REPO" && cargo build --release -p portcullis) >"$RUN/logs/build.log" 2>&1 ||
    die "release build failed (see $RUN/logs/build.log)"
}

pc_origin() { echo "${PC_SCHEME[$1]}://127.0.0.1:${PC_PORT[$1]}"; }

start_idp() {
  local uris="" k
  for k in "${!PC_PORT[@]}"; do uris+="${uris:+,}$(pc_origin "$k")/bff/callback"; done
  [[ -d $REPO/crates/testkit/idp/node_modules ]] ||
    (cd "$REPO/crates/testkit/idp" && npm ci --no-audit --no-fund) >"$RUN/logs/npm.log" 2>&1
  (cd "$REPO/crates/testkit/idp" && exec env IDP_PORT="$IDP_PORT" IDP_REDIRECT_URIS="$uris" \
    IDP_CLIENT_ID=$CLIENT_ID IDP_CLIENT_SECRET=$CLIENT_SECRET IDP_USER=$IDP_USER IDP_PASSWORD=$IDP_PASSWORD \
    node server.mjs >"$RUN/logs/idp.out" 2>"$RUN/logs/idp.err") &
  track_pid $!
  wait_http "http://127.0.0.1:$IDP_PORT/.well-known/openid-configuration" 30 || die "IdP did not start"
}

make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$RUN/tls/key.pem" -out "$RUN/tls/cert.pem" >/dev/null 2>&1 || die "openssl failed"
}

nginx_common='worker_rlimit_nofile 65536; error_log error.log warn; pid nginx.pid;
events { worker_connections 4096; multi_accept on; }'
nginx_http='access_log off; server_tokens off; keepalive_requests 1000000; keepalive_timeout 75s;
client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp; uwsgi_temp_path tmp; scgi_temp_path tmp;'

start_nginx() { # dir config-text
  mkdir -p "$1/tmp"
  printf '%s\n' "$2" >"$1/nginx.conf"
  nginx -p "$1" -c "$1/nginx.conf" -g 'daemon off;' >"$1/stdout" 2>&1 &
  track_pid $!
}

start_upstream() {
  start_nginx "$RUN/nginx-up" "worker_processes 1; $nginx_common
http { $nginx_http
  map \$http_authorization \$auth_scheme { default other; '' none; ~*^Bearer\\s Bearer; }
  map \$http_cookie \$cookie_present { default true; '' false; }
  server { listen 127.0.0.1:$UP_PORT backlog=4096; default_type application/json;
    location / { return 200 '{\"ok\":true}'; }
    location ~ /echo\$ { return 200 '{\"uri\":\"\$request_uri\",\"authorization_scheme\":\"\$auth_scheme\",\"cookie_present\":\$cookie_present,\"x_csrf_token\":\"\$http_x_csrf_token\"}'; }
  } }"
  wait_http "http://127.0.0.1:$UP_PORT/ok" 10 || die "upstream nginx did not start"
}

# The baseline: nginx as a plain reverse proxy (no auth), one worker per core, upstream keep-alive;
# and the same over TLS with the certificate Portcullis-TLS uses.
start_nginx_proxies() {
  local proxy="location /api/ { proxy_pass http://api/; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
  start_nginx "$RUN/nginx-proxy" "worker_processes 2; $nginx_common
http { $nginx_http upstream api { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGX_PORT backlog=4096; $proxy }
  server { listen 127.0.0.1:$NGX_TLS_PORT ssl backlog=4096; ssl_certificate $RUN/tls/cert.pem;
    ssl_certificate_key $RUN/tls/key.pem; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:S:10m; $proxy }
}"
  wait_http "http://127.0.0.1:$NGX_PORT/api/ok" 10 || die "nginx proxy did not start"
}

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$RUN/redis" \
    >"$RUN/logs/redis.log" 2>&1 &
  track_pid $!
  local i
  for ((i = 0; i < 50; i++)); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "redis-server did not start"
}

SESSION_KEY=$(python3 -c 'import base64,secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())')

pc_config() { # instance -> config file path
  local k=$1 f=$RUN/pc/$1.toml store='store = "memory"' tls=""
  [[ $k == redis* ]] && store="store = \"redis\"
redis_url = \"redis://127.0.0.1:$REDIS_PORT\""
  [[ $k == tls ]] && tls="tls = { cert_file = \"$RUN/tls/cert.pem\", key_file = \"$RUN/tls/key.pem\" }"
  cat >"$f" <<EOF
[server]
listen = "127.0.0.1:${PC_PORT[$k]}"
public_origin = "$(pc_origin "$k")"
$tls

[session]
cookie_name = "$COOKIE_NAME"
absolute_lifetime = "8h"
idle_timeout = "2h"
$store
keys_env = "PORTCULLIS_SESSION_KEYS"

[oidc]
issuer = "http://127.0.0.1:$IDP_PORT"
client_id = "$CLIENT_ID"
client_secret_env = "PORTCULLIS_CLIENT_SECRET"
scopes = ["openid", "profile", "email", "offline_access"]
session_claims = ["sub"]

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:$UP_PORT"
timeout = "10s"
EOF
  echo "$f"
}

start_pc() { # instance [wrapper words...]: Portcullis, RUST_LOG=warn (no per-request log, like nginx)
  local k=$1 cfg
  shift
  cfg=$(pc_config "$k")
  env RUST_LOG="${PORTCULLIS_RUST_LOG:-warn}" NO_COLOR=1 PORTCULLIS_CLIENT_SECRET=$CLIENT_SECRET \
    PORTCULLIS_SESSION_KEYS="$SESSION_KEY" "$@" "$PC_BIN" serve --config "$cfg" \
    >"$RUN/logs/pc-$k.out" 2>"$RUN/logs/pc-$k.err" &
  PC_PID[$k]=$! # read by run.sh and callgrind.sh
  track_pid $!
  local i
  for ((i = 0; i < ${PC_START_TIMEOUT:-30} * 10; i++)); do # ready: provider metadata and store
    [[ $(curl -ks -o /dev/null -w '%{http_code}' --max-time 2 "$(pc_origin "$k")/readyz") == 200 ]] && return 0
    sleep 0.1
  done
  die "portcullis $k did not become ready (see $RUN/logs/pc-$k.err)"
}

# The real Authorization Code flow: /bff/login -> IdP -> login form (POST credentials) -> consent
# (automatic) -> /bff/callback. IdP cookies live in a curl jar; Portcullis's own (__Host-, Secure)
# are sent back explicitly, as a browser would. -> COOKIE[k], CSRF[k]
login() {
  local k=$1 origin url n out code loc line nv key hdr=$RUN/pc/$1.hdr body=$RUN/pc/$1.body jar=$RUN/pc/$1.jar
  local -A own=()
  origin=$(pc_origin "$k")
  url=$origin/bff/login
  : >"$jar"
  for ((n = 0; n < 25; n++)); do
    if [[ $url == "$origin"/* ]]; then
      local ch=""
      for key in "${!own[@]}"; do ch+="${ch:+; }$key=${own[$key]}"; done
      out=$(curl -ksS -o "$body" -D "$hdr" -w '%{http_code} %{redirect_url}' ${ch:+-H "Cookie: $ch"} "$url")
      while IFS= read -r line; do
        line=${line%$'\r'}
        [[ ${line,,} == set-cookie:* ]] || continue
        nv=${line#*:}; nv=${nv# }; nv=${nv%%;*}; key=${nv%%=*}
        if [[ -z ${nv#*=} || ${line,,} == *max-age=0* ]]; then unset "own[$key]"; else own[$key]=${nv#*=}; fi
      done <"$hdr"
    else
      out=$(curl -sS -o "$body" -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}' "$url")
    fi
    code=${out%% *}; loc=${out#* }
    if [[ $url == */interaction/* && $code == 200 ]] && grep -q '<form id="login"' "$body"; then
      out=$(curl -sS -o "$body" -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}' \
        --data-urlencode "login=$IDP_USER" --data-urlencode "password=$IDP_PASSWORD" "${url%%\?*}/login")
      code=${out%% *}; loc=${out#* }
    fi
    [[ $url == "$origin/bff/callback"* ]] && break
    [[ $code == 30[12378] && -n $loc ]] || die "login of $k stopped at ${url%%\?*} with HTTP $code"
    url=$loc
  done
  [[ -n ${own[$COOKIE_NAME]:-} ]] || die "login of $k: no $COOKIE_NAME cookie from the callback"
  COOKIE[$k]="$COOKIE_NAME=${own[$COOKIE_NAME]}"
  CSRF[$k]=$(curl -ks -H "Cookie: ${COOKIE[$k]}" "$origin/bff/session" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["csrfToken"])') || die "no CSRF token for $k"
}

NCHECK=0
expect() { # description expected actual
  [[ $2 == "$3" ]] || die "check failed: $1 (expected $2, got $3)"
  NCHECK=$((NCHECK + 1))
}
# HTTP/1.1 like wrk. (Over h2, curl 7.88 reports an early 403/401 to a POST whose body it is still
# sending as a stream error: hyper resets the unread request stream after the full response.)
status_of() { curl -ks --http1.1 -o /dev/null -w '%{http_code}' "$@"; }

# Correctness before any figure: the bearer reaches the upstream, the cookie does not, and the
# 401/403 paths answer as specified.
verify() {
  local k=$1 o body bad
  o=$(pc_origin "$k")
  bad=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
  body=$(curl -ks -H "Cookie: ${COOKIE[$k]}" "$o/api/echo")
  expect "$k: bearer reaches the upstream" Bearer "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["authorization_scheme"])' "$body")"
  expect "$k: no cookie forwarded" False "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["cookie_present"])' "$body")"
  expect "$k: GET without a session -> 401" 401 "$(status_of "$o/api/ok")"
  expect "$k: unknown session cookie -> 401" 401 "$(status_of -H "Cookie: $COOKIE_NAME=$bad" "$o/api/ok")"
  expect "$k: POST without X-CSRF-Token -> 403" 403 "$(status_of -X POST -d '{}' -H "Cookie: ${COOKIE[$k]}" "$o/api/ok")"
  expect "$k: POST with a bad X-CSRF-Token -> 403" 403 "$(status_of -X POST -d '{}' -H "Cookie: ${COOKIE[$k]}" -H "X-CSRF-Token: $bad" "$o/api/ok")"
  expect "$k: POST with the right X-CSRF-Token -> 200" 200 "$(status_of -X POST -d '{}' -H "Cookie: ${COOKIE[$k]}" -H "X-CSRF-Token: ${CSRF[$k]}" "$o/api/ok")"
  expect "$k: authenticated GET -> upstream JSON" '{"ok":true}' "$(curl -ks -H "Cookie: ${COOKIE[$k]}" "$o/api/ok")"
}
