//! `cfimg migrate --manifest FILE`: URL manifests end to end, the real binary against the
//! emulator and a loopback origin serving images.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::common::origin::{Origin, closed_port_url};
use crate::common::{TestEnv, jpeg, png, text};

/// Writes a manifest beside the ledger.
fn manifest(env: &TestEnv, name: &str, content: &str) -> PathBuf {
    let p = env.dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// Runs `cfimg migrate --manifest FILE --json <extra>`.
async fn migrate(env: &TestEnv, file: &Path, extra: &[&str]) -> (i32, Value, Output) {
    let mut args = vec!["migrate", "--manifest", file.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = env.run(&args).await;
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), summary, out)
}

/// `cfimg failures --all --json`, by key.
async fn failures(env: &TestEnv) -> Vec<Value> {
    let out = env.run(&["failures", "--all", "--json"]).await;
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", text(&out)))
        .as_array()
        .unwrap()
        .clone()
}

/// A bad line's record: keyed by its content, its reason names the line.
fn is_bad_line(f: &Value, line: &str) -> bool {
    f["key"]
        .as_str()
        .is_some_and(|k| k.starts_with("bad line #"))
        && f["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with(&format!("{line}:")))
}

fn reason_of<'a>(failures: &'a [Value], key: &str) -> &'a str {
    failures
        .iter()
        .find(|f| f["key"] == key || is_bad_line(f, key))
        .and_then(|f| f["reason"].as_str())
        .unwrap_or_else(|| panic!("{key} not in {failures:#?}"))
}

fn state_of<'a>(failures: &'a [Value], key: &str) -> &'a str {
    failures
        .iter()
        .find(|f| f["key"] == key || is_bad_line(f, key))
        .and_then(|f| f["state"].as_str())
        .unwrap_or_else(|| panic!("{key} not in {failures:#?}"))
}

/// The stored image with this id.
fn image(env: &TestEnv, id: &str) -> cfimg::emulator::InspectedImage {
    env.inspect()
        .images
        .into_iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("no image {id}"))
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex_of(&sha2::Sha256::digest(bytes))
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

