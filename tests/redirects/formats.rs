//! Each format's output read back by its own rules: keys with a space, `%`, `,`, `"`,
//! non-ASCII and case twins come out the way that server expects them, and keys a format
//! cannot hold are counted, not written.

use std::path::Path;

use super::support::ledger_with;

const BASE: &str = "https://www.example.com/up/";
const DELIVERY: &str = "https://imagedelivery.net/AbCdEf/";

fn tricky_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "a b/100% ü.png",
        "x,y.png",
        "q\"uote.png",
        "Cat.png",
        "cat.png",
        "写真/(1)+[2]#3?.png",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push(format!("long/{}.png", "k".repeat(600)));
    keys
}

async fn run(ledger: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .arg("redirects")
        .args(args)
        .arg("--ledger")
        .arg(ledger)
        .output()
        .await
        .expect("cfimg runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .expect("utf-8")
        .into_owned()
}

async fn tricky_ledger(dir: &Path) -> std::path::PathBuf {
    let ledger = dir.join("l.sqlite");
    ledger_with(&ledger, "/srv/up", &tricky_keys(), DELIVERY).await;
    ledger
}

#[tokio::test]
async fn bulk_csv_netlify_and_apache_lines_parse_back_to_every_key() {
    let dir = tempfile::tempdir().expect("dir");
    let ledger = tricky_ledger(dir.path()).await;
    let keys = tricky_keys();

    // Bulk Redirects: no header, RFC 4180 quoting, source without a scheme, encoded path.
    let (code, out, err) = run(
        &ledger,
        &[
            "--format",
            "cloudflare-bulk",
            "--old-base",
            BASE,
            "--status",
            "302",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(out.as_bytes());
    let mut seen = Vec::new();
    for rec in r.records() {
        let rec = rec.expect("csv");
        assert_eq!(rec.len(), 3, "{rec:?}");
        let source = &rec[0];
        assert!(source.starts_with("www.example.com/up/"), "{source}");
        assert!(!source.contains(' ') && source.is_ascii(), "{source}");
        assert!(rec[1].starts_with(DELIVERY), "{rec:?}");
        assert_eq!(&rec[2], "302");
        seen.push(decode(source.trim_start_matches("www.example.com/up/")));
    }
    seen.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(seen, want);
    assert!(err.contains("fit every plan"), "{err}");

    // _redirects: three whitespace-separated fields, path only, nothing `_redirects` would
    // read as a placeholder or a splat.
    let (code, out, err) = run(&ledger, &["--format", "netlify", "--old-base", BASE]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), keys.len());
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f.len(), 3, "{l}");
        assert!(
            f[0].starts_with("/up/") && !f[0].contains(['*', ':', '!']),
            "{l}"
        );
        assert_eq!(f[2], "301");
        assert!(keys.contains(&decode(&f[0]["/up/".len()..])), "{l}");
    }

    // Apache txt map: `key value`, key = host + the path as int:escape writes it.
    let (code, out, err) = run(&ledger, &["--format", "apache", "--old-base", BASE]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("RewriteMap cfimg_esc int:escape") && out.contains("[R=301,L,NE,QSD]"),
        "{out}"
    );
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), keys.len());
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f.len(), 2, "{l}");
        let path = f[0]
            .strip_prefix("www.example.com/up/")
            .expect("host and base");
        assert!(keys.contains(&decode(path)), "{l}");
        // int:escape leaves these alone and escapes `;`, `[`, `#`, `?`.
        assert!(!path.contains(['[', '#', '?', ';', '"']), "{l}");
    }
}

/// The quoted tokens of a Caddyfile line, unescaped.
fn caddy_tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut t = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => t.push(chars.next().expect("escaped char")),
                '"' => break,
                c => t.push(c),
            }
        }
        out.push(t);
    }
    out
}

