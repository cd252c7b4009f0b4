# shellcheck shell=bash
# Helpers shared by scripts/test.sh and scripts/demo.sh. Sourced, not run.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IDP_DIR="$REPO_ROOT/crates/testkit/idp"

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

# `npm ci` for the IdP fixture when node_modules is missing or package-lock.json changed since the
# last install. Takes the same lock file as the Rust testkit (crates/testkit/src/idp.rs), so a
# test run that installs at the same moment does not race with us.
ensure_idp_node_modules() {
  local stamp="$IDP_DIR/node_modules/.portcullis-package-lock.sha256"
  local want
  want=$(sha256sum "$IDP_DIR/package-lock.json" | cut -d' ' -f1)
  if [ -f "$IDP_DIR/node_modules/oidc-provider/package.json" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    printf '    IdP fixture dependencies up to date\n'
    return 0
  fi
  say "npm ci in crates/testkit/idp"
  (
    cd "$IDP_DIR" || exit 1
    exec 9>.npm-ci.lock
    flock 9
    npm ci --no-audit --no-fund
    printf '%s\n' "$want" >"$stamp"
  )
}
