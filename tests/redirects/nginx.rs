//! The nginx map, served by a real nginx: every old URL answers 301 to its recorded delivery
//! URL, which the emulator serves with the item's bytes; `redirects check` agrees, and
//! names a rule that is broken; many long keys still load.

use std::path::Path;

use super::support::{Nginx, free_port, ledger_with, nginx_conf, nginx_test};
use crate::common::{TestEnv, corrupt_png, png, text};

const OLD: &str = "http://old.test/uploads/";

/// HEAD through nginx with the old URL's host: (status, Location).
async fn head(client: &reqwest::Client, port: u16, old_url: &str) -> (u16, Option<String>) {
    let url = reqwest::Url::parse(old_url).expect("old url");
    let resp = client
        .head(format!("http://127.0.0.1:{port}{}", url.path()))
        .header("host", url.host_str().expect("host"))
        .send()
        .await
        .expect("nginx answers");
    let loc = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().expect("ascii").to_string());
    (resp.status().as_u16(), loc)
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_redirects_every_old_url_to_bytes_the_emulator_serves_and_check_agrees() {
    let env = TestEnv::new().await;
    // A space, a '%', non-ASCII, and two keys equal but for case (nginx's string keys
    // are case-insensitive: they would stop nginx with "conflicting parameter").
    let keys = [
        "2019/cat.png",
        "a b/100% ü.png",
        "icons/Logo.png",
        "icons/logo.png",
        "(x)+y;z.png",
    ];
    let mut bytes = std::collections::BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let b = png(i as u32 + 1, 300);
        env.write(k, &b);
        bytes.insert(k.to_string(), b);
    }
    env.write("broken.png", &corrupt_png(9));
    let (code, _, out) = env.migrate(&[]).await;
    assert!(code == 0 || code == 1, "migrate: {}", text(&out));
    let src = env.src.to_str().expect("utf-8");

    // The old base is stored with the source; `redirects` and `check` read it from there.
    let set = env.run(&["source", "set-old-base", src, OLD]).await;
    assert!(set.status.success(), "{}", text(&set));
    let listed = env.run(&["source", "list"]).await;
    assert!(
        text(&listed).contains(&format!("old base {OLD}")),
        "{}",
        text(&listed)
    );

    let conf_dir = tempfile::tempdir().expect("dir");
    let map = conf_dir.path().join("cfimg-redirects.conf");
    let map_s = map.to_str().expect("utf-8");
    let made = env
        .run(&["redirects", "--format", "nginx", "-o", map_s])
        .await;
    assert!(made.status.success(), "{}", text(&made));
    let summary = String::from_utf8_lossy(&made.stderr).into_owned();
    assert!(summary.contains("5 old URLs redirected"), "{summary}");
    assert!(summary.contains("1 item not uploaded"), "{summary}");

    let port = free_port();
    let conf = nginx_conf(conf_dir.path(), port, &map);
    let (ok, log) = nginx_test(conf_dir.path(), &conf);
    assert!(ok, "nginx -t: {log}");
    let nginx = Nginx::start(conf_dir.path(), &conf, port);

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let rows = env.ledger_rows();
    for (k, want_bytes) in &bytes {
        let row = rows.values().find(|r| &r.key == k).expect("row");
        let delivery = row.url.clone().expect("delivery url");
        for old in cfimg::old_url::old_urls(
            &cfimg::old_url::OldBases::from_flags(&[OLD.into()]).expect("base"),
            row.source_id,
            cfimg::item::SourceKind::Dir,
            k,
        ) {
            let (status, loc) = head(&client, nginx.port, &old).await;
            assert_eq!(status, 301, "{old}");
            assert_eq!(loc.as_deref(), Some(delivery.as_str()), "{old}");
            let got = client
                .get(&delivery)
                .send()
                .await
                .expect("emulator answers");
            assert_eq!(got.status().as_u16(), 200, "{delivery}");
            assert_eq!(
                &got.bytes().await.expect("body")[..],
                &want_bytes[..],
                "{k}"
            );
        }
    }
    // The item that was not uploaded has no rule.
    let (status, _) = head(&client, nginx.port, &format!("{OLD}broken.png")).await;
    assert_eq!(status, 404);

    // `redirects check` requests every old URL through nginx: all redirect.
    let host = format!("http://127.0.0.1:{}", nginx.port);
    let ok = env.run(&["redirects", "check", "--host", &host]).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(
        text(&ok).contains("checked 5 old URLs: 5 to the delivery URL, 0 not"),
        "{}",
        text(&ok)
    );
    drop(nginx);

    // A rule pointing elsewhere is reported, and the check fails.
    let generated = std::fs::read_to_string(&map).expect("map");
    let cat = rows
        .values()
        .find(|r| r.key == "2019/cat.png")
        .expect("row");
    let cat_url = cat.url.clone().expect("url");
    let broken = generated.replace(&format!("\"{cat_url}\""), "\"https://wrong.example/x\"");
    assert_ne!(broken, generated);
    std::fs::write(&map, broken).expect("write");
    let nginx = Nginx::start(conf_dir.path(), &conf, port);
    let bad = env
        .run(&["redirects", "check", "--host", &host, "--concurrency", "2"])
        .await;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let stdout = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(&format!("FAIL {OLD}2019/cat.png"))
            && stdout.contains("https://wrong.example/x")
            && stdout.contains(&cat_url),
        "{stdout}"
    );
    // A sample checks that many.
    let some = env
        .run(&["redirects", "check", "--host", &host, "--sample", "2"])
        .await;
    assert!(
        text(&some).contains("checked 2 old URLs"),
        "{}",
        text(&some)
    );
    drop(nginx);
}

/// Writes `n` keys of about `len` bytes (a few of them near nginx's 4 KB token limit).
fn long_keys(n: usize, len: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let l = if i % 5000 == 0 { 3_800 } else { len };
            let stem = format!("dir-{:03}/{i:07}-", i % 997);
            format!("{stem}{}.jpg", "x".repeat(l.saturating_sub(stem.len() + 4)))
        })
        .collect()
}

async fn generate(ledger: &Path, out: &Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .args([
            "redirects",
            "--format",
            "nginx",
            "--old-base",
            "https://www.example.com/wp-content/uploads/",
        ])
        .arg("--ledger")
        .arg(ledger)
        .arg("-o")
        .arg(out)
        .output()
        .await
        .expect("cfimg runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_map_of_many_long_keys_loads_in_a_stock_nginx() {
    let dir = tempfile::tempdir().expect("dir");
    let ledger = dir.path().join("ledger.sqlite");
    let keys = long_keys(20_000, 300);
    ledger_with(
        &ledger,
        "/srv/uploads",
        &keys,
        "https://imagedelivery.net/AbCdEf/",
    )
    .await;
    let map = dir.path().join("map.conf");
    let out = generate(&ledger, &map).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = nginx_conf(dir.path(), free_port(), &map);
    let (ok, log) = nginx_test(dir.path(), &conf);
    assert!(ok, "nginx -t on 20,000 long keys: {log}");

    // Without the hash sizes the file sets, nginx refuses the same map.
    let generated = std::fs::read_to_string(&map).expect("map");
    let bare: String = generated
        .lines()
        .filter(|l| !l.starts_with("map_hash_"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&map, bare).expect("write");
    let (ok, log) = nginx_test(dir.path(), &conf);
    assert!(!ok && log.contains("map_hash"), "{log}");
}
