#!/usr/bin/env bash
# cfimg benchmarks against the emulator run as a separate process on this machine.
# Prints figures; asserts nothing (targets are judged by people, not by CI).
#
#   benches/run.sh [all|throughput|noop|large|rate|batch|emulator|manifest|bucket|bucket-listing|manage|watch|redirects|rewrite]
#
# Needs: a release build (built if missing), python3, GNU time (/usr/bin/time),
# curl; `wrk` for the emulator-only figure (apt-get install wrk).
# Env: BENCH_DIR (scratch space, default a new temp dir; the large case writes 1.8 GB),
#      NOOP_FILES (default 100000; 1000000 is the million-file case, 1,000 folders, about
#      4 GB of disk in 4 kB blocks), THROUGHPUT_FILES (default 5000),
#      MANIFEST_LINES (default 1000000; a list of sizes like "1000000 10000000" runs each).
#      BATCH_SECS (default 10: the batch case uploads this many seconds' worth at N x 200/s),
#      BATCH_SERVERS (default "headers plain"; also "bucket", the emulator's default limit),
#      BATCH_TOKENS (default "1 3": the numbers of batch tokens tried; "10" is 2,000 uploads/s),
#      BATCH_API_LIMIT (default 40/10s: the API host's limit in the batch case, 1200/300 s
#      scaled down; with many tokens use 1200/300s, whose start-up room fetches every token at once).
#      BATCH_RATE (default empty: cfimg's own --batch-rate default; e.g. 200, a token's exact share).
#      MANAGE_ROWS (default 100000: files migrated, then exported, verified, rebuilt).
#      BUCKET_OBJECTS (default 10000; the bucket case runs moto's S3 server from
#      tests/s3/setup.sh's venv, installing it if missing).
#      BUCKET_KEYS (default 1000000; a list like "1000000 10000000" runs each), BUCKET_GET_KEYS
#      (default 100000; empty skips it): the bucket-listing case's synthetic buckets
#      (benches/s3-synth.py, Python's standard library only).
#      WATCH_FILES (default 100000: files the idle daemon watches, in folders of 100),
#      WATCH_BURST (default 10000: files written at once into the watched folder).
#      REDIRECT_ROWS (default 1000000: uploaded rows generated into a ledger for `redirects`).
#      REWRITE_MB (default 1024: the generated SQL dump `rewrite` rewrites; the case needs
#      about 3x that on disk while it runs: dump, output, journal).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${CFIMG_BIN:-$ROOT/target/release/cfimg}
WORK=${BENCH_DIR:-$(mktemp -d)}
WHAT=${1:-all}
NOOP_FILES=${NOOP_FILES:-100000}
MANIFEST_LINES=${MANIFEST_LINES:-1000000}
THROUGHPUT_FILES=${THROUGHPUT_FILES:-5000}
BUCKET_OBJECTS=${BUCKET_OBJECTS:-10000}
BATCH_SECS=${BATCH_SECS:-10}
BATCH_SERVERS=${BATCH_SERVERS:-headers plain}
BATCH_TOKENS=${BATCH_TOKENS:-1 3}
BATCH_API_LIMIT=${BATCH_API_LIMIT:-40/10s}
BATCH_RATE=${BATCH_RATE:-}
MANAGE_ROWS=${MANAGE_ROWS:-100000}
WATCH_FILES=${WATCH_FILES:-100000}
WATCH_BURST=${WATCH_BURST:-10000}
[ -x "$BIN" ] || cargo build --release --quiet
mkdir -p "$WORK"
echo "# cfimg benchmarks: $(nproc) cores, $(date -u +%F), scratch $WORK"

EMU_PID=""
stop_emulator() {
  if [ -n "$EMU_PID" ]; then kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; EMU_PID=""; fi
}
MOTO_PID=""
WATCH_PID=""
SYNTH_PID=""
stop_synth() {
  if [ -n "$SYNTH_PID" ]; then kill "$SYNTH_PID" 2>/dev/null || true; wait "$SYNTH_PID" 2>/dev/null || true; SYNTH_PID=""; fi
}
stop_all() {
  if [ -n "$WATCH_PID" ]; then kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; WATCH_PID=""; fi
  stop_emulator
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; MOTO_PID=""; fi
  stop_synth
}
trap stop_all EXIT

# start_emulator FLAGS...: a fresh emulator on a free port; sets API, TOKEN, ACCOUNT.
start_emulator() {
  stop_emulator
  "$BIN" emulator --listen 127.0.0.1:0 "$@" >"$WORK/emu.out" 2>"$WORK/emu.err" &
  EMU_PID=$!
  # It prints `export NAME='value'` lines: read them the way a user does, with the shell.
  for _ in $(seq 1 200); do grep -q '^export CLOUDFLARE_API_TOKEN=' "$WORK/emu.out" 2>/dev/null && break; sleep 0.05; done
  API=$(. "$WORK/emu.out" 2>/dev/null; printf %s "${CFIMG_API_BASE_URL:-}")
  TOKEN=$(. "$WORK/emu.out"; printf %s "${CLOUDFLARE_API_TOKEN:-}")
  ACCOUNT=$(. "$WORK/emu.out"; printf %s "${CLOUDFLARE_ACCOUNT_ID:-}")
  BATCH=$(. "$WORK/emu.out"; printf %s "${CFIMG_BATCH_BASE_URL:-}")
  [ -n "$API" ] || { echo "emulator did not start:"; cat "$WORK/emu.err"; exit 1; }
  # cfimg pointed at this emulator.
  CFIMG=(env ${CFIMG_ENV:-} "CLOUDFLARE_API_TOKEN=$TOKEN" "CLOUDFLARE_ACCOUNT_ID=$ACCOUNT" "CFIMG_API_BASE_URL=$API" "CFIMG_BATCH_BASE_URL=$BATCH" RUST_LOG=warn "$BIN")
}


