//! Prometheus, for real: a live scrape of `cfimg migrate --metrics-addr` (and of `cfimg
//! watch --metrics-addr`) passes `promtool check metrics`; deploy/prometheus's rules pass
//! `promtool check rules` and their unit tests, one per alert; every metric the rules, their
//! tests and the Grafana dashboard name is one cfimg exports.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::TestEnv;

const WAIT: Duration = Duration::from_secs(60);

/// Debian's `promtool` (package `prometheus`), or why the test cannot run.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CFIMG_SKIP_PROMTOOL").as_deref() == Ok("1") {
            eprintln!("skipped: no promtool and CFIMG_SKIP_PROMTOOL=1");
            return None;
        }
        panic!(
            "promtool is not installed: `apt-get install -y --no-install-recommends prometheus` \
             (as .ci/run does), or set CFIMG_SKIP_PROMTOOL=1 to skip this test explicitly"
        );
    }
    found
}

/// Runs promtool with `stdin`; panics with its output unless it succeeds.
fn promtool_ok(promtool: &Path, args: &[&str], cwd: &Path, stdin: &str) -> String {
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("stdin written");
    }
    let out = child.wait_with_output().expect("promtool ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{text}\n--- input:\n{stdin}"
    );
    text
}

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

/// The metrics address the process logged, once it has.
async fn logged_addr(log: &Path) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains("metrics at /metrics"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|s| s.split_whitespace().next())
        {
            return addr.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics address logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET on the endpoint as curl and promtool do (no OpenMetrics in Accept): status, body.
async fn get(addr: &str, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("the endpoint answers");
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// One figure of a scrape (None when absent).
fn figure(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The metric names of a scrape's samples.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every `cfimg_...` metric name a file mentions.
fn named_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cfimg_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.insert(name);
    }
    out
}

/// `alert: NAME` lines of a rules file, `alertname: NAME` of its tests.
fn alerts(text: &str, key: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
        .map(|n| n.trim().to_string())
        .collect()
}

/// A live scrape of `cfimg migrate --metrics-addr` while it uploads, then of `cfimg watch
/// --metrics-addr`: both pass `promtool check metrics`; returns every sample name of both.
async fn live_scrapes(promtool: &Path) -> BTreeSet<String> {
    let env = TestEnv::new().await;
    let keys: Vec<String> = (0..20).map(|i| format!("p/{i:02}.png")).collect();
    env.write_pngs(&keys, 2000);
    let log = env.dir.path().join("migrate.log");
    let src = env.src.to_str().expect("utf-8 path").to_string();
    // Slow enough (4 uploads a second) that the run is still going while it is scraped.
    let child = env
        .cmd(&[
            "migrate",
            &src,
            "--json",
            "--rate",
            "4",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("cfimg migrate starts");
    let addr = logged_addr(&log).await;

    // Live figures: the scrape follows the run while it uploads.
    let deadline = tokio::time::Instant::now() + WAIT;
    let scrape = loop {
        let (status, text) = get(&addr, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        if figure(&text, "cfimg_uploads_total").is_some_and(|n| n >= 1.0) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no upload counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        figure(&scrape, "cfimg_items_discovered_total"),
        Some(20.0),
        "{scrape}"
    );
    assert_eq!(figure(&scrape, "cfimg_healthy"), Some(1.0), "{scrape}");
    assert!(
        figure(&scrape, "cfimg_requests_total{host=\"api\"}").is_some_and(|n| n >= 1.0),
        "{scrape}"
    );
    assert!(
        figure(&scrape, "cfimg_last_upload_timestamp_seconds").is_some_and(|t| t > 1.7e9),
        "{scrape}"
    );
    let (status, body) = get(&addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    promtool_ok(promtool, &["check", "metrics"], Path::new("."), &scrape);

    // Prometheus asks for OpenMetrics, and gets it.
    let om = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("the endpoint answers");
    assert!(
        om.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        om.headers()
    );
    assert!(om.text().await.expect("body").ends_with("# EOF\n"));

    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the migration ends")
        .expect("wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["uploaded"], 20, "{summary}");
    let mut names = sample_names(&scrape);

    // The daemon's endpoint: the same figures, and the watched folder's.
    let env = TestEnv::new().await;
    let daemon = crate::watch::Daemon::start(&env, &["--metrics-addr", "127.0.0.1:0"]).await;
    let addr = logged_addr(&daemon.log).await;
    let (status, scrape) = get(&addr, "/metrics").await;
    assert_eq!(status, 200, "{scrape}");
    promtool_ok(promtool, &["check", "metrics"], Path::new("."), &scrape);
    names.extend(sample_names(&scrape));
    assert_eq!(daemon.stop().await, 0);
    names
}

#[tokio::test]
async fn migrate_serves_live_metrics_that_promtool_accepts_and_the_rules_use_only_those() {
    let Some(promtool) = promtool() else {
        return;
    };
    let exported = live_scrapes(&promtool).await;
    for file in [
        "prometheus/cfimg.rules.yml",
        "prometheus/cfimg.rules.test.yml",
        "grafana/cfimg-dashboard.json",
    ] {
        let text = std::fs::read_to_string(deploy(file)).expect("deploy file");
        let named = named_metrics(&text);
        assert!(!named.is_empty(), "{file} names no metric");
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics cfimg does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}

#[test]
fn the_rules_pass_promtool_and_each_alert_has_a_unit_test() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = deploy("prometheus");
    let out = promtool_ok(&promtool, &["check", "rules", "cfimg.rules.yml"], &dir, "");
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
    promtool_ok(
        &promtool,
        &["test", "rules", "cfimg.rules.test.yml"],
        &dir,
        "",
    );

    let rules = std::fs::read_to_string(dir.join("cfimg.rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("cfimg.rules.test.yml")).expect("tests");
    let defined = alerts(&rules, "alert:");
    assert_eq!(
        defined.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "CfimgFailuresRising",
            "CfimgLedgerNotAdvancing",
            "CfimgThrottled",
            "CfimgUnhealthy",
            "CfimgUploadsStalled"
        ]
    );
    assert_eq!(defined, alerts(&tests, "alertname:"), "one test per alert");
    for alert in rules.split("- alert: ").skip(1) {
        assert!(alert.contains("\n        for: "), "no `for:` in {alert}");
        assert!(alert.contains("description: "), "no description in {alert}");
    }
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let Some(promtool) = promtool() else {
        return;
    };
    let text = std::fs::read_to_string(deploy("grafana/cfimg-dashboard.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    // Grafana's variables as Prometheus would see them once Grafana has filled them in;
    // promtool parses each query as a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&e).expect("quoted")
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("dashboard.rules.yml"), &rules).expect("rules");
    promtool_ok(
        &promtool,
        &["check", "rules", "dashboard.rules.yml"],
        dir.path(),
        "",
    );
}
