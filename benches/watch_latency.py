#!/usr/bin/env python3
"""Helpers for the `watch` case of benches/run.sh (see there for how they fit together).

  write DIR COUNT PER_SEC SIZE TIMES   write COUNT distinct PNGs of SIZE bytes into DIR, one
                                       every 1/PER_SEC s (0: as fast as possible); TIMES gets
                                       "key<TAB>close time" per file (Unix seconds)
  wait-log LOG TEXT TIMEOUT [PID]      wait until a line of LOG contains TEXT (while PID
                                       lives); print its timestamp (Unix seconds)
  wait-uploads LOG COUNT TIMEOUT       wait until LOG holds COUNT "uploaded" lines
  wait-idle METRICS_URL TIMEOUT        wait until the daemon has nothing settling or in flight
  report LABEL TIMES LOG               latency from each file's close to its "uploaded" line
  idle PID SECS                        CPU time used by PID over SECS, and its memory

Close times come from this process and upload times from the daemon's log timestamps:
both are the same machine's wall clock, so their difference is the latency.
"""
import json
import math
import os
import re
import struct
import sys
import time
import urllib.request
import zlib
from datetime import datetime


def png(serial, size):
    """A valid 1x1 PNG of about `size` bytes, distinct per serial: the emulator decodes
    uploads, and identical bytes would be deduplicated instead of uploaded."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    tail = chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")
    pad = max(size - len(head) - len(tail) - 12, 16)
    # A lower-case first letter marks the chunk ancillary, so decoders skip it.
    filler = serial.to_bytes(8, "little") + os.urandom(8) + b"\0" * (pad - 16)
    return head + chunk(b"bnPd", filler) + tail


def write(root, count, per_sec, size, times_path):
    closed = []
    start = time.time()
    for i in range(count):
        if per_sec > 0:
            # Paced against the start, not the previous file, so slow writes do not drift.
            delay = start + i / per_sec - time.time()
            if delay > 0:
                time.sleep(delay)
        key = f"f{i:06d}.png"
        with open(os.path.join(root, key), "wb") as f:
            f.write(png(i, size))
        closed.append((key, time.time()))
    took = closed[-1][1] - start
    with open(times_path, "w") as f:
        for key, t in closed:
            f.write(f"{key}\t{t:.6f}\n")
    print(f"wrote {count} files in {took:.2f} s ({count / max(took, 1e-9):.0f} files/s)", file=sys.stderr)


def log_time(stamp):
    """Unix seconds of a tracing-subscriber RFC 3339 timestamp (UTC, up to nanoseconds;
    fromisoformat takes at most microseconds, so longer fractions are cut)."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if not m:
        raise ValueError(f"unexpected log timestamp {stamp!r}")
    base, frac, zone = m.groups()
    zone = "+00:00" if zone == "Z" else zone
    t = datetime.fromisoformat(base + zone).timestamp()
    return t + (int(frac) / 10 ** len(frac) if frac else 0.0)


def log_lines(path, start=0):
    """JSON records of the log from byte offset `start`, each with the offset after it;
    a last line still being written is left for the next read."""
    with open(path, "rb") as f:
        f.seek(start)
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            start += len(raw)
            line = raw.strip()
            if line.startswith(b"{"):
                try:
                    yield json.loads(line), start
                except json.JSONDecodeError:
                    continue


def uploads(path):
    """Every "uploaded" line of the log as (key, Unix seconds), in log order."""
    out = []
    for rec, _ in log_lines(path):
        fields = rec.get("fields", {})
        if fields.get("message") == "uploaded":
            out.append((fields.get("key"), log_time(rec["timestamp"])))
    return out


def alive(pid):
    return pid is None or os.path.exists(f"/proc/{pid}")


def wait_log(path, text, timeout, pid=None):
    deadline = time.time() + timeout
    offset = 0
    while time.time() < deadline:
        if os.path.exists(path):
            for rec, offset in log_lines(path, offset):
                if text in rec.get("fields", {}).get("message", ""):
                    print(f"{log_time(rec['timestamp']):.6f}")
                    return
        if not alive(pid):
            sys.exit(f"watch_latency: the daemon exited before logging {text!r}; see {path}")
        time.sleep(0.05)
    sys.exit(f"watch_latency: {text!r} did not appear in {path} within {timeout} s")


