#!/usr/bin/env bash
# Installs Azurite (Microsoft's Azure Storage emulator, from npm) for the Azure bucket tests
# (tests/migrate/bucket_azure.rs).
# Usage (from the repo root): tests/azure/setup.sh
# It lives in ${AZURITE_PREFIX:-target/azurite} (an npm prefix); the tests start
# $AZURITE_PREFIX/node_modules/.bin/azurite-blob on a free port. Without it they skip, unless CI is set.
set -euo pipefail

prefix="${AZURITE_PREFIX:-target/azurite}"
version=3.37.0

if ! command -v npm >/dev/null; then
    echo "tests/azure/setup.sh: npm is needed (Debian: apt-get install nodejs npm)" >&2
    exit 2
fi
mkdir -p "$prefix"
if ! npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$version" >/dev/null; then
    echo "tests/azure/setup.sh: npm could not install azurite@$version into $prefix" >&2
    exit 2
fi
"$prefix/node_modules/.bin/azurite-blob" --help >/dev/null
echo "tests/azure/setup.sh: $prefix/node_modules/.bin/azurite-blob (azurite $version) is ready"
