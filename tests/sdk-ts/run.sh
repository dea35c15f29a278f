#!/usr/bin/env bash
# Conformance check of `cfimg emulator` against the official Cloudflare TypeScript SDK.
# Usage (from the repo root): tests/sdk-ts/run.sh [path/to/cfimg]   (default target/release/cfimg)
# Installs node and npm with apt-get when missing (a fresh Debian machine, as root), and the
# SDK into ${SDK_TS_DIR:-target/sdk-ts}; prints one line per call and `N passed, M failed`.
set -euo pipefail

# Pinned: the newest release on npm when this check was written (2026-12-06).
version=7.3.0
dir="${SDK_TS_DIR:-target/sdk-ts}"
bin="${1:-target/release/cfimg}"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get update && apt-get install -y --no-install-recommends nodejs npm && apt-get clean
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
    echo "tests/sdk-ts/run.sh: node $(node --version) is too old (the SDK needs fetch: node 18 or later)" >&2
    exit 2
fi
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"private": true}' > "$dir/package.json"
if ! npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "cloudflare@$version" >&2; then
    echo "tests/sdk-ts/run.sh: npm could not install cloudflare@$version into $dir" >&2
    exit 2
fi
exec node tests/sdk-ts/conformance.cjs "$bin" "$dir"
