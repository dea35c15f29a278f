#!/usr/bin/env node
// Conformance check of `cfimg emulator` against the official Cloudflare TypeScript SDK
// (npm `cloudflare`, the version tests/sdk-ts/run.sh pins).
//
// Usage: node tests/sdk-ts/conformance.cjs PATH_TO_CFIMG SDK_DIR
//   (SDK_DIR holds node_modules/cloudflare; run.sh installs it there).
// Starts the emulator on port 0 (rate limits off), calls every Images method the SDK
// offers, plus the 2026 operations it does not (flat variant, v1 direct upload) with
// fetch, and prints `ok <name>` / `FAIL <name>: <why>` / `xfail <name>: <reason>` per
// call, then `N passed, M failed` (an expected failure counts as neither).
'use strict';

const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const zlib = require('node:zlib');
const crypto = require('node:crypto');

const [binary, sdkDir] = process.argv.slice(2);
if (!binary || !sdkDir) {
  console.error('usage: node tests/sdk-ts/conformance.cjs PATH_TO_CFIMG SDK_DIR');
  process.exit(2);
}
// The SDK reads these when a credential is not given: keep the run hermetic.
for (const v of ['CLOUDFLARE_API_TOKEN', 'CLOUDFLARE_API_KEY', 'CLOUDFLARE_EMAIL',
  'CLOUDFLARE_API_USER_SERVICE_KEY', 'CLOUDFLARE_BASE_URL']) {
  delete process.env[v];
}
const sdkRequire = require('node:module').createRequire(path.resolve(sdkDir, 'package.json'));
const CF = sdkRequire('cloudflare');
const Cloudflare = CF.Cloudflare || CF.default;
const { toFile } = CF;

// ------------------------------------------------------------------ test images

