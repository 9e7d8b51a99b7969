#!/usr/bin/env bash
# The console's third-party assets, fetched from the npm registry and checked against the
# pinned integrity hash (never committed): xterm.js for the server terminal page.
# Usage: scripts/fetch-console-assets.sh [DIR]   (default web/vendor/xterm, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-${MAAS_CONSOLE_ASSETS_DIR:-web/vendor/xterm}}"
VERSION=6.0.0
URL="https://registry.npmjs.org/@xterm/xterm/-/xterm-$VERSION.tgz"
INTEGRITY="sha512-TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg=="

if [ -f "$DIR/VERSION" ] && [ "$(cat "$DIR/VERSION")" = "$VERSION $INTEGRITY" ] \
   && [ -s "$DIR/xterm.js" ] && [ -s "$DIR/xterm.css" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -sSfL --retry 3 -o "$tmp/xterm.tgz" "$URL"
actual="sha512-$(openssl dgst -sha512 -binary "$tmp/xterm.tgz" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
  echo "fetch-console-assets: $URL does not match its pinned integrity ($actual)" >&2
  exit 1
fi
tar -xzf "$tmp/xterm.tgz" -C "$tmp" package/lib/xterm.js package/css/xterm.css package/LICENSE
mkdir -p "$DIR"
cp "$tmp/package/lib/xterm.js" "$tmp/package/css/xterm.css" "$tmp/package/LICENSE" "$DIR/"
echo "$VERSION $INTEGRITY" > "$DIR/VERSION"
echo "xterm.js $VERSION in $DIR"