# timed NAME CMD...: runs CMD under GNU time; sets ELAPSED USER_S SYS_S RSS_KB.
timed() {
  local name=$1; shift
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/$name.time" "$@"
  read -r ELAPSED USER_S SYS_S RSS_KB <"$WORK/$name.time"
}

# make_files DIR COUNT BYTES PER_DIR: valid, distinct 1x1 PNGs of BYTES bytes each (the
# emulator decodes uploads): the padding is a private ancillary chunk with a correct CRC.
make_files() {
  python3 - "$@" <<'PY'
import os, struct, sys, zlib
root, count, size, per_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
head = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)))
tail = chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")
pad = max(size - len(head) - len(tail) - 12, 8)
block = os.urandom(pad)
for i in range(count):
    d = os.path.join(root, f"d{i // per_dir:04d}")
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"img{i:07d}.png"), "wb") as f:
        f.write(head + chunk(b"cfPd", i.to_bytes(8, "little") + block[8:]) + tail)
PY
}

throughput() {
  local n=$THROUGHPUT_FILES dir="$WORK/throughput"
  [ -d "$dir" ] || make_files "$dir" "$n" 100000 500
  start_emulator --rate-limit off
  rm -f "$WORK/throughput.sqlite"*
  timed cfimg "${CFIMG[@]}" migrate "$dir" --ledger "$WORK/throughput.sqlite" --rate 100000 --concurrency 16 --json >"$WORK/throughput.json"
  local c_el=$ELAPSED
  python3 - "$n" "$ELAPSED" "$USER_S" "$SYS_S" "$RSS_KB" "$WORK/throughput.json" <<'PY'
import json, sys
n, el, us, sy, rss = int(sys.argv[1]), *map(float, sys.argv[2:6])
s = json.load(open(sys.argv[6]))
assert s["uploaded"] == n, s
print(f"throughput: {n} files of 100 kB: {el:.2f} s wall, {n/el:.0f} files/s, {n*1e5/1e6/el:.1f} MB/s, "
      f"client CPU {1e6*(us+sy)/n:.0f} us/file, client peak RSS {rss/1024:.1f} MB")
PY
  start_emulator --rate-limit off
  timed curl bash -c "find '$dir' -type f -print0 | xargs -0 -P 16 -I{} curl -sf -o /dev/null -H 'Authorization: Bearer $TOKEN' -F file=@{} '$API/accounts/$ACCOUNT/images/v1'"
  python3 -c "import sys; c,x=map(float,sys.argv[1:3]); n=int(sys.argv[3]); print(f'throughput: xargs -P 16 curl: {x:.2f} s wall, {n/x:.0f} files/s; cfimg is {x/c:.1f}x faster')" "$c_el" "$ELAPSED" "$n"
}

# NOOP_FILES small files in folders of 1,000 (1,000 folders at NOOP_FILES=1000000), migrated
# once (not timed), then the unchanged rerun against `find -printf` over the same tree,
# NOOP_RUNS times (default 2) each way: "full" with the ledger's clean-close marker removed
# first (the page-by-page check at open, as before the marker existed), "marked" with it.
noop() {
  local n=$NOOP_FILES dir="$WORK/noop-$NOOP_FILES" i
  if [ ! -d "$dir" ]; then
    local t0=$SECONDS
    make_files "$dir" "$n" 64 1000
    echo "no-op: generated $n files in $(find "$dir" -mindepth 1 -maxdepth 1 -type d | wc -l) folders in $((SECONDS - t0)) s (not counted)"
  fi
  # The emulator's image quota (100,000 by default) must hold every file.
  start_emulator --rate-limit off --max-images $((n + 1000))
  rm -f "$WORK/noop.sqlite"*
  timed noop-first "${CFIMG[@]}" migrate "$dir" --ledger "$WORK/noop.sqlite" --rate 100000 --concurrency 16 --json >"$WORK/noop-first.json"
  echo "no-op: first run (uploads, not counted) ${ELAPSED} s; ledger $(du -m "$WORK/noop.sqlite" | cut -f1) MB, clean-close marker: $([ -f "$WORK/noop.sqlite-clean" ] && echo yes || echo NO)"
  find "$dir" -type f -printf '%s %T@\n' >/dev/null # warm the cache for both
  for i in $(seq 1 "${NOOP_RUNS:-2}"); do
    timed find find "$dir" -type f -printf '%s %T@\n' >/dev/null
    local f_el=$ELAPSED f_user=$USER_S f_sys=$SYS_S
    for how in full marked; do
      [ "$how" = full ] && rm -f "$WORK/noop.sqlite-clean"
      timed noop "${CFIMG[@]}" migrate "$dir" --ledger "$WORK/noop.sqlite" --rate 100000 --json >"$WORK/noop.json"
      python3 - "$n" "$f_el" "$ELAPSED" "$RSS_KB" "$WORK/noop.json" "$how" "$USER_S" "$SYS_S" "$f_user" "$f_sys" <<'PY'
import json, sys
n, f, c, rss = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
how, cpu = sys.argv[6], float(sys.argv[7]) + float(sys.argv[8])
f_cpu = float(sys.argv[9]) + float(sys.argv[10])
s = json.load(open(sys.argv[5]))
assert s["skipped"] == n and s["uploaded"] == 0, s
print(f"no-op rerun ({how} check at open): {n} files: cfimg {c:.2f} s wall, {cpu:.2f} s CPU; "
      f"find {f:.2f} s wall, {f_cpu:.2f} s CPU; ratio {c/f:.2f}x wall, {cpu/f_cpu:.2f}x CPU; "
      f"peak RSS {rss/1024:.1f} MB")
PY
    done
  done
}

