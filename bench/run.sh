#!/usr/bin/env bash
# Portcullis vs its own nginx plain-proxy baseline, side by side on this machine (loopback).
#
#   bash bench/run.sh                    # 15 s runs, 3 interleaved rounds (~12 min)
#   bash bench/run.sh --quick            # 3 s runs, 1 round: a correctness smoke test, not figures
#   bash bench/run.sh --duration 10 --rounds 5 [--no-tls] [--no-redis] [--scale] [--no-extras]
#
# Builds release (or takes $PORTCULLIS_BIN), starts the IdP fixture (crates/testkit/idp), an nginx
# upstream ({"ok":true}), nginx as a plain reverse proxy (HTTP and TLS, same certificate as
# Portcullis-TLS), redis-server, and Portcullis with the memory store, the Redis store and TLS.
# Logs in through the real login form, verifies correctness, then runs wrk (-t2 -c64) on every
# scenario, round by round (interleaved, so drift hits all alike). CPU µs/req = utime+stime of the
# serving process(es) over the run (/proc) ÷ requests. Prints the table as ratios to nginx and
# writes $RUN/results/{raw.tsv,table.md}. Then, unless --no-extras, the targets wrk does not
# measure, in the same run: the session footprint (examples/store_footprint.rs, 100k sessions,
# with mimalloc and with the system allocator; --footprint N to change) and the 3-part aggregate
# latency (examples/aggregate_latency.rs), appended to table.md.
set -euo pipefail
DURATION=15 ROUNDS=3 TLS=1 REDIS=1 SCALE=0 CONNS=64 EXTRAS=1 FOOTPRINT=100000
while (($#)); do
  case $1 in
    --quick) DURATION=3 ROUNDS=1 ;;
    --duration) DURATION=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --connections) CONNS=$2; shift ;;
    --no-tls) TLS=0 ;;
    --no-redis) REDIS=0 ;;
    --scale) SCALE=1 ;;
    --no-extras) EXTRAS=0 ;;
    --footprint) FOOTPRINT=$2; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap bench_cleanup EXIT
ensure_tools
build_release
log "run directory: $RUN"
make_cert
start_idp
start_upstream
start_nginx_proxies
start_pc mem
((REDIS)) && { start_redis; start_pc redis; }
((REDIS && SCALE)) && start_pc redis2
((TLS)) && start_pc tls
sleep 1
RSS_IDLE_KB=$(awk '/^VmRSS:/{print $2}' "/proc/${PC_PID[mem]}/status")
for k in "${!PC_PID[@]}"; do [[ $k == redis2 ]] || { login "$k"; verify "$k"; }; done
if [[ -n ${PC_PID[redis2]:-} ]]; then # the second instance serves the first one's session
  COOKIE[redis2]=${COOKIE[redis]} CSRF[redis2]=${CSRF[redis]}
  verify redis2
fi
log "correctness: $NCHECK checks passed"

CLK_TCK=$(getconf CLK_TCK)
cat >"$RUN/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body   = '{"op":"update","id":42,"value":"benchmark"}'
wrk.headers["Content-Type"] = "application/json"
EOF
BAD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
NGX=http://127.0.0.1:$NGX_PORT/api/ok
NGX_TLS=https://127.0.0.1:$NGX_TLS_PORT/api/ok
pcu() { echo "$(pc_origin "$1")/api/ok"; }

