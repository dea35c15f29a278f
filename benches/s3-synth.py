#!/usr/bin/env python3
"""A synthetic S3-compatible server, for benchmarks only (benches/run.sh bucket-listing).

It serves one bucket of N generated objects and stores nothing per object: every answer is
computed from the object's index, so a bucket of ten million keys costs no memory here
(moto keeps every object, and cannot hold that many). Object i is

    key    PREFIX d<i // PER_FOLDER>/img<i>.png   (fixed-width numbers: sorted = index order)
    body   a valid 1x1 grayscale PNG with a private chunk holding i (and i % 97 bytes of padding)
    size   the body's length
    ETag   a quoted 32-hex-digit token derived from i
    date   2026-01-01, at i % 86400 seconds past midnight

What it answers (path-style requests, what cfimg's S3 source sends through object_store):
    GET  /BUCKET?list-type=2   ListObjectsV2: prefix, continuation-token, start-after,
                               max-keys (at most 1000, as S3), encoding-type=url; a
                               delimiter is refused (501: the bucket source never sends one)
    HEAD /BUCKET/KEY           size, ETag, Last-Modified; 404 NoSuchKey for other keys
    GET  /BUCKET/KEY           the body; If-Match (412 when it does not match); a Range is
                               refused (501: cfimg reads whole objects)
    GET  /__synth/stats        JSON: requests served by kind (list pages, keys listed,
                               heads, gets, errors), and the bucket's keys and total bytes,
                               for the benchmark's report
Signatures are not checked (any credentials do). Keys are located by binary search over the
index, so a listing page costs the same wherever it starts.

Usage: benches/s3-synth.py --keys N [--bucket bench] [--prefix img/] [--per-folder 1000]
       [--host 127.0.0.1] [--port 0]
Prints the port it listens on (one line), then serves until killed.
"""

import argparse
import http.server
import json
import re
import struct
import sys
import threading
import urllib.parse
import zlib
from xml.sax.saxutils import escape

S3_MAX_KEYS = 1000


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_HEAD = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
PNG_TAIL = chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")
# The private chunk: 12 bytes of framing, the index (8 bytes), then the padding.
PNG_FIXED = len(PNG_HEAD) + len(PNG_TAIL) + 12 + 8