large() {
  local dir="$WORK/large"
  [ -d "$dir" ] || make_files "$dir" 200 9000000 50
  start_emulator --rate-limit off
  rm -f "$WORK/large.sqlite"*
  timed large "${CFIMG[@]}" migrate "$dir" --ledger "$WORK/large.sqlite" --rate 100000 --concurrency 16 --json >"$WORK/large.json"
  python3 - "$ELAPSED" "$RSS_KB" "$WORK/large.json" <<'PY'
import json, sys
el, rss = float(sys.argv[1]), float(sys.argv[2])
s = json.load(open(sys.argv[3]))
assert s["uploaded"] == 200, s
print(f"large files: 200 x 9 MB at concurrency 16: {el:.1f} s, {1800/el:.0f} MB/s, client peak RSS {rss/1024:.1f} MB")
PY
}

rate() {
  local dir="$WORK/rate"
  [ -d "$dir" ] || make_files "$dir" 750 2000 250
  start_emulator --rate-limit 50/1s
  rm -f "$WORK/rate.sqlite"*
  timed rate "${CFIMG[@]}" migrate "$dir" --ledger "$WORK/rate.sqlite" --rate 50 --concurrency 16 --json >"$WORK/rate.json"
  local throttled
  throttled=$(curl -sf "${API%/client/v4}/__emulator/state" | python3 -c 'import json,sys; print(json.load(sys.stdin)["throttled"])')
  python3 - "$WORK/rate.json" "$throttled" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
achieved = s["requests"] / s["elapsed_secs"]
print(f"rate limit 50/s on both sides: {s['requests']} requests in {s['elapsed_secs']:.2f} s = {achieved:.2f} req/s "
      f"({achieved/50*100:.1f}% of 50), 429s seen by cfimg {s['throttled']}, served by the emulator {sys.argv[2]}")
PY
}

# The batch transport at the batch host's real limit (200/s per batch token) with the API
# host's 1200/300 s scaled down to 40/10 s (the same 4/s; BATCH_API_LIMIT), for each kind of
# batch server in BATCH_SERVERS and N = 1 and 3 tokens (BATCH_TOKENS), at cfimg's default
# --batch-rate (or BATCH_RATE): uploads/s as a share of N x 200/s, 429s served, API requests
# spent on tokens. The scaled-down API window leaves room for only a few requests at once at
# start-up, so with many tokens their lanes start one by one; 1200/300s is the real host's. Servers:
#   headers  the strict server of issue 20: a 1 s sliding window per token, and
#            `Ratelimit: "default";r=..;t=..` (whole seconds) + `Ratelimit-Policy` on every answer
#   plain    the same sliding window, no Ratelimit headers (429s still carry retry-after)
#   bucket   the emulator's default: a token bucket with a 1 s penalty, "burst" policy headers
batch() {
  local dir="$WORK/batch" n server flags rate=()
  [ -z "$BATCH_RATE" ] || rate=(--batch-rate "$BATCH_RATE")
  for server in $BATCH_SERVERS; do
    case $server in
      headers) flags=(--batch-window sliding) ;;
      plain) flags=(--batch-window sliding --no-batch-ratelimit-headers) ;;
      bucket) flags=(--penalty 1) ;;
      *) echo "BATCH_SERVERS: unknown server $server (headers, plain or bucket)"; exit 2 ;;
    esac
    for tokens in $BATCH_TOKENS; do
      n=$((BATCH_SECS * 200 * tokens))
      rm -rf "$dir"; make_files "$dir" "$n" 2000 1000
      start_emulator --rate-limit "$BATCH_API_LIMIT" --batch-rate-limit 200/1s "${flags[@]}"
      rm -f "$WORK/batch.sqlite"*
      timed batch "${CFIMG[@]}" migrate "$dir" --ledger "$WORK/batch.sqlite" --transport batch \
        --batch-tokens "$tokens" --concurrency $((16 * tokens)) "${rate[@]}" --json >"$WORK/batch.json"
      curl -sf "${API%/client/v4}/__emulator/state" >"$WORK/batch-state.json"
      python3 - "${BATCH_RATE:-default}" "$server" "$n" "$tokens" "$WORK/batch.json" "$WORK/batch-state.json" "$USER_S" "$SYS_S" <<'PY'
import json, sys
rate, server, n, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s, st = json.load(open(sys.argv[5])), json.load(open(sys.argv[6]))
us, sy = float(sys.argv[7]), float(sys.argv[8])
assert s["uploaded"] == n and s["failed"] == 0, s
served = lambda route, status=None: sum(r["count"] for r in st["requests"]
    if r["route"] == route and (status is None or r["status"] == status))
batch_429 = served("POST /images/v1", 429)
api_429 = sum(r["count"] for r in st["requests"]
    if r["route"].split(" ", 1)[-1].startswith("/client/v4") and r["status"] == 429)