function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A valid RGB PNG; `shade` varies the pixels so blobs differ. */
function png(width = 1, height = 1, shade = 0) {
  const chunk = (kind, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(kind, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const rows = [];
  for (let y = 0; y < height; y++) {
    const line = [0];
    for (let x = 0; x < width; x++) line.push(shade % 256, 0x40, 0x80);
    rows.push(Buffer.from(line));
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// ------------------------------------------------------------------ harness

let passed = 0;
let failed = 0;
let xfailed = 0;

function describe(e) {
  if (e && e.status !== undefined && e.error !== undefined) {
    let body;
    try { body = JSON.stringify(e.error).slice(0, 300); } catch { body = String(e.error); }
    return `${e.constructor.name} HTTP ${e.status}: ${body}`;
  }
  return `${(e && e.constructor && e.constructor.name) || 'Error'}: ${(e && e.message) || e}`.slice(0, 600);
}

async function check(name, fn) {
  try {
    const v = await fn();
    passed++;
    console.log(`ok ${name}`);
    return v;
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${describe(e)}`);
    return undefined;
  }
}

/** A call that fails because of a known SDK bug: reported with the reason, not counted. */
async function expectedFailure(name, reason, fn) {
  try {
    await fn();
  } catch (e) {
    xfailed++;
    console.log(`xfail ${name}: ${reason} (${describe(e)})`);
    return;
  }
  failed++;
  console.log(`FAIL ${name}: expected to fail (${reason}) but passed: the SDK may be fixed; make it a check`);
}

function expect(cond, why) {
  if (!cond) throw new Error(why);
}

function eq(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

function codes(e) {
  const errs = (e && e.errors) || (e && e.error && e.error.errors) || [];
  return errs.map((x) => x && x.code);
}

async function expectError(fn, status, code) {
  let value;
  try {
    value = await fn();
  } catch (e) {
    expect(e.status === status, `HTTP ${e.status} (codes ${JSON.stringify(codes(e))}), want ${status}: ${describe(e)}`);
    if (code !== undefined) expect(codes(e).includes(code), `codes ${JSON.stringify(codes(e))} lack ${code}`);
    return e;
  }
  throw new Error(`no error; returned ${JSON.stringify(value)}`.slice(0, 400));
}

// ------------------------------------------------------------------ the emulator

function startEmulator(...flags) {
  return new Promise((resolve, reject) => {
    const proc = spawn(binary, ['emulator', '--listen', '127.0.0.1:0', ...flags], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const info = {};
    const names = {
      CFIMG_API_BASE_URL: 'apiBase',
      CFIMG_BATCH_BASE_URL: 'batchBase',
      CLOUDFLARE_ACCOUNT_ID: 'account',
      CLOUDFLARE_API_TOKEN: 'token',
    };
    let stderr = '';
    proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-2000); });
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`emulator did not print its settings in 15 s; stderr: ${stderr}`));
    }, 15000);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`emulator exited (${code}); stderr: ${stderr}`));
    });
    readline.createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = /^export ([A-Z_]+)='(.*)'$/.exec(line.trim());
      if (m && names[m[1]]) info[names[m[1]]] = m[2];
      if (Object.keys(info).length === Object.keys(names).length) {
        clearTimeout(timer);
        proc.removeAllListeners('exit');
        info.proc = proc;
        info.origin = info.apiBase.split('/client/v4')[0];
        resolve(info);
      }
    });
  });
}

async function stopEmulator(emu) {
  if (!emu || emu.proc.exitCode !== null) return;
  const done = new Promise((r) => emu.proc.once('exit', r));
  emu.proc.kill('SIGTERM');
  const t = setTimeout(() => emu.proc.kill('SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

// ------------------------------------------------------------------ the checks

async function run(emu) {
  const acct = emu.account;
  const cf = new Cloudflare({ apiToken: emu.token, baseURL: emu.apiBase, maxRetries: 0, timeout: 10000 });
  const v1 = cf.images.v1;
  const uploaded = new Map(); // id -> bytes of every live image
  const file = (bytes, name) => toFile(bytes, name, { type: 'image/png' });
  const api = (p, init = {}) => fetch(`${emu.apiBase}/accounts/${acct}/images${p}`, {
    ...init,
    headers: { Authorization: `Bearer ${emu.token}`, 'Content-Type': 'application/json', ...(init.headers || {}) },
  });

  const first = png(2, 2, 1);
  await check('images.v1.create file, custom id, nested metadata (bracket form), creator', async () => {
    const im = await v1.create({
      account_id: acct, id: 'sdk-ts/first', file: await file(first, 'first.png'),
      metadata: { k: 'v', nested: { a: 'b' } }, creator: 'alice',
    });
    eq(im.id, 'sdk-ts/first', 'id');
    eq(im.filename, 'first.png', 'filename');
    eq(im.meta, { k: 'v', nested: { a: 'b' } }, 'meta');
    eq(im.creator, 'alice', 'creator');
    eq(im.requireSignedURLs, false, 'requireSignedURLs');
    expect(Array.isArray(im.variants) && im.variants.length > 0, 'no variants');
    uploaded.set(im.id, first);
  });

  const secret = png(1, 1, 2);
  const priv = await check('images.v1.create private (requireSignedURLs)', async () => {
    const im = await v1.create({ account_id: acct, file: await file(secret, 'secret.png'), requireSignedURLs: true });
    eq(im.requireSignedURLs, true, 'requireSignedURLs');
    expect(!!im.id, 'no id');
    uploaded.set(im.id, secret);
    return im;
  });

  await check('images.v1.create duplicate custom id: 409 code 5409', () => expectError(
    async () => v1.create({ account_id: acct, id: 'sdk-ts/first', file: await file(png(1, 1, 9), 'x.png') }), 409, 5409));
  await check('images.v1.create invalid custom id (UUID): 400 code 5411', () => expectError(
    async () => v1.create({ account_id: acct, id: crypto.randomUUID(), file: await file(png(), 'x.png') }), 400, 5411));
  await check('images.v1.create url to nowhere: 400 code 5454', () => expectError(
    () => v1.create({ account_id: acct, url: 'http://127.0.0.1:9/missing.png' }), 400, 5454));

  await check('images.v1.get', async () => {
    const im = await v1.get('sdk-ts/first', { account_id: acct });
    eq(im.id, 'sdk-ts/first', 'id');
    eq(im.meta, { k: 'v', nested: { a: 'b' } }, 'meta');
  });
  await check('images.v1.get missing: 404 code 5404', () => expectError(
    () => v1.get('no-such-image', { account_id: acct }), 404, 5404));

  await check('images.v1.blobs.get', async () => {
    const resp = await v1.blobs.get('sdk-ts/first', { account_id: acct });
    const got = Buffer.from(await resp.arrayBuffer());
    expect(got.equals(first), `blob: ${got.length} bytes differ from the ${first.length} uploaded`);
  });

  await check('images.v1.edit metadata and creator', async () => {
    const im = await v1.edit('sdk-ts/first', { account_id: acct, metadata: { x: { n: 1 } }, creator: 'bob' });
    eq(im.meta, { x: { n: 1 } }, 'meta');
    eq(im.creator, 'bob', 'creator');
  });
  if (priv) {
    await check('images.v1.edit requireSignedURLs (the id is taken from the answer)', async () => {
      const im = await v1.edit(priv.id, { account_id: acct, requireSignedURLs: false });
      eq(im.requireSignedURLs, false, 'requireSignedURLs');
      const back = await v1.get(im.id, { account_id: acct });
      eq(back.requireSignedURLs, false, 'on get by the returned id');
      if (im.id !== priv.id) {
        uploaded.set(im.id, uploaded.get(priv.id));
        uploaded.delete(priv.id);
      }
    });
  }
  await check('images.v1.edit custom id made private: 400 code 5410', () => expectError(
    () => v1.edit('sdk-ts/first', { account_id: acct, requireSignedURLs: true }), 400, 5410));

  await check('images.v1.create 12 more, metadata as JSON text (for lists)', async () => {
    for (let i = 0; i < 12; i++) {
      const bytes = png(1, 1, 100 + i);
      const im = await v1.create({
        account_id: acct, id: `sdk-ts/bulk-${String(i).padStart(2, '0')}`, file: await file(bytes, `b${i}.png`),
        // A string is sent as one `metadata` field: the API's own JSON-text form, which
        // keeps numbers numbers (bracket fields are all strings).
        metadata: JSON.stringify({ i, even: i % 2 === 0 ? 'yes' : 'no' }),
      });
      uploaded.set(im.id, bytes);
    }
  });

  await check('images.v1.stats.get', async () => {
    const st = await v1.stats.get({ account_id: acct });
    eq(st.count.current, uploaded.size, 'count.current');
  });

  await expectedFailure('images.v1.list',
    "the SDK's V4PagePagination reads result.items; the API (and the emulator) answer result.images",
    async () => {
      const seen = [];
      for await (const item of v1.list({ account_id: acct, per_page: 10 })) {
        for (const im of item.images || [item]) seen.push(im.id);
      }
      eq(seen.length, uploaded.size, 'images listed over every page');
    });
  await check('images.v1.list raw page (result.images, creator filter)', async () => {
    const resp = await v1.list({ account_id: acct, per_page: 100, creator: 'bob' }).asResponse();
    const body = await resp.json();
    eq(body.result.images.map((i) => i.id), ['sdk-ts/first'], 'creator=bob');
  });

  await check('images.v2.list continuation, asc', async () => {
    const ids = [];
    let token;
    for (let pages = 0; pages < 20; pages++) {
      const res = await cf.images.v2.list({ account_id: acct, per_page: 10, sort_order: 'asc', ...(token ? { continuation_token: token } : {}) });
      ids.push(...(res.images || []).map((i) => i.id));
      token = res.continuation_token;
      if (!token) break;
    }
    eq(ids.length, uploaded.size, 'images over every page');
    eq(new Set(ids).size, ids.length, 'no duplicates');
  });
  await check('images.v2.list creator="" (images without a creator)', async () => {
    const res = await cf.images.v2.list({ account_id: acct, creator: '', per_page: 100 });
    eq(res.images.length, uploaded.size - 1, 'all but the one with a creator');
  });
  await check('images.v2.list meta filters (gte:number, in, eq)', async () => {
    const res = await cf.images.v2.list({
      account_id: acct, per_page: 100, 'meta.i[gte:number]': '8', 'meta.even[in]': 'yes|maybe',
    });
    eq(res.images.map((i) => i.id).sort(), ['sdk-ts/bulk-08', 'sdk-ts/bulk-10'], 'ids');
  });
  await check('images.v2.list six meta filters: 400 code 5400', () => expectError(
    () => cf.images.v2.list({
      account_id: acct, ...Object.fromEntries([1, 2, 3, 4, 5, 6].map((n) => [`meta.k${n}[eq]`, 'v'])),
    }), 400, 5400));

  await check('images.v2.directUploads.create, then the upload URL', async () => {
    const expiry = new Date(Date.now() + 10 * 60 * 1000).toISOString();
    const res = await cf.images.v2.directUploads.create({
      account_id: acct, id: 'sdk-ts/direct', metadata: { via: 'direct' }, expiry, creator: 'carol',
    });
    eq(res.id, 'sdk-ts/direct', 'id');
    const draft = await v1.get(res.id, { account_id: acct });
    eq(draft.draft, true, 'draft');
    const form = new FormData();
    const bytes = png(3, 1, 7);
    form.append('file', new Blob([bytes], { type: 'image/png' }), 'direct.png');
    const up = await fetch(res.uploadURL, { method: 'POST', body: form });
    eq(up.status, 200, 'upload URL status');
    uploaded.set(res.id, bytes);
    const done = await v1.get(res.id, { account_id: acct });
    eq(done.meta, { via: 'direct' }, 'meta');
  });

  await check('images.v1.keys.list', async () => {
    const k = await v1.keys.list({ account_id: acct });
    expect(k.keys.some((x) => x.name === 'default'), `no default key: ${JSON.stringify(k)}`);
  });
  await check('images.v1.keys.update', async () => {
    const k = await v1.keys.update('extra', { account_id: acct });
    expect(k.keys.some((x) => x.name === 'extra'), 'no extra key');
  });
  await check('images.v1.keys.delete', async () => {
    const k = await v1.keys.delete('extra', { account_id: acct });
    expect(!k.keys.some((x) => x.name === 'extra'), 'extra key still there');
  });

  const thumb = { fit: 'cover', metadata: 'none', width: 100, height: 100 };
  await check('images.v1.variants.create', async () => {
    const v = await v1.variants.create({ account_id: acct, id: 'thumb', options: thumb, neverRequireSignedURLs: true });
    eq(v.variant.id, 'thumb', 'id');
  });
  await check('images.v1.variants.get', async () => {
    const v = await v1.variants.get('thumb', { account_id: acct });
    eq(v.variant.options, thumb, 'options');
  });
  await check('images.v1.variants.list', async () => {
    const v = await v1.variants.list({ account_id: acct });
    expect(v.variants && v.variants.thumb && v.variants.public, `variants: ${JSON.stringify(v)}`);
  });
  await check('images.v1.variants.edit', async () => {
    const v = await v1.variants.edit('thumb', { account_id: acct, options: { ...thumb, fit: 'pad', width: 50 } });
    eq(v.variant.options.fit, 'pad', 'fit');
  });
  await check('GET v1/variants/{id}/flat (2026; not in the SDK)', async () => {
    const r = await api('/v1/variants/thumb/flat');
    eq(r.status, 200, 'status');
    const body = await r.json();
    eq(body.result.id, 'thumb', 'the variant without its wrapper');
  });
  await check('images.v1.variants.delete', async () => {
    await v1.variants.delete('thumb', { account_id: acct });
    await expectError(() => v1.variants.get('thumb', { account_id: acct }), 404, 5404);
  });

  await check('POST v1/direct_upload (deprecated JSON; not in the SDK)', async () => {
    const r = await api('/v1/direct_upload', { method: 'POST', body: JSON.stringify({}) });
    eq(r.status, 200, 'status');
    const body = await r.json();
    expect(body.result.id && body.result.uploadURL, `answer: ${JSON.stringify(body)}`);
  });

  await check('images.v1.delete', async () => {
    await v1.delete('sdk-ts/bulk-00', { account_id: acct });
    uploaded.delete('sdk-ts/bulk-00');
    await expectError(() => v1.get('sdk-ts/bulk-00', { account_id: acct }), 404, 5404);
    const st = await v1.stats.get({ account_id: acct });
    eq(st.count.current, uploaded.size, 'count after delete');
  });

  await check('bad token: 401 code 10000', () => expectError(
    () => new Cloudflare({ apiToken: 'nope', baseURL: emu.apiBase, maxRetries: 0 }).images.v1.stats.get({ account_id: acct }),
    401, 10000));
}

async function main() {
  let emu;
  try {
    emu = await startEmulator('--rate-limit', 'off', '--batch-rate-limit', 'off');
    await run(emu);
  } catch (e) {
    failed++;
    console.log(`FAIL setup: ${describe(e)}`);
  } finally {
    await stopEmulator(emu);
  }
  if (xfailed) console.log(`(${xfailed} expected failure${xfailed === 1 ? '' : 's'}, not counted)`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
}

main();
