#!/usr/bin/env bash
# Instructions per request of the release binary, under valgrind's callgrind: deterministic, so
# usable on a busy machine where wrk figures are noise. Starts the IdP fixture, an nginx upstream
# and Portcullis (memory store, or Redis) under callgrind, logs in, checks correctness, warms up, then for
# each request kind zeroes the counters, sends N requests on one keep-alive connection (ab -k) and
# dumps. Prints instructions/request per kind; the dumps stay in $RUN/cg for callgrind_annotate.
#
#   bash bench/callgrind.sh [N]            # default N=2000
#   bash bench/callgrind.sh N redis        # the Redis store instead of the memory store
#   PORTCULLIS_BIN=path bash bench/callgrind.sh   # measure a given binary (no build)
set -euo pipefail
N=${1:-2000}
K=${2:-mem} # the instance: mem or redis
[[ $K == mem || $K == redis ]] || { echo "store: mem or redis, not $K" >&2; exit 2; }
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap bench_cleanup EXIT
ensure_tools valgrind callgrind_control ab
build_release
mkdir -p "$RUN/cg"
start_idp
start_upstream
[[ $K == redis ]] && start_redis
PC_START_TIMEOUT=120 start_pc "$K" valgrind --tool=callgrind --callgrind-out-file="$RUN/cg/out" \
  --dump-instr=no --collect-atstart=yes
pid_of_pc() { pgrep -f -n "callgrind.*$RUN/cg/out" || echo "${PC_PID[$K]}"; }
login "$K"
verify "$K"
o=$(pc_origin "$K")
printf '%s' '{"op":"update","id":42,"value":"benchmark"}' >"$RUN/post.json"
bad=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
run_ab() { ab -q -k -n "$1" -c 1 "${@:2}" >"$RUN/logs/ab.out" 2>&1 || die "ab failed: $(tail -3 "$RUN/logs/ab.out")"; }
declare -A ARGS=(
  [get]="-H Cookie:_C_ $o/api/ok"
  [post]="-H Cookie:_C_ -H X-CSRF-Token:${CSRF[$K]} -p $RUN/post.json -T application/json $o/api/ok"
  [reject_no_session]="$o/api/ok"
  [reject_bad_csrf]="-H Cookie:_C_ -H X-CSRF-Token:$bad -p $RUN/post.json -T application/json $o/api/ok"
)
cpid=$(pid_of_pc)
printf '%-20s %12s\n' kind 'instr/req' | tee "$RUN/results/callgrind.txt"
for kind in get post reject_no_session reject_bad_csrf; do
  # shellcheck disable=SC2206
  args=(${ARGS[$kind]//_C_/${COOKIE[$K]}})
  run_ab 200 "${args[@]}"  # warm-up: connection pool, allocator, label sets
  callgrind_control -z "$cpid" >/dev/null 2>&1
  run_ab "$N" "${args[@]}"
  grep -q "Complete requests: *$N" "$RUN/logs/ab.out" || die "$kind: ab did not complete $N requests"
  non2xx=$(awk '/Non-2xx responses:/ {print $3}' "$RUN/logs/ab.out")
  case $kind in # every accepted request must be 2xx, every rejected one must not
    reject_*) [[ ${non2xx:-0} == "$N" ]] || die "$kind: only ${non2xx:-0} of $N requests were refused" ;;
    *) [[ -z $non2xx ]] || die "$kind: $non2xx of $N requests were not 2xx" ;;
  esac
  callgrind_control -d "$kind" "$cpid" >/dev/null 2>&1
  f=$(find "$RUN/cg" -name 'out.*' -newer "$RUN/post.json" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$f")
  cp "$f" "$RUN/cg/$kind.callgrind"
  printf '%-20s %12d\n' "$kind" $((ir / N)) | tee -a "$RUN/results/callgrind.txt"
done
log "dumps: $RUN/cg/<kind>.callgrind (callgrind_annotate --inclusive=yes FILE | head -60)"