tokens_spent = served("GET /client/v4/accounts/{account_id}/images/v1/batch_token")
ups = n / s["elapsed_secs"]
# The upload phase alone, first to last image stored (the emulator's `uploaded`, in ms):
# start-up (token, lookups) and shutdown left out. The target is the whole run's share.
from datetime import datetime
at = sorted(datetime.fromisoformat(i["uploaded"].replace("Z", "+00:00")) for i in st["images"])
phase = (at[-1] - at[0]).total_seconds() if len(at) > 1 else 0.0
phase_ups = (len(at) - 1) / phase if phase > 0 else float("nan")
print(f"batch, server {server}, --batch-rate {rate}, {tokens} token(s): {n} files of 2 kB in {s['elapsed_secs']:.2f} s = {ups:.1f} uploads/s "
      f"({ups / (200 * tokens):.3f} of {200 * tokens}/s, whole run; upload phase only, first to last stored: {phase:.2f} s = "
      f"{phase_ups:.1f}/s = {phase_ups / (200 * tokens):.3f}; batch host {s['batch_req_per_sec']:.1f} req/s); "
      f"429s served: batch {batch_429}, API {api_429}; API requests {s['api_requests']} "
      f"({tokens_spent} for tokens); client CPU {us + sy:.1f} s = {(us + sy) / n * 1e6:.0f} us per upload")
PY
    done
  done
}

emulator_only() {
  command -v wrk >/dev/null || { echo "emulator: skipped (install wrk)"; return; }
  start_emulator --rate-limit off
  python3 - "$WORK/wrk.lua" "$TOKEN" <<'PY'
import os, struct, sys, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
# A valid 1x1 PNG of 100000 bytes: the emulator decodes uploads.
head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
tail = chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")
body = head + chunk(b"cfPd", os.urandom(100000 - len(head) - len(tail) - 12)) + tail
b = "cfimgbench"
form = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n").encode() + body + f"\r\n--{b}--\r\n".encode()
open(sys.argv[1] + ".body", "wb").write(form)
open(sys.argv[1], "w").write(f"""
local f = io.open("{sys.argv[1]}.body", "rb"); local body = f:read("*all"); f:close()
wrk.method = "POST"; wrk.body = body
wrk.headers["Authorization"] = "Bearer {sys.argv[2]}"
wrk.headers["Content-Type"] = "multipart/form-data; boundary={b}"
""")
PY
  wrk -t2 -c32 -d5s -s "$WORK/wrk.lua" "$API/accounts/$ACCOUNT/images/v1" >"$WORK/wrk.out"
  echo "emulator alone (wrk, 2 threads, 32 connections, 5 s, 100 kB auto-id uploads): $(grep Requests/sec "$WORK/wrk.out" | awk '{print $2}') uploads/s; $(grep -c . "$WORK/wrk.out" >/dev/null && grep 'Non-2xx' "$WORK/wrk.out" || echo 'all 2xx')"
}

# A URL manifest planned end to end without sending anything (--dry-run: no emulator, no
# request): reading, parsing, normalizing, the duplicate check (its filter and spill file),
# the quick check and the decision for every line. Peak RSS is the whole process's.
manifest() {
  local n file
  for n in $MANIFEST_LINES; do
    file="$WORK/manifest-$n.txt"
    [ -f "$file" ] || python3 - "$file" "$n" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("# generated by benches/run.sh\n")
    for i in range(n):
        f.write(f"https://images.example.com/catalog/{i % 1000:03d}/item-{i:09d}.jpg?v=1\n")
PY
    rm -f "$WORK/manifest.sqlite"*
    timed "manifest-$n" env RUST_LOG=warn "$BIN" migrate --manifest "$file" --ledger "$WORK/manifest.sqlite" --dry-run --json >"$WORK/manifest-$n.json"
    python3 - "$n" "$ELAPSED" "$RSS_KB" "$(stat -c %s "$file")" "$WORK/manifest-$n.json" "$USER_S" "$SYS_S" <<'PY'
import json, sys
n, el, rss, size = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
cpu = float(sys.argv[6]) + float(sys.argv[7])
s = json.load(open(sys.argv[5]))
assert s["would_upload"] == n, s
print(f"manifest dry run: {n:,} URLs ({size/1e6:.0f} MB of text): {el:.1f} s (CPU {cpu:.1f} s), {n/el:,.0f} lines/s, peak RSS {rss/1024:.1f} MB")
PY
  done
}

