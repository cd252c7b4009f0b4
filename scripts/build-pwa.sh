#!/usr/bin/env bash
# Builds the demo PWA's served tree (examples/pwa): installs and builds the SDK
# (clients/web: `npm ci` when its lock file changed, then `npm run build` → clients/web/dist) and
# copies clients/web/dist/* to examples/pwa/vendor/portcullis-client/ (generated, git-ignored),
# where the app imports it from (/vendor/portcullis-client/index.js).
#
# Used by scripts/demo.sh and by the browser tests (crates/portcullis/tests/browser_pwa.rs runs it
# once per test process), so the demo and the tests serve the same tree. Safe to run concurrently:
# everything happens under an exclusive lock on examples/pwa/vendor/.build.lock.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

SDK_DIR="$REPO_ROOT/clients/web"
APP_DIR="$REPO_ROOT/examples/pwa"
VENDOR="$APP_DIR/vendor/portcullis-client"

[ -f "$SDK_DIR/package.json" ] || die "clients/web/package.json not found: the SDK is missing"
command -v npm >/dev/null || die "npm is needed to build clients/web"

mkdir -p "$APP_DIR/vendor"
exec 8>"$APP_DIR/vendor/.build.lock"
flock 8

ensure_npm_ci "$SDK_DIR" typescript

say "npm run build in clients/web"
(cd "$SDK_DIR" && npm run build --silent)
[ -f "$SDK_DIR/dist/index.js" ] || die "clients/web/dist/index.js was not built"

say "Copying clients/web/dist to examples/pwa/vendor/portcullis-client"
rm -rf "$VENDOR.tmp"
cp -R "$SDK_DIR/dist" "$VENDOR.tmp"
# The list of the SDK's modules, which the service worker precaches with the app shell (so the
# app opens offline): precache.json, ["/vendor/portcullis-client/index.js", ...].
(
  cd "$VENDOR.tmp"
  first=1
  printf '['
  for f in *.js; do
    [ "$first" -eq 1 ] || printf ','
    first=0
    printf '"/vendor/portcullis-client/%s"' "$f"
  done
  printf ']\n'
) >"$VENDOR.tmp/precache.json"
rm -rf "$VENDOR"
mv "$VENDOR.tmp" "$VENDOR"
printf '    served tree ready: %s\n' "${APP_DIR#"$REPO_ROOT"/}"
