#!/usr/bin/env bash
# Builds the repository's Containerfile with buildah and runs the image, on a machine that
# reaches no image registry: the two base images the Containerfile names (a Rust builder,
# a distroless runtime) are replaced by equivalents made here from Debian's packages with
# mmdebstrap:
#   runtime: libc6 and libgcc-s1 only, extracted (no shell, no package manager, like
#            gcr.io/distroless/cc);
#   builder: Debian minbase with gcc and libc6-dev, the host's Rust toolchain and crates
#            mounted read-only (rustup cannot download either), cargo offline.
# Then: the image's user and entrypoint, no shell in it, `cfimg --version`, and a migration
# into the built-in emulator (and an idempotent rerun) as the image's non-root user.
# Needs root, buildah, mmdebstrap, git (apt-get install -y --no-install-recommends buildah
# mmdebstrap). Everything it makes is under one temporary folder, removed at the end.
#
# `check.sh --prebuilt BINARY` (what CI runs) builds the Containerfile's run stage, unchanged,
# with its build stage replaced by a copy of BINARY (the release binary the tests just ran):
# the same image without a second cold cargo build (about 40 minutes on 2 cores). BINARY must
# link against no newer glibc than the runtime base's Debian suite (SUITE, default bookworm).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
started=$SECONDS
step() { echo "--- $* ($((SECONDS - started)) s)"; }

prebuilt=
if [[ ${1:-} == --prebuilt ]]; then
    prebuilt=$(realpath "${2:?check.sh: --prebuilt needs the path of a cfimg binary}")
    [[ -x $prebuilt ]] || { echo "check.sh: $prebuilt is not an executable" >&2; exit 1; }
fi

for tool in buildah mmdebstrap git; do
    command -v "$tool" >/dev/null || { echo "check.sh: $tool is missing: apt-get install -y --no-install-recommends buildah mmdebstrap" >&2; exit 1; }
done
sysroot=$(rustc --print sysroot)
registry=${CARGO_HOME:-$HOME/.cargo}/registry
suite=${SUITE:-bookworm}