# bucket: BUCKET_OBJECTS small real PNGs in moto's S3 server on loopback; the first run's
# time, then an unchanged rerun's time and its GetObject count (from moto's request log).
bucket() {
  local n=$BUCKET_OBJECTS venv=${MOTO_VENV:-target/moto-venv}
  [ -x "$venv/bin/moto_server" ] || bash tests/s3/setup.sh >/dev/null
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" 2>"$WORK/moto.log" >/dev/null &
  MOTO_PID=$!
  local endpoint="http://127.0.0.1:$port"
  for _ in $(seq 1 300); do curl -sf -o /dev/null "$endpoint/moto-api/data.json" && break; sleep 0.1; done
  export AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
  local t0=$SECONDS
  "$venv/bin/python" - "$endpoint" "$n" <<'PY'
import struct, sys, zlib, os
from concurrent.futures import ThreadPoolExecutor
import boto3
endpoint, n = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
s3.create_bucket(Bucket="bench")
def png(i):
    w = h = 16
    raw = b"".join(b"\0" + os.urandom(w * 3) for _ in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
def put(i):
    s3.put_object(Bucket="bench", Key=f"img/d{i // 1000:03d}/img{i:07d}.png", Body=png(i))
with ThreadPoolExecutor(8) as pool:
    list(pool.map(put, range(n)))
PY
  echo "bucket: wrote $n objects into moto in $((SECONDS - t0)) s"
  start_emulator --rate-limit off
  rm -f "$WORK/bucket.sqlite"*
  local gets_before
  timed bucket1 "${CFIMG[@]}" migrate s3://bench/img --endpoint-url "$endpoint" --ledger "$WORK/bucket.sqlite" --rate 100000 --concurrency 16 --json >"$WORK/bucket1.json"
  local first=$ELAPSED first_rss=$RSS_KB
  gets_before=$(grep -c '"GET /bench/img/' "$WORK/moto.log" || true)
  timed bucket2 "${CFIMG[@]}" migrate s3://bench/img --endpoint-url "$endpoint" --ledger "$WORK/bucket.sqlite" --rate 100000 --concurrency 16 --json >"$WORK/bucket2.json"
  local gets_after
  gets_after=$(grep -c '"GET /bench/img/' "$WORK/moto.log" || true)
  python3 - "$n" "$first" "$first_rss" "$ELAPSED" "$RSS_KB" "$((gets_after - gets_before))" "$gets_before" "$WORK/bucket1.json" "$WORK/bucket2.json" <<'PY'
import json, sys
n, first, rss1, second, rss2 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
gets2, gets1 = int(sys.argv[6]), int(sys.argv[7])
s1, s2 = json.load(open(sys.argv[8])), json.load(open(sys.argv[9]))
assert s1["uploaded"] == n, s1
assert s2["skipped"] == n and s2["uploaded"] == 0, s2
print(f"bucket: {n} objects on moto: first run {first:.1f} s ({n/first:.0f} objects/s, {gets1} GetObject, peak RSS {rss1/1024:.1f} MB); "
      f"unchanged rerun {second:.2f} s, {gets2} GetObject, 0 uploads, peak RSS {rss2/1024:.1f} MB")
PY
  stop_all
}

# bucket-listing: a bucket of BUCKET_KEYS keys per size (default 1000000; "1000000 10000000"
# for the ten-million case) served by benches/s3-synth.py, which generates every answer from
# the key's index and stores nothing per key (moto cannot hold millions of objects). Each
# size is planned end to end with --dry-run --s3-mode presign: the listing (ListObjectsV2
# pages of 1,000, continuation tokens, through object_store), the quick check, a signed GET
# URL and the decision for every key; no GET, no ledger, no Cloudflare request. That is the
# listing's cost and memory: in download mode a dry run GETs every object (it checks each
# image), a rate the server's single Python thread of answers sets, so that path is run over
# BUCKET_GET_KEYS keys only (default 100000; empty skips it). Peak RSS is cfimg's whole
# process; server CPU is the Python server's.
BUCKET_KEYS=${BUCKET_KEYS:-1000000}
BUCKET_GET_KEYS=${BUCKET_GET_KEYS-100000}

# bucket_synth_run N MODE: a fresh synthetic bucket of N keys, one dry run in MODE (presign
# or download) over it, and the figures.
bucket_synth_run() {
  local n=$1 mode=$2 port=""
  stop_synth
  python3 "$ROOT/benches/s3-synth.py" --keys "$n" >"$WORK/synth.port" 2>"$WORK/synth.err" &
  SYNTH_PID=$!
  for _ in $(seq 1 100); do port=$(head -n 1 "$WORK/synth.port" 2>/dev/null || true); [ -n "$port" ] && break; sleep 0.05; done
  [ -n "$port" ] || { echo "s3-synth.py did not start:"; cat "$WORK/synth.err"; exit 1; }
  rm -f "$WORK/bucket-synth.sqlite"*
  timed "bucket-synth-$n" env AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 RUST_LOG=warn \
    "$BIN" migrate s3://bench/img --endpoint-url "http://127.0.0.1:$port" --ledger "$WORK/bucket-synth.sqlite" \
    --dry-run --s3-mode "$mode" --json >"$WORK/bucket-synth-$n.json"
  curl -sf "http://127.0.0.1:$port/__synth/stats" >"$WORK/synth-stats.json"
  # The server's own CPU (utime + stime, in clock ticks), read before it is stopped.
  local server_ticks
  server_ticks=$(awk '{print $14 + $15}' "/proc/$SYNTH_PID/stat")
  stop_synth
  python3 - "$n" "$mode" "$ELAPSED" "$USER_S" "$SYS_S" "$RSS_KB" "$WORK/bucket-synth-$n.json" "$WORK/synth-stats.json" "$server_ticks" "$(getconf CLK_TCK)" <<'PY'
import json, sys
n, mode = int(sys.argv[1]), sys.argv[2]
el, us, sy, rss = map(float, sys.argv[3:7])
s, st = json.load(open(sys.argv[7])), json.load(open(sys.argv[8]))
server_cpu = int(sys.argv[9]) / int(sys.argv[10])
# Every key listed once, counted, and planned as an upload of its own size.
assert st["keys"] == n and st["keys_listed"] == n, st
assert s["discovered"] == n and s["would_upload"] == n and s["would_upload_bytes"] == st["bytes"], (s, st)
assert s["failed"] == 0 and s["rejected"] == 0 and s["ignored"] == 0, s
assert st["errors"] == 0 and st["heads"] == 0, st
assert st["gets"] == (n if mode == "download" else 0), st
what = "listing, presign: no GET" if mode == "presign" else "download mode: a GET per key"
print(f"bucket dry run ({what}): {n:,} keys in {st['list_pages']:,} pages: {el:.1f} s, {n/el:,.0f} keys/s, "
      f"cfimg CPU {us + sy:.1f} s ({(us + sy) / n * 1e6:.1f} us/key), server CPU {server_cpu:.1f} s, "
      f"{st['gets']:,} GETs, every key counted; peak RSS {rss/1024:.1f} MB")
PY
}

bucket_listing() {
  local n
  for n in $BUCKET_KEYS; do bucket_synth_run "$n" presign; done
  for n in $BUCKET_GET_KEYS; do bucket_synth_run "$n" download; done
  rm -f "$WORK/bucket-synth"*
}

# manage: export (CSV and JSON Lines), verify and ledger rebuild over MANAGE_ROWS items.
manage() {
  local n=$MANAGE_ROWS dir="$WORK/manage" l="$WORK/manage.sqlite"
  [ -d "$dir" ] || make_files "$dir" "$n" 64 1000
  start_emulator --rate-limit off
  rm -f "$l"*
  "${CFIMG[@]}" migrate "$dir" --ledger "$l" --rate 100000 --concurrency 16 --json >"$WORK/manage-first.json"
  timed export_csv "${CFIMG[@]}" --ledger "$l" export -o "$WORK/manage.csv"
  local csv_el=$ELAPSED csv_rss=$RSS_KB
  timed export_jsonl "${CFIMG[@]}" --ledger "$l" export --format jsonl -o "$WORK/manage.jsonl"
  local jsonl_el=$ELAPSED jsonl_rss=$RSS_KB
  timed verify "${CFIMG[@]}" --ledger "$l" verify --json >"$WORK/manage-verify.json"
  local v_el=$ELAPSED v_rss=$RSS_KB
  rm -f "$l"*
  timed rebuild "${CFIMG[@]}" --ledger "$l" ledger rebuild --source "$dir" --json >"$WORK/manage-rebuild.json"
  local r_el=$ELAPSED r_rss=$RSS_KB
  "${CFIMG[@]}" migrate "$dir" --ledger "$l" --rate 100000 --json >"$WORK/manage-rerun.json"
  python3 - "$n" "$csv_el" "$csv_rss" "$jsonl_el" "$jsonl_rss" "$v_el" "$v_rss" "$r_el" "$r_rss" "$WORK" <<'PY'
import json, sys
n = int(sys.argv[1]); w = sys.argv[10]
ce, cr, je, jr, ve, vr, re_, rr = map(float, sys.argv[2:10])
rows = sum(1 for _ in open(f"{w}/manage.csv", encoding="utf-8")) - 1
assert rows == n, rows
v = json.load(open(f"{w}/manage-verify.json"))
assert v["clean"] and v["listed"] == n, v
r = json.load(open(f"{w}/manage-rebuild.json"))
assert r["recorded"] == n, r
s = json.load(open(f"{w}/manage-rerun.json"))
assert s["uploaded"] == 0 and s["skipped"] == n, s
print(f"export csv: {n} rows in {ce:.2f} s ({n/ce:,.0f} rows/s), peak RSS {cr/1024:.1f} MB")
print(f"export jsonl: {n} rows in {je:.2f} s ({n/je:,.0f} rows/s), peak RSS {jr/1024:.1f} MB")
print(f"verify: {n} rows against {v['listed']} images in {v['pages']} pages ({v['requests']} requests): {ve:.2f} s, peak RSS {vr/1024:.1f} MB")
print(f"ledger rebuild: {n} files matched in {re_:.2f} s ({r['requests']} requests), peak RSS {rr/1024:.1f} MB; rerun after it: 0 uploads")
PY
}

# watch: `cfimg watch` as a daemon against the emulator. Latency from a file's close to its
# "uploaded" log line (JSON logs, matched by key in benches/watch_latency.py), with files
# written at a steady pace and in one burst; then its idle cost over WATCH_FILES unchanged
# files (migrated first, so the start-up scan uploads nothing).
WL=(python3 "$ROOT/benches/watch_latency.py")
WATCH_SETTLE=2

# watch_start NAME DIR FLAGS...: `cfimg watch DIR` in the background, its JSON log in
# $WORK/NAME.log and metrics at $METRICS; returns once it logs that it is ready. Sets
# WATCH_PID, WATCH_LAUNCH and READY_AT (Unix seconds).
watch_start() {
  local name=$1 dir=$2 port; shift 2
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  METRICS="http://127.0.0.1:$port/metrics"
  # CFIMG with RUST_LOG raised to info (the per-upload lines), set after its own warn.
  local cmd=("${CFIMG[@]:0:${#CFIMG[@]}-1}" RUST_LOG=cfimg=info "$BIN")
  WATCH_LAUNCH=$(date +%s.%N)
  # env execs cfimg, so $! is the daemon itself: SIGTERM and /proc/PID reach it directly.
  "${cmd[@]}" watch "$dir" --log-format json --settle "$WATCH_SETTLE" \
    --metrics-addr "127.0.0.1:$port" "$@" 2>"$WORK/$name.log" &
  WATCH_PID=$!
  READY_AT=$("${WL[@]}" wait-log "$WORK/$name.log" "ready: the start-up scan is queued" 900 "$WATCH_PID")
}

# watch_stop NAME: SIGTERM, and the daemon must exit 0.
watch_stop() {
  local rc=0
  kill -TERM "$WATCH_PID"
  wait "$WATCH_PID" || rc=$?
  WATCH_PID=""
  if [ "$rc" -ne 0 ]; then
    echo "watch: the daemon exited $rc after SIGTERM; the end of $WORK/$1.log:"
    tail -n 20 "$WORK/$1.log"
    exit 1
  fi
}

# metric NAME: a value from the last scrape ($WORK/metrics.txt).
metric() { awk -v n="$1" '$1 == n {print $2}' "$WORK/metrics.txt"; }

# watch_latency NAME COUNT PER_SEC FLAGS...: COUNT files of 10 kB written into an empty
# watched folder at PER_SEC (0: as fast as possible), on a fresh emulator and ledger.
watch_latency() {
  local name=$1 n=$2 pace=$3 dir="$WORK/$1"; shift 3
  rm -rf "$dir" "$WORK/$name.sqlite"*; mkdir -p "$dir"
  start_emulator --rate-limit off
  watch_start "$name" "$dir" --ledger "$WORK/$name.sqlite" "$@"
  "${WL[@]}" write "$dir" "$n" "$pace" 10000 "$WORK/$name.times"
  "${WL[@]}" wait-uploads "$WORK/$name.log" "$n" 600
  # Then quiet (nothing settling or in flight), so that a second upload of a file shows.
  "${WL[@]}" wait-idle "$METRICS" 120 >/dev/null
  curl -sf "$METRICS" >"$WORK/metrics.txt"
  local hwm images
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$WATCH_PID/status")
  images=$(curl -sf "${API%/client/v4}/__emulator/state" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["images"]))')
  watch_stop "$name"
  local what="watch, $n files of 10 kB"
  [ "$pace" = 0 ] && what="$what in a burst" || what="$what at $pace/s"
  local lost=""
  "${WL[@]}" report "$what, settle $WATCH_SETTLE s, $*" "$WORK/$name.times" "$WORK/$name.log" || lost=1
  echo "$what: daemon peak RSS $((hwm / 1024)) MB; images stored $images; failures $(metric 'cfimg_failures_total{reason="failed"}'); event overflows $(metric cfimg_event_overflows_total), full scans $(metric cfimg_rescans_total); exit 0 on SIGTERM"
  [ -z "$lost" ] || { echo "watch: files were lost; the log: $WORK/$name.log"; exit 1; }
}