# scenario -> "kind|pids-of|wrk args" (kind: ok = every answer must be 2xx; reject = none may be)
declare -A SC=(
  [nginx_get]="ok|nginx|$NGX"
  [pc_get]="ok|mem|-H Cookie:_C_mem $(pcu mem)"
  [nginx_post]="ok|nginx|-s $RUN/post.lua $NGX"
  [pc_post]="ok|mem|-s $RUN/post.lua -H Cookie:_C_mem -H X-CSRF-Token:_X_mem $(pcu mem)"
  [pc_reject_no_session]="reject|mem|$(pcu mem)"
  [pc_reject_bad_csrf]="reject|mem|-s $RUN/post.lua -H Cookie:_C_mem -H X-CSRF-Token:$BAD $(pcu mem)"
  [nginx_get_c8]="ok|nginx|-c8 $NGX"
  [pc_get_c8]="ok|mem|-c8 -H Cookie:_C_mem $(pcu mem)"
)
ORDER=(nginx_get pc_get nginx_post pc_post pc_reject_no_session pc_reject_bad_csrf nginx_get_c8 pc_get_c8)
if ((REDIS)); then SC[pc_redis_get]="ok|redis|-H Cookie:_C_redis $(pcu redis)"; ORDER+=(pc_redis_get); fi
if ((TLS)); then
  SC[nginx_tls_get]="ok|nginx|$NGX_TLS"
  SC[pc_tls_get]="ok|tls|-H Cookie:_C_tls $(pcu tls)"
  ORDER+=(nginx_tls_get pc_tls_get)
fi

pids_of() { # target -> pids whose CPU is the target's
  case $1 in
    nginx) local m; m=$(cat "$RUN/nginx-proxy/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')" ;;
    *) echo "${PC_PID[$1]}" ;;
  esac
}
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done; echo $t; }

still_ok() { # instance: the authenticated GET still goes through with a bearer (after every run)
  curl -ks -H "Cookie: ${COOKIE[$1]}" "$(pc_origin "$1")/api/echo" | grep -q '"authorization_scheme":"Bearer"'
}

run_wrk() { # round scenario
  local r=$1 s=$2 kind target args pids t0 t1 out reqs rps p99 non2xx valid=1 c=$CONNS
  IFS='|' read -r kind target args <<<"${SC[$s]}"
  for k in "${!COOKIE[@]}"; do args=${args//_C_$k/${COOKIE[$k]}}; args=${args//_X_$k/${CSRF[$k]}}; done
  # shellcheck disable=SC2206
  local a=($args) i
  for i in "${!a[@]}"; do [[ ${a[$i]} == *:* && ${a[$i]} != http* ]] && a[$i]=${a[$i]/:/: }; done # "Name: value" for wrk
  [[ ${a[0]} == -c8 ]] && { c=8; a=("${a[@]:1}"); }
  read -r -a pids <<<"$(pids_of "$target")"
  t0=$(ticks "${pids[@]}")
  out=$(wrk -t2 -c"$c" -d"${DURATION}s" --latency "${a[@]}")
  t1=$(ticks "${pids[@]}")
  printf '%s\n' "$out" >"$RUN/results/wrk.$r.$s.txt"
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) {sub(/us/, "", v); v /= 1000} else if (v ~ /ms$/) sub(/ms/, "", v); else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}; print v}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
  if [[ $kind == ok && $non2xx != 0 ]] || [[ $kind == reject && $non2xx != "$reqs" ]]; then valid=0; fi
  [[ $target == nginx ]] || still_ok "$target" || valid=0
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$reqs" "$rps" "$(((t1 - t0) * 1000000 / CLK_TCK))" "${p99:-0}" "$valid" >>"$RUN/results/raw.tsv"
  log "round $r $s: $rps req/s, p99 ${p99}ms, non-2xx $non2xx$([[ $valid == 1 ]] || echo ' INVALID')"
}

printf 'round\tscenario\trequests\treq_s\tcpu_us\tp99_ms\tvalid\n' >"$RUN/results/raw.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
  for s in "${ORDER[@]}"; do run_wrk "$r" "$s"; done
  if ((REDIS && SCALE)); then # two instances sharing Redis, loaded at once: sum of both
    local_out=$( (wrk -t1 -c32 -d"${DURATION}s" -H "Cookie: ${COOKIE[redis]}" "$(pcu redis)" &
      wrk -t1 -c32 -d"${DURATION}s" -H "Cookie: ${COOKIE[redis2]}" "$(pcu redis2)"; wait) | awk '/^Requests\/sec/ {s += $2} END {print s}')
    printf '%s\tpc_redis_x2_get\t0\t%s\t0\t0\t1\n' "$r" "$local_out" >>"$RUN/results/raw.tsv"
    log "round $r pc_redis_x2_get: $local_out req/s (2 instances, 1 Redis)"
  fi
