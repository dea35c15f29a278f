#!/usr/bin/env python3
"""Conformance check of `cfimg emulator` against the official Cloudflare Python SDK.

Usage: python tests/sdk/conformance.py [PATH_TO_CFIMG]   (or env CFIMG_BIN;
default target/release/cfimg). Needs `cloudflare==5.9.0` installed (tests/sdk/run.sh).

Starts the emulator on port 0 (rate limits off), drives every Images endpoint the SDK
offers, plus the few the SDK lacks (batch token, direct-upload URL, delivery) with
httpx, and prints `ok <name>` / `FAIL <name>: <why>` per check, then `N passed, M failed`.
A second instance checks rate limiting, a third one (with --data) a restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import json
import os
import queue
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import warnings
import zlib

import httpx

# The SDK falls back to these when a credential is not given explicitly: keep the run hermetic.
for _var in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL",
             "CLOUDFLARE_API_USER_SERVICE_KEY", "CLOUDFLARE_BASE_URL"):
    os.environ.pop(_var, None)

import cloudflare  # noqa: E402
from cloudflare import Cloudflare  # noqa: E402

TIMEOUT = 10.0
# images.v1.list is marked deprecated in the SDK (as in the API); it is still checked.
warnings.filterwarnings("ignore", category=DeprecationWarning)
START_TIMEOUT = 15.0


# ---------------------------------------------------------------- test images

def png(width: int = 1, height: int = 1, shade: int = 0) -> bytes:
    """A valid RGB PNG; `shade` varies the pixels so blobs differ."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + bytes([shade % 256, 0x40, 0x80]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00"
       b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


# ---------------------------------------------------------------- harness

class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def guard(self, name: str, fn) -> None:
        """Runs a group of checks; only an error escaping the group (setup) is counted."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            self.failed += 1
            print(f"FAIL {name}: {describe(e)}", flush=True)

    def check(self, name: str, fn, *args, **kwargs):
        """Runs one check; any exception is a failure with its reason. Returns fn's value."""
        try:
            value = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
            self.failed += 1
            why = describe(e)
            if os.environ.get("SDK_CHECK_VERBOSE"):
                traceback.print_exc()
            print(f"FAIL {name}: {why}", flush=True)
            return None
        self.passed += 1
        print(f"ok {name}", flush=True)
        return value


def describe(e: BaseException) -> str:
    if isinstance(e, cloudflare.APIStatusError):
        body = e.body
        try:
            body = json.dumps(body)[:300]
        except (TypeError, ValueError):
            body = str(body)[:300]
        return f"{type(e).__name__} HTTP {e.status_code} {e.request.method} {e.request.url}: {body}"
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:600]


def expect(cond: bool, why: str) -> None:
    if not cond:
        raise AssertionError(why)