watch_idle() {
  local n=$WATCH_FILES dir="$WORK/watch-idle-$WATCH_FILES" l="$WORK/watch-idle.sqlite"
  [ -d "$dir" ] || make_files "$dir" "$n" 64 100
  start_emulator --rate-limit off
  rm -f "$l"*
  "${CFIMG[@]}" migrate "$dir" --ledger "$l" --rate 100000 --concurrency 16 --json >"$WORK/watch-idle-migrate.json"
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["uploaded"] == int(sys.argv[2]), s' "$WORK/watch-idle-migrate.json" "$n"
  watch_start watch-idle "$dir" --ledger "$l"
  # Ready means the start-up scan is over; the pipeline may still be checking its files.
  local quiet_at used span rss hwm threads
  quiet_at=$("${WL[@]}" wait-idle "$METRICS" 900)
  read -r used span rss hwm threads < <("${WL[@]}" idle "$WATCH_PID" 30)
  curl -sf "$METRICS" >"$WORK/metrics.txt"
  local uploads
  uploads=$(metric cfimg_uploads_total)
  watch_stop watch-idle
  python3 - "$n" "$WATCH_LAUNCH" "$READY_AT" "$quiet_at" "$used" "$span" "$rss" "$hwm" "$threads" "$uploads" <<'PY'
import sys
n = int(sys.argv[1])
launch, ready, quiet, used, span = map(float, sys.argv[2:7])
rss, hwm, threads, uploads = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9]), float(sys.argv[10])
print(f"watch, idle over {n} unchanged files in {n // 100} folders: start-up {ready - launch:.1f} s to ready, "
      f"{quiet - launch:.1f} s to nothing in flight; idle CPU {100 * used / span:.2f}% of one core "
      f"({used:.2f} s in {span:.0f} s); RSS {rss / 1024:.1f} MB (peak {hwm / 1024:.1f} MB), {threads} threads; "
      f"uploads {uploads:.0f}")
