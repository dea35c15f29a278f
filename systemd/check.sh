#!/usr/bin/env bash
# CI check of the systemd units: no systemd needs to be running and no cfimg binary needs
# to exist. For each unit:
#   1. `systemd-analyze security --offline=yes --threshold=20`: fails when the overall
#      exposure is above 2.0 (the threshold is compared with the exposure times ten;
#      systemd-analyze(1): "greater than that set by the user"). The exposure line is printed.
#   2. `systemd-analyze verify` against a scratch root that holds a stand-in
#      /usr/local/bin/cfimg (verify refuses a unit whose ExecStart= binary is missing) and a
#      copy of the system's unit directory (for network-online.target and friends). verify
#      exits 0 on unknown keys and unparsable values, so any line it prints fails the check.
# Usage: bash systemd/check.sh [UNIT_FILE...]   (default: the three units in systemd/)
set -euo pipefail
cd "$(dirname "$0")/.."

threshold=20 # exposure 2.0 ("OK")

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "check.sh: systemd-analyze is missing; installing the systemd package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends systemd >/dev/null
        if ! command -v systemd-analyze >/dev/null 2>&1; then
            echo "check.sh: FAIL: systemd-analyze is still missing after installing systemd" >&2
            exit 1
        fi
    else
        echo "check.sh: FAIL: systemd-analyze is missing and cannot be installed here" \
            "(needs root and apt-get): install the systemd package" >&2
        exit 1
    fi
fi

# --offline and --threshold arrived in systemd 250.
version=$(systemd-analyze --version | sed -nE '1s/^systemd ([0-9]+).*/\1/p')
if [ -z "$version" ] || [ "$version" -lt 250 ]; then
    echo "check.sh: FAIL: systemd-analyze ${version:-(unknown version)} is too old: 250 or later is needed for --offline" >&2
    exit 1
fi

if [ $# -gt 0 ]; then units=("$@"); else units=(systemd/cfimg.service systemd/cfimg-migrate.service systemd/cfimg-serve.service); fi

unitdir=
for d in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -e "$d/sysinit.target" ]; then unitdir=$d; break; fi
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/bin/cfimg"
chmod 0755 "$root/usr/local/bin/cfimg"
if [ -n "$unitdir" ]; then cp -a "$unitdir" "$root/usr/lib/systemd/system"; fi

status=0
echo "systemd-analyze: systemd $version; failing above exposure $((threshold / 10)).$((threshold % 10))"
for unit in "${units[@]}"; do
    name=$(basename "$unit")
    if out=$(systemd-analyze security --offline=yes --threshold="$threshold" --no-pager "$unit" 2>&1); then
        echo "$out" | grep -F 'Overall exposure level' || true
    else
        echo "$out"
        echo "check.sh: FAIL: $name: exposure above $((threshold / 10)).$((threshold % 10)) (or the unit could not be read)"
        status=1
    fi

    if [ -z "$unitdir" ]; then
        echo "check.sh: verify of $name skipped: no system unit directory (sysinit.target) found"
        continue
    fi
    cp "$unit" "$root/etc/systemd/system/$name"
    if out=$(systemd-analyze verify --root="$root" --man=no "$name" 2>&1) && [ -z "$out" ]; then
        echo "verify $name: clean"
    else
        echo "$out"
        echo "check.sh: FAIL: systemd-analyze verify $name printed the lines above"
        status=1
    fi
done
exit "$status"
