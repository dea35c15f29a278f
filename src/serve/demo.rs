//! The demo page of `cfimg serve --demo`: it asks this server for an upload URL, POSTs the
//! chosen file straight to it with `fetch` and `FormData` (field `file`, no content-type
//! header, so that the browser writes the multipart boundary), then polls the draft and
//! shows the delivered image once it is complete. The page carries a key made for the demo
//! at start-up (app `demo`): anyone who can load the page can mint, so `--demo` is for a
//! local try-out, not for production.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Service;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cfimg: direct creator upload</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}img{max-width:100%;display:block;margin-top:1em}</style>
</head>
<body data-state="idle">
<h1>Direct creator upload</h1>
<p>The file goes from this browser straight to the one-time upload URL; the API token stays on the server.</p>
<input type="file" id="file" accept="image/*">
<button id="go">Upload</button>
<p id="status">Choose an image.</p>
<img id="result" alt="">
<script>
const KEY = "__KEY__";
const say = (state, text) => {
  document.body.dataset.state = state;
  document.getElementById('status').textContent = text;
};
const auth = { 'Authorization': 'Bearer ' + KEY };
async function upload() {
  const file = document.getElementById('file').files[0];
  if (!file) { say('error', 'Choose a file first.'); return; }
  say('minting', 'Asking the server for an upload URL...');
  const mint = await fetch('/v1/direct-uploads', {
    method: 'POST',
    headers: { ...auth, 'Content-Type': 'application/json' },
    body: JSON.stringify({ creator: 'demo', metadata: { name: file.name } }),
  });
  const m = await mint.json();
  if (!mint.ok) { say('error', m.error.field + ': ' + m.error.message); return; }
  say('uploading', 'Uploading ' + file.name + ' as ' + m.id + '...');
  const form = new FormData();
  form.append('file', file);
  const up = await fetch(m.uploadURL, { method: 'POST', body: form });
  if (!up.ok) { say('error', 'The upload URL answered ' + up.status); return; }
  say('waiting', 'Uploaded; waiting for the draft to complete...');
  for (let i = 0; i < 240; i++) {
    const s = await fetch('/v1/direct-uploads/' + encodeURIComponent(m.id), { headers: auth });
    const d = await s.json();
    if (d.state === 'completed' && d.url) {
      const img = document.getElementById('result');
      img.onload = () => say('done', 'Delivered: ' + d.url);
      img.onerror = () => say('error', 'The delivery URL did not load: ' + d.url);
      img.src = d.url;
      return;
    }
    if (d.state === 'failed' || d.state === 'expired') { say('error', 'The draft ' + d.state + '.'); return; }
    await new Promise(r => setTimeout(r, 250));
  }
  say('error', 'The draft did not complete in time.');
}
document.getElementById('go').onclick = () => upload().catch(e => say('error', String(e)));
</script>
</body>
</html>
"#;

/// `GET /`: the page, with the demo key.
pub async fn page(State(svc): State<Arc<Service>>) -> Response {
    let key = svc
        .demo_key
        .as_ref()
        .map(|k| k.expose())
        .unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE.replace("__KEY__", key),
    )
        .into_response()
}