PY
}

watch_case() {
  watch_latency watch-steady 200 20 --rate 100
  watch_latency watch-burst "$WATCH_BURST" 0 --rate 2000 --concurrency 16
  watch_idle
}

# redirects: `cfimg redirects` over REDIRECT_ROWS uploaded items. The ledger is made by
# cfimg (schema, source) and filled by sqlite3 in one transaction: uploading a million files
# to the emulator would measure the upload, not the redirects.
redirects_case() {
  local n=${REDIRECT_ROWS:-1000000} l="$WORK/redirects.sqlite" dir="$WORK/redirects-src"
  rm -rf "$l"* "$dir"; mkdir -p "$dir"
  "$BIN" migrate "$dir" --emulator --ledger "$l" >/dev/null 2>&1
  python3 - "$l" "$n" <<'PY'
import sqlite3, sys
path, n = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path)
(source,) = db.execute("SELECT id FROM sources WHERE kind = 'dir'").fetchone()
now = "2026-12-06T00:00:00.000Z"
def rows():
    for i in range(n):
        key = f"{2010 + i % 15}/{1 + i % 12:02d}/photo-{i:07d} caf\u00e9.jpg"
        ident = key
        url = "https://imagedelivery.net/AbCdEfGhIjKlMnOpQrStUv/" + key.replace(" ", "%20").replace("\u00e9", "%C3%A9") + "/public"
        yield (source, key, 100000, 1, "00" * 32, ident, url, "uploaded", now, now, now)
