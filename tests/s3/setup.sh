#!/usr/bin/env bash
# Installs moto's S3 server (an S3-compatible server on loopback) for the bucket tests
# (tests/migrate/bucket.rs) and the `bucket` benchmark.
# Usage (from the repo root): tests/s3/setup.sh
# The venv lives in ${MOTO_VENV:-target/moto-venv}; PYTHON picks the interpreter (default python3).
# The tests look for $MOTO_VENV/bin/moto_server; without it they skip, unless CI is set.
set -euo pipefail

venv="${MOTO_VENV:-target/moto-venv}"
version=5.2.5

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==$version"; then
    echo "tests/s3/setup.sh: pip could not install moto[server]==$version into $venv" >&2
    exit 2
fi
"$venv/bin/moto_server" --help >/dev/null
echo "tests/s3/setup.sh: $venv/bin/moto_server (moto $version) is ready"