#[tokio::test]
async fn caddy_and_json_keys_are_the_decoded_path_and_kv_limits_are_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let ledger = tricky_ledger(dir.path()).await;
    let keys = tricky_keys();

    let (code, out, err) = run(&ledger, &["--format", "caddy", "--old-base", BASE]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("map {host}{path} {cfimg_redirect} {"), "{out}");
    assert!(
        out.contains("redir @cfimg_redirect {cfimg_redirect} 301"),
        "{out}"
    );
    let mut mapped = 0;
    for l in out
        .lines()
        .filter(|l| l.starts_with('\t') && !l.contains("default"))
    {
        let t = caddy_tokens(l);
        assert_eq!(t.len(), 2, "{l}");
        let key = t[0]
            .strip_prefix("www.example.com/up/")
            .expect("host and base");
        assert!(keys.iter().any(|k| k == key), "{l}");
        assert!(!t[1].contains(['{', '}', ' ']), "{l}");
        mapped += 1;
    }
    assert_eq!(mapped, keys.len());

    // Workers KV: a key is at most 512 bytes; the long one is counted, not written.
    let (code, out, err) = run(&ledger, &["--format", "json", "--old-base", BASE]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), keys.len() - 1);
    for e in arr {
        let k = e["key"].as_str().expect("key");
        assert!(k.len() <= 512);
        assert!(
            keys.iter().any(|x| k == format!("www.example.com/up/{x}")),
            "{k}"
        );
        assert_eq!(e["metadata"]["status"], 301);
    }
    assert!(
        err.contains("1 old URL left out: is longer than a Workers KV key"),
        "{err}"
    );
}

#[tokio::test]
async fn nginx_keys_twins_become_case_sensitive_regexes_and_bad_status_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ledger = tricky_ledger(dir.path()).await;
    let (code, out, err) = run(&ledger, &["--format", "nginx", "--old-base", BASE]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(r#""~^www\\.example\\.com\\/up\\/Cat\\.png$""#),
        "{out}"
    );
    assert!(
        out.contains(r#""~^www\\.example\\.com\\/up\\/cat\\.png$""#),
        "{out}"
    );
    assert!(out.contains(r#""www.example.com/up/q\"uote.png""#), "{out}");
    assert!(
        out.contains(r#""www.example.com/up/a b/100% ü.png""#),
        "{out}"
    );

    let (code, _, err) = run(
        &ledger,
        &["--format", "nginx", "--old-base", BASE, "--status", "200"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a redirect"), "{err}");
    let (code, _, err) = run(&ledger, &["--format", "nginx", "--old-base", "ftp://x/"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&ledger, &["--format", "nginx"]).await;
    assert_eq!(code, 2, "no base: {err}");
    assert!(err.contains("--old-base"), "{err}");
}

#[tokio::test]
async fn one_cloudflare_rule_covers_path_ids_and_other_ids_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let ledger = tricky_ledger(dir.path()).await;
    let (code, out, err) = run(
        &ledger,
        &[
            "--format",
            "cloudflare-rule",
            "--old-base",
            BASE,
            "--old-base",
            "https://cdn.example.com/up/",
            "--variant",
            "w800",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let rules = v["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{out}");
    let r = &rules[0];
    assert_eq!(
        r["expression"],
        r#"(http.host in {"www.example.com" "cdn.example.com"} and starts_with(http.request.uri.path, "/up/"))"#
    );
    assert_eq!(
        r["action_parameters"]["from_value"]["target_url"]["expression"],
        format!(
            r#"wildcard_replace(http.request.uri.path, "/up/*", "{DELIVERY}${{1}}/w800", "s")"#
        )
    );
    assert_eq!(r["action_parameters"]["from_value"]["status_code"], 301);

    // An item whose id is not its path: no single rule; the item and the way out are named.
    let other = dir.path().join("other.sqlite");
    ledger_with(&other, "/srv/up", &["a.png".to_string()], DELIVERY).await;
    {
        let (writer, thread) = cfimg::ledger::LedgerWriter::spawn(&other).expect("writer");
        let s = writer
            .source(&cfimg::item::SourceId::new(
                cfimg::item::SourceKind::Dir,
                "/srv/up",
            ))
            .await
            .expect("source");
        writer
            .commit(cfimg::ledger::Record::Uploaded {
                version: cfimg::ledger::Version {
                    source_id: s,
                    key: "b.png".into(),
                    size: 1,
                    mtime_ns: 1,
                    etag: None,
                    options: None,
                    sha256: Some("01".into()),
                    ticket: Default::default(),
                },
                image_id: "2b1c0f3e-uuid".into(),
                url: Some(format!("{DELIVERY}2b1c0f3e-uuid/public")),
                attempts: 1,
                replaced: false,
                stamp: None,
                check_after: None,
                superseded: None,
            })
            .await
            .expect("commit");
        drop(writer);
        thread.join().expect("thread").expect("writer");
    }
    let (code, _, err) = run(&other, &["--format", "cloudflare-rule", "--old-base", BASE]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("b.png") && err.contains("cloudflare-bulk"),
        "{err}"
    );
}