db.execute("BEGIN")
db.executemany("INSERT INTO items (source_id, key, size, mtime_ns, sha256, image_id, url, state, created_at, updated_at, uploaded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows())
db.commit()
PY
  local fmt
  for fmt in nginx cloudflare-bulk json cloudflare-rule; do
    /usr/bin/time -f "%e %U %S %M" -o "$WORK/redirects.time" \
      "$BIN" redirects --ledger "$l" --format "$fmt" --old-base https://www.example.com/wp-content/uploads/ \
      -o "$WORK/redirects.$fmt" 2>"$WORK/redirects.err"
    read -r wall user sys rss <"$WORK/redirects.time"
    echo "redirects --format $fmt over $n uploaded items: ${wall} s wall, $(awk "BEGIN {print $user + $sys}") s CPU (user+sys), peak RSS $((rss / 1024)) MB, $(du -m "$WORK/redirects.$fmt" | cut -f1) MB written"
  done
  if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    local nd="$WORK/redirects-nginx"; mkdir -p "$nd"
    printf 'pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp { include %s; server { listen 127.0.0.1:1; if ($cfimg_redirect) { return 301 $cfimg_redirect; } } }\n' "$nd" "$nd" "$WORK/redirects.nginx" >"$nd/nginx.conf"
    /usr/bin/time -f "%e %M" -o "$WORK/redirects.time" "$(command -v nginx || echo /usr/sbin/nginx)" -t -q -e "$nd/error.log" -p "$nd" -c "$nd/nginx.conf"
    read -r wall rss <"$WORK/redirects.time"
    echo "nginx -t loads the map of $n keys: ${wall} s, peak RSS $((rss / 1024)) MB"
  fi
  rm -rf "$l"* "$dir" "$WORK"/redirects.* "$WORK/redirects-nginx"
}

# `cfimg rewrite` over a generated WordPress-style SQL dump of REWRITE_MB megabytes (default
# 1024): 1,000 files migrated (not timed), then a dump whose rows name them (plain, in
# srcset, JSON-escaped, inside PHP-serialized strings) rewritten to -o with its journal.
rewrite_case() {
  local mb=${REWRITE_MB:-1024} dir="$WORK/rewrite-files" dump="$WORK/rewrite-dump.sql"
  [ -d "$dir" ] || make_files "$dir" 1000 64 100
  start_emulator --rate-limit off
  rm -f "$WORK/rewrite.sqlite"*
  "${CFIMG[@]}" migrate "$dir" --ledger "$WORK/rewrite.sqlite" --rate 100000 --json >/dev/null
  if [ ! -f "$dump" ]; then
    python3 - "$dump" "$mb" <<'PY'
import random, sys
path, mb = sys.argv[1], int(sys.argv[2])
B = "https://www.example.com/wp-content/uploads/"
rnd = random.Random(22)
def key():
    i = rnd.randrange(1000)
    return f"d{i // 100:04d}/img{i:07d}.png"
def esc(x):
    return x.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"').replace("\n", "\\n")
def ser(x):
    return 's:%d:"%s";' % (len(x.encode()), x)
rows = []
for n in range(4000):
    k1, k2, k3 = key(), key(), key()
    words = " ".join(rnd.choice(["lorem", "ipsum", "dolor", "sit", "amet", "café", "cat"]) for _ in range(60))
    content = f'<p>{words}</p>\n<img src="{B}{k1}" srcset="{B}{k1} 300w, {B}{k2} 1024w" alt="x">\n<p>{words}</p>'
    meta = "a:2:{" + ser("file") + ser(B + k3) + ser("sizes") + "a:0:{}}"
    js = ('[{"image":{"url":"%s"}}]' % (B + k2)).replace("/", "\\/")
    rows.append(f"INSERT INTO `wp_posts` VALUES ({n},1,'2019-05-01 10:00:00','{esc(content)}','Post {n}','publish');\n"
                f"INSERT INTO `wp_postmeta` VALUES ({n},{n},'_wp_attachment_metadata','{esc(meta)}'),({n},{n},'_elementor_data','{esc(js)}');\n")
block = "".join(rows).encode()
with open(path, "wb") as f:
    f.write(b"-- MySQL dump 10.13 (generated by benches/run.sh rewrite)\n")
    written = 0
    while written < mb << 20:
        f.write(block)
        written += len(block)
PY
  fi
  local size; size=$(stat -c %s "$dump")
  rm -rf "$WORK/rewrite-out" "$WORK/rewrite.journal"
  timed rewrite "${CFIMG[@]}" rewrite --ledger "$WORK/rewrite.sqlite" --old-base https://www.example.com/wp-content/uploads/ \
    -o "$WORK/rewrite-out" --journal "$WORK/rewrite.journal" "$dump" >"$WORK/rewrite.out"
  local summary; summary=$(tail -n 1 "$WORK/rewrite.out")
  python3 -c "import sys; el,us,sy,rss,size=map(float,sys.argv[1:6]); print(f'rewrite: {size/1e6:.0f} MB SQL dump: {el:.1f} s wall, {size/1e6/el:.0f} MB/s, CPU {us+sy:.1f} s ({size/1e6/(us+sy):.0f} MB/s of CPU), peak RSS {rss/1024:.1f} MB')" \
    "$ELAPSED" "$USER_S" "$SYS_S" "$RSS_KB" "$size"
  echo "rewrite: $summary; journal $(du -m "$WORK/rewrite.journal" | cut -f1) MB"
  rm -rf "$WORK/rewrite-out" "$WORK/rewrite.journal" "$dump"
}

case $WHAT in
  redirects) redirects_case ;;
  throughput) throughput ;;
  noop) noop ;;
  large) large ;;
  rate) rate ;;
  emulator) emulator_only ;;
  manifest) manifest ;;
  bucket) bucket ;;
  bucket-listing) bucket_listing ;;
  batch) batch ;;
  manage) manage ;;
  watch) watch_case ;;
  rewrite) rewrite_case ;;
  # The emulator-only case last: it leaves gigabytes of freed memory for the kernel to reclaim.
  all) throughput; noop; large; rate; batch; manifest; bucket; bucket_listing; manage; watch_case; emulator_only ;;
  *) echo "usage: benches/run.sh [all|throughput|noop|large|rate|batch|emulator|manifest|bucket|bucket-listing|manage|watch|redirects|rewrite]"; exit 2 ;;
esac