def eq(got, want, what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def error_codes(e: cloudflare.APIStatusError) -> list:
    body = e.body if isinstance(e.body, dict) else {}
    return [item.get("code") for item in body.get("errors") or [] if isinstance(item, dict)]


def expect_error(fn, exc_type, status: int, code: int | None):
    """Calls fn, which must raise exc_type with `status` and (if given) error `code`."""
    try:
        value = fn()
    except cloudflare.APIStatusError as e:
        expect(isinstance(e, exc_type),
               f"raised {type(e).__name__} (HTTP {e.status_code}, codes {error_codes(e)}), "
               f"want {exc_type.__name__}")
        eq(e.status_code, status, "HTTP status")
        if code is not None:
            expect(code in error_codes(e), f"error codes {error_codes(e)} lack {code}; body {e.body!r}")
        return e
    raise AssertionError(f"no error; returned {value!r}"[:400])


class Emulator:
    """One `cfimg emulator` process on 127.0.0.1:0."""

    def __init__(self, binary: str, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [binary, "emulator", "--listen", "127.0.0.1:0", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lines: queue.Queue = queue.Queue()

        def pump() -> None:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self.info: dict[str, str] = {}
        deadline = time.monotonic() + START_TIMEOUT
        # It prints `export NAME='value'` lines (POSIX shell); these are the names.
        names = {
            "CFIMG_API_BASE_URL": "api_base_url",
            "CFIMG_BATCH_BASE_URL": "batch_base_url",
            "CLOUDFLARE_ACCOUNT_ID": "account_id",
            "CLOUDFLARE_API_TOKEN": "api_token",
        }
        want = set(names.values())
        while not want <= self.info.keys():
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = None
            if line is None:
                if self.proc.poll() is None:
                    self.proc.kill()
                try:
                    _, err = self.proc.communicate(timeout=5)
                except (subprocess.TimeoutExpired, ValueError):
                    err = ""
                self.stop()
                err = (err or "").strip().splitlines()
                err = " | ".join(err[:3])
                raise RuntimeError(f"emulator did not print its settings (got {self.info}); exit status {self.proc.returncode}; stderr: {err[:600]}")
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export":
                key, sep, value = words[1].partition("=")
                if sep and key in names:
                    self.info[names[key]] = value
        self.api_base = self.info["api_base_url"]
        self.batch_base = self.info["batch_base_url"].rstrip("/")
        self.account = self.info["account_id"]
        self.token = self.info["api_token"]
        self.origin = self.api_base.split("/client/v4")[0]

    def client(self, **kw) -> Cloudflare:
        kw.setdefault("timeout", TIMEOUT)
        kw.setdefault("api_token", self.token)
        return Cloudflare(base_url=self.api_base, **kw)

    def state(self) -> dict:
        r = httpx.get(f"{self.origin}/__emulator/state", timeout=TIMEOUT)
        r.raise_for_status()
        return r.json()

    def count(self, method: str, suffix: str, status: int) -> int:
        """Requests served whose route is `method ...suffix` with `status`."""
        total = 0
        for row in self.state().get("requests", []):
            route = row.get("route", "")
            if route.startswith(method + " ") and route.endswith(suffix) and row.get("status") == status:
                total += row.get("count", 0)
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


class ImageServer:
    """Serves fixed bytes on 127.0.0.1:0 for url uploads."""

    def __init__(self, files: dict[str, tuple[bytes, str]]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = urllib.parse.urlsplit(self.path).path
                if path not in files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, ctype = files[path]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def as_dict(model) -> dict:
    if model is None:
        return {}
    if isinstance(model, dict):
        return model
    return model.to_dict() if hasattr(model, "to_dict") else dict(model)


def ids_of(images) -> list:
    out = []
    for im in images or []:
        out.append(im["id"] if isinstance(im, dict) else im.id)
    return out


# ---------------------------------------------------------------- the checks

def main_checks(r: Results, binary: str, image_server: ImageServer) -> None:
    emu = Emulator(binary, "--rate-limit", "off", "--batch-rate-limit", "off")
    try:
        run_main(r, emu, image_server)
    finally:
        emu.stop()


def run_main(r: Results, emu: Emulator, srv: ImageServer) -> None:
    acct = emu.account
    cf = emu.client(max_retries=0)
    v1 = cf.images.v1
    uploaded: dict[str, bytes] = {}  # image id -> bytes, every live (non-draft) image

    first_png = png(2, 2, 1)

    # -- upload by file, custom id, metadata (the SDK sends metadata.k=v fields)
    def upload_custom():
        im = v1.create(account_id=acct, id="sdk-check/first", file=("first.png", first_png, "image/png"),
                       metadata={"k": "v", "n": "1"}, creator="alice")
        eq(im.id, "sdk-check/first", "id")
        eq(im.filename, "first.png", "filename")
        eq(im.meta, {"k": "v", "n": "1"}, "meta")
        eq(im.require_signed_urls, False, "requireSignedURLs")
        eq(im.creator, "alice", "creator")
        expect(im.uploaded is not None, "no uploaded time")
        expect(bool(im.variants) and all("sdk-check/first" in u or "sdk-check%2Ffirst" in u for u in im.variants),
               f"variants {im.variants!r} do not name the image")
        uploaded[im.id] = first_png
        return im
    first = r.check("upload_file_custom_id_metadata", upload_custom)

    # -- private upload (Cloudflare-assigned id)
    private_png = png(1, 1, 2)

    def upload_private():
        im = v1.create(account_id=acct, file=("secret.png", private_png, "image/png"), require_signed_urls=True)
        expect(bool(im.id), "no id assigned")
        eq(im.require_signed_urls, True, "requireSignedURLs")
        eq(im.filename, "secret.png", "filename")
        uploaded[im.id] = private_png
        return im
    private = r.check("upload_file_private", upload_private)

    # -- upload by url
    def upload_url():
        im = v1.create(account_id=acct, url=f"{srv.base}/img/remote.png", metadata={"from": "url"})
        eq(im.filename, "remote.png", "filename")
        eq(im.meta, {"from": "url"}, "meta")
        uploaded[im.id] = srv_files["/img/remote.png"][0]
        return im
    by_url = r.check("upload_url", upload_url)

    def upload_url_unreachable():
        expect_error(lambda: v1.create(account_id=acct, url=f"{srv.base}/missing.png"),
                     cloudflare.BadRequestError, 400, 5454)
    r.check("upload_url_unreachable_5454", upload_url_unreachable)

    # -- get
    def get_image():
        im = v1.get("sdk-check/first", account_id=acct)
        eq(im.id, "sdk-check/first", "id")
        eq(im.meta, {"k": "v", "n": "1"}, "meta")
        eq(im.filename, "first.png", "filename")
        eq(im.creator, "alice", "creator")
        if first is not None:
            eq(im.uploaded, first.uploaded, "uploaded")
            eq(im.variants, first.variants, "variants")
        eq(bool(getattr(im, "draft", False)), False, "draft")
    r.check("get", get_image)

    r.check("get_missing_5404", lambda: expect_error(lambda: v1.get("no-such-image", account_id=acct),
                                                    cloudflare.NotFoundError, 404, 5404))

    # -- blobs
    def blob_equal(image_id):
        data = v1.blobs.get(image_id, account_id=acct).read()
        expect(data == uploaded[image_id], f"blob of {image_id}: {len(data)} bytes differ from the "
               f"{len(uploaded[image_id])} uploaded")
    r.check("blob_file_upload", blob_equal, "sdk-check/first")
    if private is not None:
        r.check("blob_private", blob_equal, private.id)
    if by_url is not None:
        r.check("blob_url_upload", blob_equal, by_url.id)

    # -- edit
    def edit_metadata():
        im = v1.edit("sdk-check/first", account_id=acct, metadata={"x": {"nested": 1}, "s": "t"})
        eq(im.meta, {"x": {"nested": 1}, "s": "t"}, "meta after edit")
        eq(v1.get("sdk-check/first", account_id=acct).meta, {"x": {"nested": 1}, "s": "t"}, "meta on get")
        eq(im.require_signed_urls, False, "requireSignedURLs unchanged")
        eq(im.creator, "alice", "creator unchanged")
    r.check("edit_metadata", edit_metadata)

    def edit_creator():
        im = v1.edit("sdk-check/first", account_id=acct, creator="bob")
        eq(im.creator, "bob", "creator")
        eq(im.meta, {"x": {"nested": 1}, "s": "t"}, "meta unchanged")
    r.check("edit_creator", edit_creator)

    if private is not None:
        def edit_signed():
            im = v1.edit(private.id, account_id=acct, require_signed_urls=False)
            eq(im.require_signed_urls, False, "requireSignedURLs after false")
            im = v1.edit(private.id, account_id=acct, require_signed_urls=True)
            eq(im.require_signed_urls, True, "requireSignedURLs after true")
            eq(v1.get(private.id, account_id=acct).require_signed_urls, True, "on get")
        r.check("edit_require_signed_urls", edit_signed)

    r.check("edit_custom_id_private_5410", lambda: expect_error(
        lambda: v1.edit("sdk-check/first", account_id=acct, require_signed_urls=True),
        cloudflare.BadRequestError, 400, 5410))
    r.check("edit_missing_5404", lambda: expect_error(
        lambda: v1.edit("no-such-image", account_id=acct, metadata={"a": "b"}),
        cloudflare.NotFoundError, 404, 5404))

    # -- error paths on upload
    def duplicate():
        before = emu.count("POST", "/images/v1", 409)
        e = expect_error(lambda: v1.create(account_id=acct, id="sdk-check/first",
                                           file=("again.png", png(1, 1, 9), "image/png")),
                         cloudflare.ConflictError, 409, 5409)
        after = emu.count("POST", "/images/v1", 409)
        eq(after - before, 1, "POSTs answered 409 counted by the emulator (max_retries=0)")
        eq(v1.get("sdk-check/first", account_id=acct).filename, "first.png", "original kept")
        return e
    r.check("duplicate_custom_id_409_once", duplicate)

    def duplicate_default_retries():
        # The SDK retries 409 by itself (API.md): a default client sends 3 POSTs.
        retrying = emu.client()  # default max_retries=2
        before = emu.count("POST", "/images/v1", 409)
        expect_error(lambda: retrying.images.v1.create(account_id=acct, id="sdk-check/first",
                                                       file=("again.png", png(1, 1, 9), "image/png")),
                     cloudflare.ConflictError, 409, 5409)
        eq(emu.count("POST", "/images/v1", 409) - before, 3, "POSTs answered 409 with SDK defaults")
    r.check("sdk_default_client_retries_409", duplicate_default_retries)

    for label, bad_id in (("txt_extension", "notes/readme.txt"),
                          ("uuid", "6f1c7c3e-9a8b-4c2d-8e7f-0123456789ab"),
                          ("leading_slash", "/lead"),
                          ("trailing_slash", "trail/")):
        r.check(f"invalid_custom_id_{label}_5411", lambda bad_id=bad_id: expect_error(
            lambda: v1.create(account_id=acct, id=bad_id, file=("x.png", png(), "image/png")),
            cloudflare.BadRequestError, 400, 5411))

    r.check("custom_id_private_upload_5410", lambda: expect_error(
        lambda: v1.create(account_id=acct, id="sdk-check/private", file=("p.png", png(), "image/png"),
                          require_signed_urls=True),
        cloudflare.APIStatusError, 400, 5410))

    def unsupported():
        e = expect_error(lambda: v1.create(account_id=acct, file=("notes.png", b"plain text, not an image\n",
                                                                    "image/png")),
                         cloudflare.APIStatusError, 415, 5455)
        return e
    r.check("unsupported_content_5455", unsupported)

    def bad_token():
        bad = emu.client(api_token="definitely-not-the-token", max_retries=0)
        e = expect_error(lambda: bad.images.v1.stats.get(account_id=acct), cloudflare.AuthenticationError, 401, 10000)
        eq(error_codes(e), [10000], "error codes")
    r.check("bad_token_10000", bad_token)

    def wrong_account():
        expect_error(lambda: cf.images.v1.stats.get(account_id="ffffffffffffffffffffffffffffffff"),
                     cloudflare.AuthenticationError, 401, 10000)
    r.check("other_account_10000", wrong_account)

    # -- more images for lists (v1 per_page minimum is 10)
    def upload_more():
        for i in range(12):
            data = png(1, 1, 100 + i)
            im = v1.create(account_id=acct, id=f"sdk-check/bulk-{i:02d}", file=(f"bulk-{i:02d}.png", data, "image/png"),
                           metadata={"bulk": "yes", "i": str(i)})
            uploaded[im.id] = data
            time.sleep(0.003)  # distinct upload times (the emulator keeps milliseconds)
    r.check("upload_bulk", upload_more)

    # -- stats
    def stats():
        st = v1.stats.get(account_id=acct)
        eq(st.count.current, len(uploaded), "count.current")
        expect((st.count.allowed or 0) >= len(uploaded), f"count.allowed {st.count.allowed}")
    r.check("stats_count", stats)

    # -- v1 list, page by page (SDK: SyncV4PagePagination; the service answers result.images)
    def v1_pages():
        seen: list = []
        page_no = 1
        while page_no < 20:
            page = v1.list(account_id=acct, page=page_no, per_page=10)
            images = getattr(page.result, "images", None) if page.result is not None else None
            expect(images is not None, f"page {page_no}: no result.images in {page.result!r}")
            got = ids_of(images)
            expect(len(got) <= 10, f"page {page_no} has {len(got)} > per_page images")
            if not got:
                break
            seen.extend(got)
            page_no += 1
        eq(sorted(seen), sorted(uploaded), "ids over all pages")
        eq(len(seen), len(set(seen)), "no duplicates across pages")
        eq(page_no, 3, "pages before the empty one (15 images, 10 per page) + 1")
        state_order = [im["id"] for im in emu.state()["images"] if not im.get("draft")]
        eq(seen, state_order, "v1 order (oldest first)")
    r.check("v1_list_paging", v1_pages)

    r.check("v1_list_per_page_out_of_range_5400", lambda: expect_error(
        lambda: v1.list(account_id=acct, per_page=5), cloudflare.BadRequestError, 400, 5400))

    # -- v2 list
    def v2_walk(sort_order=None, per_page=10):
        ids, token, pages = [], None, 0
        while True:
            kw = {"per_page": per_page}
            if sort_order:
                kw["sort_order"] = sort_order
            if token:
                kw["continuation_token"] = token
            res = cf.images.v2.list(account_id=acct, **kw)
            pages += 1
            got = ids_of(res.images)
            expect(len(got) <= per_page, f"{len(got)} images > per_page {per_page}")
            ids.extend(got)
            token = res.continuation_token
            if not token:
                return ids, pages, res
            expect(pages < 20, "continuation never ends")

    def uploaded_times():
        out = {}
        for im in emu.state()["images"]:
            if not im.get("draft"):
                out[im["id"]] = im["uploaded"]
        return out

    def v2_asc():
        ids, pages, _ = v2_walk("asc")
        eq(sorted(ids), sorted(uploaded), "ids")
        eq(len(ids), len(set(ids)), "no duplicates")
        eq(pages, 2, "pages of 10 for 15 images")
        times = uploaded_times()
        eq([times[i] for i in ids], sorted(times[i] for i in ids), "ascending upload time")
        return ids
    asc = r.check("v2_list_asc_continuation", v2_asc)

    def v2_desc():
        ids, pages, _ = v2_walk("desc")
        if asc is not None:
            eq(ids, list(reversed(asc)), "desc is asc reversed")
        ids_default, _, _ = v2_walk(None)
        eq(ids_default, ids, "default order is desc")
    r.check("v2_list_desc_default", v2_desc)

    def v2_single_page():
        res = cf.images.v2.list(account_id=acct, per_page=100)
        eq(len(res.images or []), len(uploaded), "all on one page")
        eq(res.continuation_token, None, "token on the last page")
        im = next(i for i in res.images if i.id == "sdk-check/first")
        eq(im.meta, {"x": {"nested": 1}, "s": "t"}, "meta in list")
    r.check("v2_list_last_page_null_token", v2_single_page)

    def v2_creator():
        res = cf.images.v2.list(account_id=acct, creator="bob", per_page=100)
        eq(ids_of(res.images), ["sdk-check/first"], "creator=bob")
    r.check("v2_list_creator_filter", v2_creator)

    def v2_meta():
        res = cf.images.v2.list(account_id=acct, meta={"i[eq]": "3"}, per_page=100)  # -> meta.i[eq]=3
        eq(ids_of(res.images), ["sdk-check/bulk-03"], "meta.i[eq]=3")
    r.check("v2_list_meta_filter", v2_meta)

    r.check("v2_list_per_page_out_of_range_5400", lambda: expect_error(
        lambda: cf.images.v2.list(account_id=acct, per_page=20000), cloudflare.BadRequestError, 400, 5400))

    # -- direct upload
    du_png = png(3, 1, 7)

    def direct_upload():
        expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
        res = cf.images.v2.direct_uploads.create(account_id=acct, metadata={"via": "direct"}, expiry=expiry,
                                                 creator="carol")
        expect(bool(res.id) and bool(res.upload_url), f"id/uploadURL missing: {res!r}")
        draft = v1.get(res.id, account_id=acct)
        eq(getattr(draft, "draft", None), True, "draft before upload")
        listed = ids_of(cf.images.v2.list(account_id=acct, per_page=100).images)
        expect(res.id not in listed, "draft is listed")
        eq(v1.stats.get(account_id=acct).count.current, len(uploaded), "stats exclude the draft")
        up = httpx.post(res.upload_url, files={"file": ("direct.png", du_png, "image/png")}, timeout=TIMEOUT)
        eq(up.status_code, 200, f"upload POST status (body {up.text[:200]!r})")
        body = up.json()
        eq(body.get("success"), True, "upload envelope success")
        uploaded[res.id] = du_png
        im = v1.get(res.id, account_id=acct)
        expect(not getattr(im, "draft", False), f"still draft: {im!r}")
        eq(im.filename, "direct.png", "filename")
        eq(im.meta, {"via": "direct"}, "meta")
        eq(im.creator, "carol", "creator")
        eq(v1.blobs.get(res.id, account_id=acct).read(), du_png, "blob")
        expect(res.id in ids_of(cf.images.v2.list(account_id=acct, per_page=100).images), "not listed after upload")
        again = httpx.post(res.upload_url, files={"file": ("direct.png", du_png, "image/png")}, timeout=TIMEOUT)
        expect(again.status_code >= 400, f"second POST answered {again.status_code}")
        eq(again.status_code, 409, "second POST status")
        return res
    r.check("direct_upload_create_post_once", direct_upload)

    def direct_upload_custom_id():
        res = cf.images.v2.direct_uploads.create(account_id=acct, id="sdk-check/direct-custom")
        eq(res.id, "sdk-check/direct-custom", "id")
        up = httpx.post(res.upload_url, files={"file": ("d.gif", GIF, "image/gif")}, timeout=TIMEOUT)
        eq(up.status_code, 200, f"upload POST status (body {up.text[:200]!r})")
        uploaded[res.id] = GIF
        eq(v1.blobs.get(res.id, account_id=acct).read(), GIF, "blob")
    r.check("direct_upload_custom_id", direct_upload_custom_id)

    r.check("direct_upload_expiry_too_far_5400", lambda: expect_error(
        lambda: cf.images.v2.direct_uploads.create(
            account_id=acct, expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=7)),
        cloudflare.BadRequestError, 400, None))

    # -- delivery (public, and private with a signed URL)
    def delivery_public():
        im = v1.get("sdk-check/bulk-00", account_id=acct)
        url = next(u for u in im.variants if u.endswith("/public"))
        resp = httpx.get(url, timeout=TIMEOUT)
        eq(resp.status_code, 200, f"GET {url}")
        eq(resp.content, uploaded["sdk-check/bulk-00"], "delivered bytes")
    r.check("delivery_public", delivery_public)

    # -- signing keys
    def keys_list():
        keys = v1.keys.list(account_id=acct).keys or []
        names = [k.name for k in keys]
        expect("default" in names, f"no default key in {names}")
        expect(all(k.value for k in keys), "a key without value")
        return {k.name: k.value for k in keys}
    keys0 = r.check("keys_list", keys_list)

    if private is not None and keys0:
        def delivery_signed():
            url = next(u for u in private.variants if u.endswith("/public"))
            eq(httpx.get(url, timeout=TIMEOUT).status_code >= 400, True, "unsigned private URL refused")
            parts = urllib.parse.urlsplit(url)
            query = f"exp={int(time.time()) + 300}"
            sig = hmac.new(keys0["default"].encode(), f"{parts.path}?{query}".encode(), hashlib.sha256).hexdigest()
            resp = httpx.get(f"{url}?{query}&sig={sig}", timeout=TIMEOUT)
            eq(resp.status_code, 200, "signed URL status")
            eq(resp.content, private_png, "delivered bytes")
        r.check("delivery_private_signed", delivery_signed)

    def keys_update():
        res = v1.keys.update("sdkkey", account_id=acct)
        got = {k.name: k.value for k in res.keys or []}
        expect("sdkkey" in got and got["sdkkey"], f"sdkkey missing in {list(got)}")
        expect("default" in got, "default key dropped")
        listed = {k.name: k.value for k in v1.keys.list(account_id=acct).keys or []}
        eq(listed.get("sdkkey"), got["sdkkey"], "listed value")
        rotated = {k.name: k.value for k in v1.keys.update("sdkkey", account_id=acct).keys or []}
        expect(rotated["sdkkey"] != got["sdkkey"], "PUT again did not rotate the value")
    r.check("keys_update_create_rotate", keys_update)

    def keys_delete():
        res = v1.keys.delete("sdkkey", account_id=acct)
        names = [k.name for k in res.keys or []]
        expect("sdkkey" not in names, f"deleted key still answered: {names}")
        names = [k.name for k in v1.keys.list(account_id=acct).keys or []]
        expect("sdkkey" not in names and "default" in names, f"list after delete: {names}")
    r.check("keys_delete", keys_delete)

    r.check("keys_delete_default_refused", lambda: expect_error(
        lambda: v1.keys.delete("default", account_id=acct), cloudflare.BadRequestError, 400, None))

    # -- variants
    opts = {"fit": "cover", "width": 120, "height": 80, "metadata": "none"}

    def variant_create():
        res = v1.variants.create(account_id=acct, id="thumb", options=opts, never_require_signed_urls=True)
        v = res.variant
        eq(v.id, "thumb", "id")
        eq((v.options.fit, v.options.width, v.options.height, v.options.metadata),
           ("cover", 120, 80, "none"), "options")
        eq(v.never_require_signed_urls, True, "neverRequireSignedURLs")
    r.check("variants_create", variant_create)

    def variant_get():
        v = v1.variants.get("thumb", account_id=acct).variant
        eq(v.id, "thumb", "id")
        eq(v.options.width, 120, "width")
    r.check("variants_get", variant_get)

    def variant_list():
        res = v1.variants.list(account_id=acct)
        variants = as_dict(res).get("variants") or {}
        expect("public" in variants and "thumb" in variants, f"variants listed: {sorted(variants)}")
        eq(variants["thumb"].get("options", {}).get("fit"), "cover", "thumb fit")
        im = v1.get("sdk-check/bulk-01", account_id=acct)
        expect(any(u.endswith("/thumb") for u in im.variants), f"image variants lack thumb: {im.variants}")
    r.check("variants_list", variant_list)

    def variant_edit():
        v = v1.variants.edit("thumb", account_id=acct, options={**opts, "width": 200, "fit": "contain"},
                             never_require_signed_urls=False).variant
        eq((v.options.width, v.options.fit), (200, "contain"), "options after edit")
        eq(bool(v.never_require_signed_urls), False, "neverRequireSignedURLs after edit")
        eq(v1.variants.get("thumb", account_id=acct).variant.options.width, 200, "width on get")
    r.check("variants_edit", variant_edit)

    r.check("variants_duplicate_409", lambda: expect_error(
        lambda: v1.variants.create(account_id=acct, id="thumb", options=opts),
        cloudflare.ConflictError, 409, 5409))

    def variant_delete():
        v1.variants.delete("thumb", account_id=acct)
        expect_error(lambda: v1.variants.get("thumb", account_id=acct), cloudflare.NotFoundError, 404, 5404)
        variants = as_dict(v1.variants.list(account_id=acct)).get("variants") or {}
        expect("thumb" not in variants, "deleted variant still listed")
    r.check("variants_delete", variant_delete)

    # -- batch token (no SDK method: the SDK's low-level get)
    def batch_token():
        env = cf.get(f"/accounts/{acct}/images/v1/batch_token", cast_to=object)
        expect(isinstance(env, dict) and env.get("success") is True, f"envelope {env!r}")
        res = env["result"]
        token, expires = res.get("token"), res.get("expiresAt")
        expect(bool(token), "no token")
        # RFC 3339 with nanoseconds: keep microseconds for fromisoformat
        norm = re.sub(r"(\.\d{6})\d+", r"\1", expires.replace("Z", "+00:00"))
        when = dt.datetime.fromisoformat(norm)
        expect(when > dt.datetime.now(dt.timezone.utc), f"expiresAt {expires} not in the future")
        ok_resp = httpx.get(f"{emu.batch_base}/images/v2", params={"per_page": 100},
                            headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        eq(ok_resp.status_code, 200, "batch host with batch token")
        eq(sorted(ids_of(ok_resp.json()["result"]["images"])), sorted(uploaded), "batch host v2 list")
        api_on_batch = httpx.get(f"{emu.batch_base}/images/v2", headers={"Authorization": f"Bearer {emu.token}"},
                                 timeout=TIMEOUT)
        eq(api_on_batch.status_code, 401, "API token on batch host")
        eq([e["code"] for e in api_on_batch.json()["errors"]], [10000], "codes")
        batch_on_api = emu.client(api_token=token, max_retries=0)
        expect_error(lambda: batch_on_api.images.v1.stats.get(account_id=acct),
                     cloudflare.AuthenticationError, 401, 10000)
    r.check("batch_token", batch_token)

    # -- delete
    def delete_image():
        res = v1.delete("sdk-check/bulk-11", account_id=acct)
        expect(res in ({}, None) or isinstance(res, (dict, str)), f"delete result {res!r}")
        uploaded.pop("sdk-check/bulk-11")
        expect_error(lambda: v1.get("sdk-check/bulk-11", account_id=acct), cloudflare.NotFoundError, 404, 5404)
        expect_error(lambda: v1.blobs.get("sdk-check/bulk-11", account_id=acct), cloudflare.NotFoundError, 404, None)
        eq(v1.stats.get(account_id=acct).count.current, len(uploaded), "stats after delete")
        expect("sdk-check/bulk-11" not in ids_of(cf.images.v2.list(account_id=acct, per_page=100).images),
               "deleted image listed")
        expect_error(lambda: v1.delete("sdk-check/bulk-11", account_id=acct), cloudflare.NotFoundError, 404, 5404)
        # no upsert: the id is free again after a delete
        again = v1.create(account_id=acct, id="sdk-check/bulk-11", file=("b.png", png(1, 1, 55), "image/png"))
        eq(again.id, "sdk-check/bulk-11", "re-upload after delete")
        uploaded[again.id] = png(1, 1, 55)
    r.check("delete", delete_image)

    def state_matches():
        st = emu.state()
        stored = {im["id"]: im for im in st["images"] if not im.get("draft")}
        eq(sorted(stored), sorted(uploaded), "ids in /__emulator/state")
        for image_id, data in uploaded.items():
            eq(stored[image_id]["sha256"], hashlib.sha256(data).hexdigest(), f"sha256 of {image_id}")
        eq(st.get("throttled"), 0, "throttled")
    r.check("emulator_state_matches", state_matches)


def rate_limit_checks(r: Results, binary: str) -> None:
    emu = Emulator(binary, "--rate-limit", "3/2s", "--penalty", "1")
    try:
        acct = emu.account

        def throttled():
            cf = emu.client(max_retries=0)
            err = None
            for _ in range(6):
                try:
                    cf.images.v1.stats.get(account_id=acct)
                except cloudflare.RateLimitError as e:
                    err = e
                    break
            expect(err is not None, "no 429 after 6 quick requests with a 3/2s limit")
            expect(971 in error_codes(err), f"codes {error_codes(err)}")
            expect(err.response.headers.get("retry-after") is not None, "no retry-after header")
        r.check("rate_limit_429_971", throttled)

        def sdk_recovers():
            cf = emu.client(max_retries=3)  # the SDK honours retry-after
            t0 = time.monotonic()
            st = cf.images.v1.stats.get(account_id=acct)
            eq(st.count.current, 0, "count")
            expect(time.monotonic() - t0 < 15, "took too long")
        r.check("rate_limit_sdk_retries_through", sdk_recovers)
    finally:
        emu.stop()


def restart_checks(r: Results, binary: str) -> None:
    data_dir = tempfile.mkdtemp(prefix="cfimg-sdk-")
    data = png(2, 3, 77)
    try:
        emu = Emulator(binary, "--rate-limit", "off", "--data", data_dir)
        try:
            def before():
                cf = emu.client(max_retries=0)
                cf.images.v1.create(account_id=emu.account, id="persist/one", file=("one.png", data, "image/png"),
                                    metadata={"p": "1"})
                cf.images.v1.keys.update("persisted", account_id=emu.account)
            r.check("restart_upload_before", before)
        finally:
            emu.stop()
        emu = Emulator(binary, "--rate-limit", "off", "--data", data_dir)
        try:
            def after():
                cf = emu.client(max_retries=0)
                im = cf.images.v1.get("persist/one", account_id=emu.account)
                eq(im.meta, {"p": "1"}, "meta")
                eq(cf.images.v1.blobs.get("persist/one", account_id=emu.account).read(), data, "blob")
                eq(cf.images.v1.stats.get(account_id=emu.account).count.current, 1, "count")
                names = [k.name for k in cf.images.v1.keys.list(account_id=emu.account).keys or []]
                expect("persisted" in names, f"keys after restart: {names}")
            r.check("restart_state_survives", after)
        finally:
            emu.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


srv_files = {"/img/remote.png": (png(4, 4, 33), "image/png")}


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CFIMG_BIN", "target/release/cfimg")
    r = Results()
    started = time.monotonic()
    if not os.path.exists(binary):
        print(f"FAIL setup: no emulator binary at {binary}")
        print("0 passed, 1 failed")
        return 1
    srv = ImageServer(srv_files)
    try:
        for name, fn in (("main", lambda: main_checks(r, binary, srv)),
                         ("rate_limit", lambda: rate_limit_checks(r, binary)),
                         ("restart", lambda: restart_checks(r, binary))):
            r.guard(f"{name}_instance", fn)
    finally:
        srv.stop()
    print(f"# {time.monotonic() - started:.1f} s, cloudflare SDK {cloudflare.__version__}", flush=True)
    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