class Synthetic:
    """The bucket: key, size, ETag and body of each index, and the reverse (key -> index)."""

    def __init__(self, keys, prefix, per_folder):
        self.n = keys
        self.prefix = prefix
        self.per_folder = per_folder
        last = max(keys - 1, 0)
        self.img_width = max(7, len(str(last)))
        self.dir_width = max(4, len(str(last // per_folder)))
        self.pattern = re.compile(
            re.escape(prefix)
            + r"d(\d{%d})/img(\d{%d})\.png" % (self.dir_width, self.img_width)
        )

    def key(self, i):
        return f"{self.prefix}d{i // self.per_folder:0{self.dir_width}d}/img{i:0{self.img_width}d}.png"

    def index(self, key):
        """The index of `key`, or None when the bucket has no such object."""
        m = self.pattern.fullmatch(key)
        if not m:
            return None
        i = int(m.group(2))
        if i >= self.n or int(m.group(1)) != i // self.per_folder:
            return None
        return i

    def total_bytes(self):
        """The sum of every object's size (i % 97 summed in closed form)."""
        q, r = divmod(self.n, 97)
        return self.n * PNG_FIXED + q * (96 * 97 // 2) + r * (r - 1) // 2

    @staticmethod
    def size(i):
        return PNG_FIXED + i % 97

    @staticmethod
    def etag(i):
        return f'"{i:016x}{(i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF:016x}"'

    @staticmethod
    def modified(i):
        s = i % 86400
        return f"2026-01-01T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000Z"

    @staticmethod
    def http_date(i):
        s = i % 86400
        return f"Thu, 01 Jan 2026 {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d} GMT"

    @staticmethod
    def body(i):
        data = i.to_bytes(8, "little") + b"\0" * (i % 97)
        return PNG_HEAD + chunk(b"cfPd", data) + PNG_TAIL

    def first(self, pred):
        """The first index whose key satisfies `pred` (monotone: False then True), or n."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if pred(self.key(mid)):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def prefix_range(self, prefix):
        """The indices whose keys start with `prefix`: sorted keys make them one range."""
        lo = self.first(lambda k: k >= prefix)
        hi = self.first(lambda k: k >= prefix and not k.startswith(prefix))
        return lo, max(lo, hi)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"list_pages": 0, "keys_listed": 0, "heads": 0, "gets": 0, "errors": 0}

    def add(self, name, n=1):
        with self.lock:
            self.counts[name] += n

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


def handler(bucket_name, bucket, stats):
    class Handler(http.server.BaseHTTPRequestHandler):
        # Keep-alive, as S3: a client reading many objects reuses its connections.
        protocol_version = "HTTP/1.1"
        server_version = "s3-synth"
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the
        # body for the client's delayed ACK (40 ms per small GET).
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def send(self, status, body=b"", content_type="application/xml", headers=(), head=False):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def error(self, status, code, message, head=False):
            stats.add("errors")
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
            ).encode()
            self.send(status, body, head=head)

        def route(self, head):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/__synth/stats":
                counts = dict(stats.snapshot(), keys=bucket.n, bytes=bucket.total_bytes())
                return self.send(200, json.dumps(counts).encode(), "application/json")
            parts = url.path.lstrip("/").split("/", 1)
            if parts[0] != bucket_name:
                return self.error(404, "NoSuchBucket", "The specified bucket does not exist", head)
            if len(parts) == 1 or parts[1] == "":
                query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                if head:
                    return self.send(200, head=True)
                return self.list(query)
            return self.object(urllib.parse.unquote(parts[1]), head)

        def do_GET(self):
            self.route(head=False)

        def do_HEAD(self):
            self.route(head=True)

        def list(self, query):
            one = lambda name: query.get(name, [None])[-1]
            if one("list-type") != "2":
                return self.error(501, "NotImplemented", "only ListObjectsV2 (list-type=2) is served")
            if one("delimiter"):
                return self.error(501, "NotImplemented", "a delimiter is not served")
            prefix = one("prefix") or ""
            try:
                max_keys = int(one("max-keys") or S3_MAX_KEYS)
                if max_keys < 0:
                    raise ValueError
            except ValueError:
                return self.error(400, "InvalidArgument", "max-keys is not a non-negative integer")
            max_keys = min(max_keys, S3_MAX_KEYS)
            lo, hi = bucket.prefix_range(prefix)
            token = one("continuation-token")
            start_after = one("start-after")
            if token is not None:
                m = re.fullmatch(r"synth-(\d+)", token)
                if not m:
                    return self.error(400, "InvalidArgument", "The continuation token provided is incorrect")
                lo = max(lo, int(m.group(1)))
            elif start_after:
                lo = max(lo, bucket.first(lambda k: k > start_after))
            end = min(hi, lo + max_keys)
            url_encoded = one("encoding-type") == "url"
            enc = (lambda k: urllib.parse.quote(k, safe="/")) if url_encoded else escape
            out = [
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>{bucket_name}</Name><Prefix>{enc(prefix)}</Prefix>"
                f"<KeyCount>{max(end - lo, 0)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>"
                f"<IsTruncated>{'true' if end < hi else 'false'}</IsTruncated>"
            ]
            if url_encoded:
                out.append("<EncodingType>url</EncodingType>")
            if token is not None:
                out.append(f"<ContinuationToken>{token}</ContinuationToken>")
            if start_after:
                out.append(f"<StartAfter>{enc(start_after)}</StartAfter>")
            key, size, etag, modified = bucket.key, bucket.size, bucket.etag, bucket.modified
            for i in range(lo, end):
                out.append(
                    f"<Contents><Key>{enc(key(i))}</Key><LastModified>{modified(i)}</LastModified>"
                    f"<ETag>{escape(etag(i), {chr(34): '&quot;'})}</ETag><Size>{size(i)}</Size>"
                    "<StorageClass>STANDARD</StorageClass></Contents>"
                )
            if end < hi:
                out.append(f"<NextContinuationToken>synth-{end}</NextContinuationToken>")
            out.append("</ListBucketResult>")
            stats.add("list_pages")
            stats.add("keys_listed", max(end - lo, 0))
            self.send(200, "".join(out).encode())

        def object(self, key, head):
            i = bucket.index(key)
            if i is None:
                return self.error(404, "NoSuchKey", "The specified key does not exist.", head)
            etag = bucket.etag(i)
            headers = [("ETag", etag), ("Last-Modified", bucket.http_date(i)), ("Accept-Ranges", "bytes")]
            if_match = self.headers.get("If-Match")
            if if_match is not None and not any(
                t.strip() in ("*", etag) for t in if_match.split(",")
            ):
                return self.error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold", head)
            if self.headers.get("Range") is not None:
                return self.error(501, "NotImplemented", "a Range is not served", head)
            if head:
                stats.add("heads")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(bucket.size(i)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                return
            stats.add("gets")
            self.send(200, bucket.body(i), "image/png", headers)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--keys", type=int, required=True, help="objects in the bucket")
    ap.add_argument("--bucket", default="bench")
    ap.add_argument("--prefix", default="img/", help="every key starts with it")
    ap.add_argument("--per-folder", type=int, default=1000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    if args.keys < 0 or args.per_folder < 1:
        ap.error("--keys must be >= 0 and --per-folder >= 1")
    bucket = Synthetic(args.keys, args.prefix, args.per_folder)
    stats = Stats()
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler(args.bucket, bucket, stats))
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
