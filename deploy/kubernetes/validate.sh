#!/usr/bin/env bash
# Validates every manifest in deploy/kubernetes/ against the Kubernetes schemas with
# kubernetes-validate (PyPI), strictly (an unknown field is an error). The package bundles
# the schemas of each Kubernetes version it knows; the validation runs without a network
# (unshare -n) to prove it needs none. A manifest with a misspelt field must fail, so that a
# validator that passes everything would be noticed.
# Usage: bash deploy/kubernetes/validate.sh [VENV]   (default VENV: target/k8s-venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${1:-target/k8s-venv}
version=1.37.0   # kubernetes-validate, and the Kubernetes version it validates against by default

[[ -x $venv/bin/kubernetes-validate ]] || {
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version"
}
schemas=$("$venv/bin/python" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')
echo "bundled schemas: $(ls "$schemas" | grep -c strict) Kubernetes versions (strict), in $schemas"

offline=()
if unshare -n true 2>/dev/null; then offline=(unshare -n); echo "validating with no network (unshare -n)"; fi
manifests=(deploy/kubernetes/*.yaml)
"${offline[@]}" "$venv/bin/kubernetes-validate" --strict "${manifests[@]}"

bad=$(mktemp --suffix=.yaml)
trap 'rm -f "$bad"' EXIT
sed 's/^  completionMode: Indexed/  completionMod: Indexed/' deploy/kubernetes/job.yaml > "$bad"
if "${offline[@]}" "$venv/bin/kubernetes-validate" --strict --quiet "$bad" >/dev/null 2>&1; then
    echo "validate.sh: a Job with a misspelt field passed: the validator checks nothing" >&2
    exit 1
fi
echo "ok: ${#manifests[@]} manifests valid; a misspelt field is refused"
