#!/usr/bin/env bash
# Installs gcp-storage-emulator (a Google Cloud Storage JSON API emulator, from PyPI) for the
# GCS bucket tests (tests/migrate/bucket_gcs.rs).
# Usage (from the repo root): tests/gcs/setup.sh
# The venv lives in ${GCS_EMULATOR_VENV:-target/gcs-venv}; PYTHON picks the interpreter
# (default python3). The tests start $GCS_EMULATOR_VENV/bin/gcp-storage-emulator on a free
# port; without it they skip, unless CI is set.
set -euo pipefail

venv="${GCS_EMULATOR_VENV:-target/gcs-venv}"
version=2026.7.19

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "gcp-storage-emulator==$version"; then
    echo "tests/gcs/setup.sh: pip could not install gcp-storage-emulator==$version into $venv" >&2
    exit 2
fi
"$venv/bin/gcp-storage-emulator" --help >/dev/null
echo "tests/gcs/setup.sh: $venv/bin/gcp-storage-emulator (gcp-storage-emulator $version) is ready"
