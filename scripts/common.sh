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
# crates/testkit/src/redis.rs; Debian's redis-server package pulls in redis-tools, which has
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
# DIR/.npm-ci.lock, as the Rust testkit does (crates/testkit/src/idp.rs, src/chromium.rs), so a
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

# Headless Chromium for the browser tests (crates/testkit/src/chromium.rs): Debian's `chromium`
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