async fn origin_with(names: &[&str]) -> (Origin, Vec<Vec<u8>>) {
    let origin = Origin::start().await;
    let mut all = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let bytes = if name.ends_with(".jpg") {
            jpeg(100 + i as u32, 1500 + i * 10)
        } else {
            png(100 + i as u32, 1500 + i * 10)
        };
        origin.put(name, bytes.clone());
        all.push(bytes);
    }
    (origin, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_manifest_uploads_its_urls_and_a_rerun_sends_nothing() {
    let env = TestEnv::new().await;
    let (origin, bytes) = origin_with(&["a.png", "b.jpg"]).await;
    let host = origin.id_host();
    let list = format!(
        "# two images\n{}\n\n{}?size=large#top\n",
        origin.img("a.png"),
        origin.img("b.jpg").replace("http://", "HTTP://")
    );
    let file = manifest(&env, "urls.txt", &list);
    let (code, summary, out) = migrate(&env, &file, &["--id-prefix", "web/"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 2, "{summary}");
    // Path ids: prefix + host + path; the query is not part of the id.
    let a = image(&env, &format!("web/{host}/img/a.png"));
    let b = image(&env, &format!("web/{host}/img/b.jpg"));
    assert_eq!(a.sha256, sha(&bytes[0]));
    assert_eq!(b.sha256, sha(&bytes[1]));
    assert_eq!(a.filename.as_deref(), Some("a.png"));
    // The key is the normalized URL: fragment dropped, query kept.
    let rows = env.ledger_rows();
    let b_key = format!("{}?size=large", origin.img("b.jpg"));
    assert!(rows.contains_key(&b_key), "{:?}", rows.keys());
    assert!(
        rows[&b_key].source.starts_with("manifest:/"),
        "{}",
        rows[&b_key].source
    );
    // Cloudflare (the emulator) fetched them: one request each.
    assert_eq!(origin.hits("/img/a.png"), 1);

    let posts = env.upload_posts();
    let hits = origin.total_hits();
    let (code, summary, out) = migrate(&env, &file, &["--id-prefix", "web/"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["skipped"].as_u64()),
        (Some(0), Some(2)),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), posts, "a rerun sends no upload");
    assert_eq!(origin.total_hits(), hits, "nor fetches anything");

    // One more line: only it is uploaded.
    origin.put("c.png", png(7, 900));
    std::fs::write(&file, format!("{list}{}\n", origin.img("c.png"))).unwrap();
    let (_, summary, _) = migrate(&env, &file, &["--id-prefix", "web/"]).await;
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(2)),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_json_lines_carry_ids_metadata_and_creators() {
    let env = TestEnv::new().await;
    let (origin, bytes) = origin_with(&["c1.png", "c2.png", "j1.png", "j2.jpg"]).await;
    let host = origin.id_host();
    let csv = format!(
        "url,id,metadata,creator\n\
         {},catalog/one.png,\"{{\"\"sku\"\":\"\"A1\"\"}}\",alice\n\
         {},,,\n",
        origin.img("c1.png"),
        origin.img("c2.png"),
    );
    let file = manifest(&env, "rows.csv", &csv);
    let (code, summary, out) = migrate(&env, &file, &[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let one = image(&env, "catalog/one.png");
    assert_eq!(one.sha256, sha(&bytes[0]));
    assert_eq!(one.meta["sku"], "A1");
    assert!(
        one.meta.contains_key("cfimg_src"),
        "stamped: {:?}",
        one.meta
    );
    assert_eq!(one.creator.as_deref(), Some("alice"));
    image(&env, &format!("{host}/img/c2.png"));

    let jsonl = format!(
        "{{\"url\": \"{}\", \"id\": \"lines/one.png\", \"metadata\": {{\"n\": 1}}}}\n\
         {{\"url\": \"{}\", \"creator\": \"bob\"}}\n",
        origin.img("j1.png"),
        origin.img("j2.jpg"),
    );
    let file = manifest(&env, "rows.ndjson", &jsonl);
    let (code, summary, out) = migrate(&env, &file, &[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let j1 = image(&env, "lines/one.png");
    assert_eq!(j1.meta["n"], 1);
    assert_eq!(j1.sha256, sha(&bytes[2]));
    assert_eq!(
        image(&env, &format!("{host}/img/j2.jpg"))
            .creator
            .as_deref(),
        Some("bob")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_change_in_the_csv_is_a_patch_not_a_new_upload() {
    let env = TestEnv::new().await;
    let (origin, _) = origin_with(&["m.png", "n.png"]).await;
    let row = |v: u32| {
        format!(
            "url,metadata\n{},\"{{\"\"v\"\":{v}}}\"\n{},\n",
            origin.img("m.png"),
            origin.img("n.png")
        )
    };
    let file = manifest(&env, "meta.csv", &row(1));
    let (code, summary, out) = migrate(&env, &file, &[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let id = format!("{}/img/m.png", origin.id_host());
    assert_eq!(image(&env, &id).meta["v"], 1);
    let posts = env.upload_posts();

    std::fs::write(&file, row(2)).unwrap();
    let (code, summary, out) = migrate(&env, &file, &[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        (
            summary["updated"].as_u64(),
            summary["uploaded"].as_u64(),
            summary["skipped"].as_u64()
        ),
        (Some(1), Some(0), Some(1)),
        "{summary}"
    );
    assert_eq!(env.api_requests("PATCH", "v1/{image_id}"), 1);
    assert_eq!(env.upload_posts(), posts, "no new upload");
    let m = image(&env, &id);
    assert_eq!(m.meta["v"], 2);
    assert!(
        m.meta.contains_key("cfimg_src"),
        "the stamp stays: {:?}",
        m.meta
    );
    assert_eq!(env.inspect().images.len(), 2);

    // Unchanged since: nothing at all.
    let (_, summary, _) = migrate(&env, &file, &[]).await;
    assert_eq!(summary["skipped"], 2, "{summary}");
    assert_eq!(env.api_requests("PATCH", "v1/{image_id}"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_a_manifest_source_too() {
    let env = TestEnv::new().await;
    let (origin, _) = origin_with(&["s.png"]).await;
    let mut child = env
        .cmd(&["migrate", "--manifest", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\nnot-a-url\n", origin.img("s.png")).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(summary["uploaded"], 1, "{summary}");
    let f = failures(&env).await;
    assert_eq!(f[0]["source"], "manifest:stdin");
    assert!(reason_of(&f, "line 2").contains("not a URL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_reported_with_their_line_numbers_and_never_stop_the_run() {
    let env = TestEnv::new().await;
    let (origin, _) = origin_with(&["ok.png", "ok2.png"]).await;
    let list = format!(
        "{}\nftp://example.com/x.png\n# fine\n{{not a url\n{}\n{}\n",
        origin.img("ok.png"),
        origin.img("ok2.png"),
        origin.img("ok.png"),
    );
    let file = manifest(&env, "mixed.txt", &list);
    let (code, summary, out) = migrate(&env, &file, &[]).await;
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(summary["uploaded"], 2, "{summary}");
    assert_eq!(summary["ignored"], 1, "{summary}");
    let f = failures(&env).await;
    assert!(
        reason_of(&f, "line 2").contains("not an http(s) URL"),
        "{f:#?}"
    );
    assert!(reason_of(&f, "line 4").contains("not a URL"), "{f:#?}");
    assert!(
        reason_of(&f, "line 6").contains("duplicate of line 1"),
        "{f:#?}"
    );
    assert_eq!(env.upload_posts(), 2);
    // The plain listing names them too.
    let out = env.run(&["failures"]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("line 2") && listed.contains("line 4"),
        "{listed}"
    );

    let bad_csv = manifest(&env, "bad.csv", "url,colour\nhttp://x/y.png,red\n");
    let (code, _, out) = migrate(&env, &bad_csv, &[]).await;
    assert_eq!(code, 2, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown column \"colour\""),
        "{}",
        text(&out)
    );

    let out = env
        .run(&["migrate", env.src.to_str().unwrap(), "--url-mode", "local"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let (code, _, out) = migrate(&env, &file, &["--id-mode", "hash"]).await;
    assert_eq!(code, 2, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--url-mode local"),
        "{}",
        text(&out)
    );
}

/// An emulator without rate limits, and a client that tries each request twice.
async fn env_retrying_twice() -> TestEnv {
    TestEnv::with(
        cfimg::emulator::EmulatorConfig {
            api_rate_limit: None,
            batch_rate_limit: None,
            ..Default::default()
        },
        "max_attempts = 2",
    )
    .await
}

/// The origin's troubles, as the manifest lists them.
fn troubles(origin: &Origin, closed: &str) -> String {
    [
        origin.img("good.png"),
        origin.img("missing.png"),
        origin.img("text.png"),
        closed.to_string(),
        origin.url("/redirect/2/good2.png"),
        origin.url("/status/503/flaky.png"),
    ]
    .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_leaves_fetching_to_cloudflare_and_records_what_it_refused() {
    let env = env_retrying_twice().await;
    let (origin, _) = origin_with(&["good.png", "good2.png"]).await;
    origin.put("text.png", b"just some text, not an image\n".to_vec());
    let closed = closed_port_url("/gone.png").await;
    let file = manifest(&env, "remote.txt", &troubles(&origin, &closed));
    let (code, summary, out) = migrate(&env, &file, &[]).await;
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let f = failures(&env).await;
    let key = |path: &str| origin.url(path);
    // 5454 naming the origin's 404: refused for good, without retries (issue 17.9).
    assert!(
        reason_of(&f, &key("/img/missing.png")).contains("5454"),
        "{f:#?}"
    );
    assert_eq!(state_of(&f, &key("/img/missing.png")), "rejected");
    assert_eq!(origin.hits("/img/missing.png"), 1);
    assert!(reason_of(&f, &closed).contains("5454"), "{f:#?}");
    assert!(
        reason_of(&f, &key("/status/503/flaky.png")).contains("5454"),
        "{f:#?}"
    );
    // Not an image: the service refused it for good.
    assert!(
        reason_of(&f, &key("/img/text.png")).contains("5455"),
        "{f:#?}"
    );
    assert_eq!(state_of(&f, &key("/img/text.png")), "rejected");
    // The redirect was followed; the item is still the URL the manifest lists.
    let rows = env.ledger_rows();
    assert_eq!(
        rows[&key("/redirect/2/good2.png")].state,
        cfimg::ledger::State::Uploaded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_downloads_and_checks_each_url_before_uploading() {
    let env = env_retrying_twice().await;
    let (origin, bytes) = origin_with(&["good.png", "good2.png"]).await;
    origin.put("text.png", b"just some text, not an image\n".to_vec());
    let closed = closed_port_url("/gone.png").await;
    let list = format!(
        "{}\n{}\n{}\n",
        troubles(&origin, &closed),
        origin.url("/big/huge.png"),
        origin.url("/redirect/7/good.png"),
    );
    let file = manifest(&env, "local.txt", &list);
    let (code, summary, out) = migrate(&env, &file, &["--url-mode", "local"]).await;
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(summary["uploaded"], 2, "{summary}");
    assert_eq!(
        env.upload_posts(),
        2,
        "nothing refused locally cost a request"
    );
    let key = |path: &str| origin.url(path);
    let f = failures(&env).await;
    let missing = reason_of(&f, &key("/img/missing.png"));
    assert!(missing.contains("the origin answered 404"), "{missing}");
    assert_eq!(state_of(&f, &key("/img/missing.png")), "rejected");
    assert!(reason_of(&f, &key("/img/text.png")).contains("not an accepted image type"));
    assert!(
        reason_of(&f, &key("/big/huge.png")).contains("10 MB"),
        "{f:#?}"
    );
    assert_eq!(state_of(&f, &key("/big/huge.png")), "rejected");
    assert!(
        reason_of(&f, &key("/redirect/7/good.png")).contains("redirect"),
        "{f:#?}"
    );
    // Transient troubles are retried (max_attempts = 2), then left for the next run.
    let flaky = reason_of(&f, &key("/status/503/flaky.png"));
    assert!(
        flaky.contains("503") && flaky.contains("next run"),
        "{flaky}"
    );
    assert_eq!(state_of(&f, &key("/status/503/flaky.png")), "failed");
    assert_eq!(origin.hits("/status/503/flaky.png"), 2);
    let refused = reason_of(&f, &closed);
    assert!(refused.contains("cannot connect"), "{refused}");
    // What went up are the origin's bytes, under ids made of the URL.
    let host = origin.id_host();
    assert_eq!(
        image(&env, &format!("{host}/img/good.png")).sha256,
        sha(&bytes[0])
    );
    assert_eq!(
        image(&env, &format!("{host}/redirect/2/good2.png")).sha256,
        sha(&bytes[1])
    );

    // A rerun downloads nothing that is done or refused; the failed ones are tried again.
    let hits = origin.hits("/img/good.png") + origin.hits("/img/missing.png");
    let (_, summary, _) = migrate(&env, &file, &["--url-mode", "local"]).await;
    assert_eq!(summary["uploaded"], 0, "{summary}");
    assert_eq!(summary["skipped"], 2, "{summary}");
    assert_eq!(env.upload_posts(), 2);
    assert_eq!(
        origin.hits("/img/good.png") + origin.hits("/img/missing.png"),
        hits
    );
    assert_eq!(origin.hits("/status/503/flaky.png"), 4, "failures retry");

    // Hash ids need the bytes: fine in local mode.
    let hashed = manifest(&env, "hashed.txt", &format!("{}\n", origin.img("good.png")));
    let (code, summary, out) =
        migrate(&env, &hashed, &["--url-mode", "local", "--id-mode", "hash"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 1, "{summary}");
    image(&env, &format!("{}.png", sha(&bytes[0])));
}
