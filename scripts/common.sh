# shellcheck shell=bash
# Helpers shared by scripts/test.sh and scripts/demo.sh. Sourced, not run.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IDP_DIR="$REPO_ROOT/crates/testkit/idp"
BROWSER_E2E_DIR="$REPO_ROOT/crates/testkit/browser-e2e"
WEB_CLIENT_DIR="$REPO_ROOT/clients/web"

say() { printf '\n==> %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# ensure_apt_packages COMMAND:PACKAGE ...
# Installs, with apt-get, the Debian package of every COMMAND that is not on PATH. Nothing is
# installed (and `apt-get update` is not run) when every command is already there.
APT_UPDATED=0
ensure_apt_packages() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]}, and this is not a Debian-like system: install them by hand"
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update (missing: ${missing[*]})"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    APT_UPDATED=1
  fi
  say "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The tools every script needs: a C toolchain (the Rust linker and `ring`), Node.js >= 20 and npm
# (the OpenID Provider fixture), redis-server and redis-cli (the Redis fixtures of
# crates/testkit/src/redis/; Debian's redis-server package pulls in redis-tools, which has
# redis-cli), flock and setpriv (util-linux). Rust itself comes from rustup; rust-toolchain.toml pins it.
ensure_base_tools() {
  ensure_apt_packages cc:gcc node:nodejs npm:npm flock:util-linux setpriv:util-linux \
    redis-server:redis-server redis-cli:redis-tools
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)"
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge 20 ] || die "Node.js >= 20 is needed (found $(node --version))"
  printf '    %s, node %s, npm %s, %s\n' "$(cd "$REPO_ROOT" && cargo --version)" "$(node --version)" "$(npm --version)" \
    "$(redis-server --version | cut -d' ' -f1-3)"
}

# ensure_npm_ci DIR PACKAGE: `npm ci` in DIR when node_modules/PACKAGE is missing or DIR's
# package-lock.json changed since the last install (a stamp in node_modules). Takes the lock file
# DIR/.npm-ci.lock, as the Rust testkit does (crates/testkit/src/idp.rs, src/chromium/), so a
# test run that installs at the same moment does not race with us.
ensure_npm_ci() {
  local dir=$1 package=$2
  local stamp="$dir/node_modules/.portcullis-package-lock.sha256"
  local want
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ -f "$dir/node_modules/$package/package.json" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    printf '    %s dependencies up to date\n' "${dir#"$REPO_ROOT"/}"
    return 0
  fi
  say "npm ci in ${dir#"$REPO_ROOT"/}"
  (
    cd "$dir" || exit 1
    exec 9>.npm-ci.lock
    flock 9
    npm ci --no-audit --no-fund
    printf '%s\n' "$want" >"$stamp"
  )
}

# `npm ci` for the IdP fixture (oidc-provider).
ensure_idp_node_modules() {
  ensure_npm_ci "$IDP_DIR" oidc-provider
}

# Headless Chromium for the browser tests (crates/testkit/src/chromium/): Debian's `chromium`
# package, driven by playwright-core (which never downloads a browser here). $TESTKIT_CHROMIUM
# points the tests at another binary; then nothing is installed.
ensure_chromium() {
  if [ -n "${TESTKIT_CHROMIUM:-}" ]; then
    [ -x "$TESTKIT_CHROMIUM" ] || die "TESTKIT_CHROMIUM=$TESTKIT_CHROMIUM is not an executable"
    printf '    %s (TESTKIT_CHROMIUM)\n' "$("$TESTKIT_CHROMIUM" --version 2>/dev/null)"
    return 0
  fi
  ensure_apt_packages chromium:chromium
  local version
  version=$(chromium --version 2>/dev/null) || die "chromium is installed but \`chromium --version\` fails"
  printf '    %s at %s\n' "$version" "$(command -v chromium)"
}

# `npm ci` for the browser driver (crates/testkit/browser-e2e: playwright-core, pinned).
ensure_browser_e2e_node_modules() {
  ensure_npm_ci "$BROWSER_E2E_DIR" playwright-core
}

# `npm ci` for the browser SDK (clients/web, @portcullis/client: typescript, vitest, fake-indexeddb, pinned).
ensure_web_client_node_modules() {
  ensure_npm_ci "$WEB_CLIENT_DIR" vitest
}

# The benchmark suite's tools (bench/run.sh, bench/callgrind.sh): wrk, nginx (baseline and upstream),
# redis-server, openssl (the TLS certificate), ab and valgrind (deterministic instruction counts).
ensure_bench_tools() {
  ensure_base_tools
  ensure_apt_packages wrk:wrk nginx:nginx openssl:openssl ab:apache2-utils valgrind:valgrind \
    curl:curl python3:python3
}

# cargo-fuzz (the fuzz targets in fuzz/, see docs/fuzzing.md), installed with `cargo install
# --locked` when missing. It drives libFuzzer, whose flags need a nightly compiler: on the pinned
# stable toolchain the fuzz scripts set RUSTC_BOOTSTRAP=1 (see fuzz_smoke in scripts/test.sh).
# ensure_cargo_tool SUBCOMMAND: `cargo SUBCOMMAND`, installed from crates.io (cargo-SUBCOMMAND,
# --locked) when missing.
ensure_cargo_tool() {
  if cargo "$1" --version >/dev/null 2>&1; then
    printf '    %s\n' "$(cargo "$1" --version)"
    return 0
  fi
  say "cargo install cargo-$1 --locked"
  cargo install "cargo-$1" --locked
}

ensure_cargo_fuzz() { ensure_cargo_tool fuzz; }

ensure_cargo_deny() { ensure_cargo_tool deny; }

# Every fuzz target in fuzz/Cargo.toml.
FUZZ_TARGETS=(ticket_cookie return_to request_path config_toml seal_open logout_token csp_report traceparent)

# fuzz_run TARGET SECONDS: runs one target for SECONDS on its committed seeds (fuzz/seeds/TARGET)
# plus the local, git-ignored corpus it grows (fuzz/corpus/TARGET). No sanitizer: the crate
# forbids unsafe code, so the targets check invariants (assertions), not memory errors; that also
# keeps the build (in fuzz/target, git-ignored) small. A finding fails the run and leaves the
# input in fuzz/artifacts/TARGET/.
fuzz_run() {
  local target=$1 secs=$2
  mkdir -p "$REPO_ROOT/fuzz/corpus/$target"
  (cd "$REPO_ROOT" && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" \
    "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1)
}
