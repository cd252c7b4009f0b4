#!/usr/bin/env bash
# Runs every test: formatting, lints, and the whole workspace's tests (unit and integration, the
# latter against the real OpenID Provider fixture and real upstream servers, and the browser tests
# in real headless Chromium), then a short smoke run of every fuzz target (fuzz/).
# On a fresh Debian machine with Rust and Node.js it first installs what is missing.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

say "Checking tools"
ensure_base_tools

say "IdP fixture dependencies"
ensure_idp_node_modules

say "Headless Chromium and its driver (browser tests)"
ensure_chromium
ensure_browser_e2e_node_modules

say "Browser SDK (clients/web): typecheck, build, unit tests"
ensure_web_client_node_modules
(cd "$WEB_CLIENT_DIR" && npm run --silent typecheck && npm run --silent build && npm test --silent)

say "cargo fmt --all -- --check"
cargo fmt --all -- --check
(cd fuzz && cargo fmt -- --check) # the fuzz targets are their own workspace

say "One TLS/crypto stack: no OpenSSL, native-tls or aws-lc in the dependency graph (deny.toml)"
for banned in openssl openssl-sys native-tls aws-lc-rs aws-lc-sys; do
  if cargo tree --workspace -e normal,build,dev -i "$banned" >/dev/null 2>&1; then
    echo "banned crate in the dependency graph: $banned" >&2
    cargo tree --workspace -e normal,build,dev -i "$banned" >&2
    exit 1
  fi
done

say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

say "cargo deny: bans (one TLS/crypto stack), licenses, sources (deny.toml)"
ensure_cargo_deny
cargo deny --offline --log-level error check bans licenses sources

say "cargo test --workspace"
cargo test --workspace

say "Fuzz smoke run: every target in fuzz/ for ${PORTCULLIS_FUZZ_SECS:-10} s (docs/fuzzing.md)"
ensure_cargo_fuzz
(cd "$REPO_ROOT" && RUSTC_BOOTSTRAP=1 cargo fuzz build --sanitizer none)
for target in "${FUZZ_TARGETS[@]}"; do
  say "fuzz: $target"
  fuzz_run "$target" "${PORTCULLIS_FUZZ_SECS:-10}"
done

say "All checks passed"