work=$(mktemp -d /tmp/cfimg-container.XXXXXX)
B=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
cleanup() {
    "${B[@]}" rm --all >/dev/null 2>&1 || true
    "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step "base images from Debian's packages ($suite, mmdebstrap)"
# TARBALLS=DIR keeps the two root filesystems there and reuses them (for reruns by hand).
tarballs=${TARBALLS:-$work}
mkdir -p "$tarballs"
[[ -s $tarballs/runtime.tar ]] || mmdebstrap --quiet --variant=extract --include=libc6,libgcc-s1 "$suite" "$tarballs/runtime.tar"
[[ -n $prebuilt || -s $tarballs/builder.tar ]] || mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev,ca-certificates "$suite" "$tarballs/builder.tar"
base() { # NAME TARBALL [buildah config flags...]
    local name=$1 tarball=$2 c
    shift 2
    c=$("${B[@]}" from scratch)
    "${B[@]}" add --quiet "$c" "$tarball" /
    "${B[@]}" config "$@" "$c"
    "${B[@]}" commit --quiet "$c" "localhost/$name" >/dev/null
    "${B[@]}" rm "$c" >/dev/null
}
base cfimg-runtime-base "$tarballs/runtime.tar"
[[ -n $prebuilt ]] || base cfimg-builder-base "$tarballs/builder.tar" \
    --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env CARGO_HOME=/usr/local/cargo
rm -f "$work/runtime.tar" "$work/builder.tar"
echo "bases made in $((SECONDS - started)) s"

if [[ -n $prebuilt ]]; then
    step "the Containerfile's run stage, built with buildah from the prebuilt $prebuilt"
    # The build stage becomes a copy of the binary; every line from the run stage's FROM on is
    # the Containerfile's own.
    mkdir "$work/context"
    install -m 0755 "$prebuilt" "$work/context/cfimg"
    { printf 'ARG RUNTIME=gcr.io/distroless/cc-debian12:nonroot\nFROM scratch AS build\nCOPY cfimg /out/cfimg\n'
      sed -n '/^FROM ${RUNTIME}/,$p' Containerfile; } >"$work/context/Containerfile"
    grep -q '^COPY --from=build /out/cfimg' "$work/context/Containerfile" || { echo "check.sh: the Containerfile's run stage no longer copies /out/cfimg from the build stage" >&2; exit 1; }
    build_started=$SECONDS
    "${B[@]}" bud --quiet --isolation chroot --layers=false --pull-never \
        --build-arg RUNTIME=localhost/cfimg-runtime-base \
        -f "$work/context/Containerfile" -t localhost/cfimg:check "$work/context" >/dev/null
    echo "image built in $((SECONDS - build_started)) s"
else
    step "the Containerfile, built with buildah (cargo build --release --locked inside)"
    # The build context: the files git tracks, as a fresh clone has them.
    mkdir "$work/context"
    git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$work/context"
    build_started=$SECONDS
    "${B[@]}" bud --quiet --isolation chroot --layers=false --pull-never \
        --volume "$sysroot:/usr/local/rust:ro" \
        --volume "$registry:/usr/local/cargo/registry:ro" \
        --build-arg BUILDER=localhost/cfimg-builder-base \
        --build-arg RUNTIME=localhost/cfimg-runtime-base \
        --build-arg CARGO_NET_OFFLINE=true \
        -f "$work/context/Containerfile" -t localhost/cfimg:check "$work/context" >/dev/null
    echo "image built in $((SECONDS - build_started)) s"
fi
rm -rf "$work/context"

step "the image: non-root user, exec-form entrypoint, the binary only, no shell"
config=$("${B[@]}" inspect --type image localhost/cfimg:check | python3 -c 'import json, sys; c = json.load(sys.stdin)["OCIv1"]["config"]; print(c.get("User"), json.dumps(c.get("Entrypoint")))')
echo "user and entrypoint: $config"
[[ $config == '65532:65532 ["/usr/local/bin/cfimg"]' ]] || { echo "check.sh: unexpected user or entrypoint: $config" >&2; exit 1; }
c=$("${B[@]}" from --quiet --pull=never localhost/cfimg:check)
root=$("${B[@]}" mount "$c")
for shell in bin/sh bin/bash bin/dash usr/bin/sh usr/bin/bash usr/bin/dash; do
    [[ ! -e $root/$shell ]] || { echo "check.sh: the image has a shell: /$shell" >&2; exit 1; }
done
echo "no shell; $(find "$root" -type f | wc -l) files, $(du -sh "$root" | cut -f1), cfimg $(du -h "$root/usr/local/bin/cfimg" | cut -f1)"
"${B[@]}" umount "$c" >/dev/null

step "buildah run: cfimg --version"
version=$("${B[@]}" run --isolation chroot "$c" -- /usr/local/bin/cfimg --version)
echo "$version"
[[ $version == "cfimg $(sed -nE 's/^version = "(.*)"/\1/p' Cargo.toml | head -1)" ]] || { echo "check.sh: unexpected version: $version" >&2; exit 1; }

step "buildah run: a migration into the built-in emulator, then an idempotent rerun, as uid 65532"
mkdir -p "$work/data"
cp -r "$repo/examples/images" "$work/data/images"
chown -R 65532:65532 "$work/data"
run=("${B[@]}" run --isolation chroot --volume "$work/data:/data" --workingdir /data "$c" -- /usr/local/bin/cfimg migrate /data/images --emulator --json)
first=$("${run[@]}")
echo "$first" | grep -E '"(uploaded|skipped|failed|rejected)"'
echo "$first" | grep -q '"uploaded": 8' || { echo "check.sh: the migration did not upload the 8 examples" >&2; exit 1; }
second=$("${run[@]}")
echo "$second" | grep -q '"skipped": 8' || { printf 'check.sh: the rerun did not skip the 8 examples:\n%s\n' "$second" >&2; exit 1; }
owner=$(stat -c %u "$work/data/cfimg-emulator.sqlite")
[[ $owner == 65532 ]] || { echo "check.sh: the ledger belongs to uid $owner, not 65532" >&2; exit 1; }
echo "rerun: 8 skipped; the ledger belongs to uid $owner"
"${B[@]}" rm "$c" >/dev/null

step "done"
echo "container check: ok in $((SECONDS - started)) s"
