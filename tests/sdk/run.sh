#!/usr/bin/env bash
# Conformance check of `cfimg emulator` against the official Cloudflare Python SDK.
# Usage (from the repo root): tests/sdk/run.sh [path/to/cfimg]   (default target/release/cfimg)
# The venv lives in ${SDK_VENV:-target/sdk-venv}; PYTHON picks the interpreter (default python3).
set -euo pipefail

venv="${SDK_VENV:-target/sdk-venv}"
bin="${1:-target/release/cfimg}"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check cloudflare==5.9.0; then
    echo "tests/sdk/run.sh: pip could not install cloudflare==5.9.0 into $venv" >&2
    exit 2
fi
exec "$venv/bin/python" tests/sdk/conformance.py "$bin"