def wait_uploads(path, count, timeout):
    # Reads only what is new and matches bytes, not JSON: this runs beside the daemon on
    # the same cores while it works through a burst, and must cost it next to nothing.
    deadline = time.time() + timeout
    n, offset = 0, 0
    needle = b'"message":"uploaded"'
    while time.time() < deadline:
        with open(path, "rb") as f:
            f.seek(offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                offset += len(raw)
                n += needle in raw
        if n >= count:
            return
        time.sleep(0.25)
    # Not fatal here: the report says how many are missing, which is the figure to see.
    print(f"watch_latency: only {n} of {count} uploads logged within {timeout} s", file=sys.stderr)


def metrics(url):
    values = {}
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
    return values


def wait_idle(url, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            m = metrics(url)
        except OSError:
            m = {}
        if (m.get('cfimg_queue_depth{stage="in_flight"}') == 0
                and m.get('cfimg_queue_depth{stage="settling"}') == 0):
            print(f"{time.time():.6f}")
            return
        time.sleep(0.25)
    sys.exit(f"watch_latency: the daemon was still busy after {timeout} s")


def percentile(sorted_values, p):
    # Nearest rank: an observed value, never an interpolation.
    return sorted_values[max(math.ceil(p / 100 * len(sorted_values)) - 1, 0)]


def report(label, times_path, log_path):
    closed = {}
    with open(times_path) as f:
        for line in f:
            key, t = line.rstrip("\n").split("\t")
            closed[key] = float(t)
    first = {}
    repeats = 0
    for key, t in uploads(log_path):
        if key in first:
            repeats += 1
        else:
            first[key] = t
    lat = sorted(first[k] - closed[k] for k in closed if k in first)
    missing = len(closed) - len(lat)
    stray = sum(1 for k in first if k not in closed)
    if lat:
        print(f"{label}: latency close -> uploaded: p50 {percentile(lat, 50):.2f} s, "
              f"p95 {percentile(lat, 95):.2f} s, max {lat[-1]:.2f} s, min {lat[0]:.2f} s; "
              f"{len(lat)} of {len(closed)} files matched; the last upload "
              f"{max(first[k] for k in closed if k in first) - max(closed.values()):.2f} s after the last close"
              + (f", {repeats} uploaded more than once" if repeats else "")
              + (f", {stray} unexpected keys" if stray else ""))
    if missing:
        print(f"{label}: {missing} of {len(closed)} files were NOT uploaded "
              f"(first: {sorted(k for k in closed if k not in first)[:3]})")
        sys.exit(1)


def idle(pid, secs):
    tick = os.sysconf("SC_CLK_TCK")

    def cpu():
        # Fields after the parenthesised command name; utime and stime are the 14th and
        # 15th fields of the whole line.
        rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / tick

    before, t0 = cpu(), time.monotonic()
    time.sleep(secs)
    used, span = cpu() - before, time.monotonic() - t0
    status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
    kb = lambda k: int(status[k].split()[0])
    print(f"{used:.3f} {span:.3f} {kb('VmRSS')} {kb('VmHWM')} {int(status['Threads'])}")


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "write":
        write(args[0], int(args[1]), float(args[2]), int(args[3]), args[4])
    elif cmd == "wait-log":
        wait_log(args[0], args[1], float(args[2]), int(args[3]) if len(args) > 3 else None)
    elif cmd == "wait-uploads":
        wait_uploads(args[0], int(args[1]), float(args[2]))
    elif cmd == "wait-idle":
        wait_idle(args[0], float(args[1]))
    elif cmd == "report":
        report(args[0], args[1], args[2])
    elif cmd == "idle":
        idle(int(args[0]), float(args[1]))
    else:
        sys.exit(f"watch_latency: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