done
RSS_AFTER_KB=$(awk '/^VmRSS:/{print $2}' "/proc/${PC_PID[mem]}/status")

python3 - "$RUN/results/raw.tsv" "$RSS_IDLE_KB" "$RSS_AFTER_KB" "$DURATION" "$ROUNDS" >"$RUN/results/table.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
rss_idle, rss_after, dur, rounds = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
by = {}
for r in rows:
    by.setdefault(r["scenario"], []).append(r)
def med(s, f):
    v = [float(r[f]) for r in by.get(s, [])]
    return statistics.median(v) if v else None
def cpu(s):
    v = [float(r["cpu_us"]) / float(r["requests"]) for r in by.get(s, []) if float(r["requests"]) > 0]
    return statistics.median(v) if v else None
def invalid(s):
    return any(r["valid"] != "1" for r in by.get(s, []))
def f(x, d=0):
    return "—" if x is None else f"{x:,.{d}f}"
def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}"
print(f"wrk -t2 -c64 -d{dur}s (p99: -c8), medians of {rounds} interleaved round(s)\n")
print("| scenario | req/s | vs baseline | baseline | p99 ms (c8) | CPU µs/req | CPU vs baseline |")
print("|---|---:|---:|---|---:|---:|---:|")
lines = [
    ("nginx plain proxy GET", "nginx_get", "nginx_get"),
    ("Portcullis GET (memory store)", "pc_get", "nginx_get"),
    ("nginx plain proxy POST", "nginx_post", "nginx_post"),
    ("Portcullis POST + X-CSRF-Token", "pc_post", "nginx_post"),
    ("Portcullis GET (Redis store)", "pc_redis_get", "nginx_get"),
    ("Portcullis, 2 instances sharing Redis (sum)", "pc_redis_x2_get", "nginx_get"),
    ("Portcullis rejected: no session (401)", "pc_reject_no_session", "pc_get"),
    ("Portcullis rejected: bad CSRF token (403)", "pc_reject_bad_csrf", "pc_post"),
    ("nginx TLS GET", "nginx_tls_get", "nginx_tls_get"),
    ("Portcullis TLS GET (rustls)", "pc_tls_get", "nginx_tls_get"),
]
for label, s, base in lines:
    if s not in by:
        continue
    p99 = {"nginx_get": "nginx_get_c8", "pc_get": "pc_get_c8"}.get(s)
    bl = base.replace("_", " ") if base != s else "—"
    mark = " **INVALID**" if invalid(s) else ""
    print(f"| {label}{mark} | {f(med(s, 'req_s'))} | {ratio(med(s, 'req_s'), med(base, 'req_s'))} | {bl} | "
          f"{f(med(p99, 'p99_ms'), 2) if p99 else '—'} | {f(cpu(s), 1)} | {ratio(cpu(s), cpu(base))} |")
print(f"\nPortcullis (memory store) RSS: idle after start {rss_idle / 1024:.1f} MiB, after the run {rss_after / 1024:.1f} MiB")
EOF

if ((EXTRAS)); then
  # After the wrk runs, with every server of the run stopped (the aggregate example starts its
  # own IdP and upstream), so neither measurement disturbs the other.
  bench_cleanup
  log "session footprint: $FOOTPRINT sessions, mimalloc (the default) and the system allocator"
  {
    printf '\n### Session footprint (%s sessions; examples/store_footprint.rs)\n\n```\n' "$FOOTPRINT"
    printf 'mimalloc (default build):\n'
    (cd "$REPO" && cargo run -q --release -p portcullis --example store_footprint -- "$FOOTPRINT")
    printf 'system allocator (--no-default-features):\n'
    (cd "$REPO" && cargo run -q --release -p portcullis --no-default-features --example store_footprint -- "$FOOTPRINT")
    printf '```\n\n### 3-part aggregate latency (examples/aggregate_latency.rs)\n\n```\n'
    (cd "$REPO" && cargo run -q --release -p portcullis --example aggregate_latency -- 50)
    printf '```\n'
  } >>"$RUN/results/table.md" 2>>"$RUN/logs/extras.log" || die "extras failed (see $RUN/logs/extras.log)"
fi
cat "$RUN/results/table.md"
