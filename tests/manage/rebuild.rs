//! `ledger rebuild` of URL manifests: the rows are found again by their stamps, and the
//! next run sends and fetches nothing.

use serde_json::Value;

use crate::common::origin::Origin;
use crate::common::{TestEnv, png, text};

fn forget_ledger(env: &TestEnv) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.ledger.display()));
    }
}

async fn run_json(env: &TestEnv, args: &[&str]) -> (i32, Value, String) {
    let out = env.run(args).await;
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v, text(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_manifest_ledgers_are_rebuilt_and_a_rerun_uploads_and_fetches_nothing() {
    let env = TestEnv::new().await;
    let origin = Origin::start().await;
    for i in 0..5 {
        origin.put(&format!("{i}.png"), png(40 + i, 1200));
    }
    // A text manifest that Cloudflare fetches (no sha256 in the stamps), and a CSV with
    // per-row ids and metadata that cfimg downloads (sha256 and a settings digest).
    let txt = env.dir.path().join("urls.txt");
    std::fs::write(
        &txt,
        format!("{}\n{}\n", origin.img("0.png"), origin.img("1.png")),
    )
    .unwrap();
    let csv = env.dir.path().join("rows.csv");
    std::fs::write(
        &csv,
        format!(
            "url,id,metadata\n{},cat/two.png,\"{{\"\"sku\"\":\"\"B2\"\"}}\"\n{},,\n{},,\n",
            origin.img("2.png"),
            origin.img("3.png"),
            origin.img("4.png")
        ),
    )
    .unwrap();
    let (txt, csv) = (txt.to_str().unwrap(), csv.to_str().unwrap());
    let migrate = |file: &'static str| {
        let path = if file == "txt" { txt } else { csv };
        let mut args = vec!["migrate", "--manifest", path, "--json"];
        if file == "csv" {
            args.extend(["--url-mode", "local"]);
        }
        args
    };
    for (file, n) in [("txt", 2), ("csv", 3)] {
        let (code, summary, out) = run_json(&env, &migrate(file)).await;
        assert_eq!((code, summary["uploaded"].as_u64()), (0, Some(n)), "{out}");
    }
    let before = env.ledger_rows();
    assert_eq!(before.len(), 5);
    forget_ledger(&env);

    let (code, report, out) =
        run_json(&env, &["ledger", "rebuild", "--manifest", txt, "--json"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (
            report["items"].as_u64(),
            report["matched"].as_u64(),
            report["recorded"].as_u64()
        ),
        (Some(2), Some(2), Some(2)),
        "{report}"
    );
    assert!(
        report["source"].as_str().unwrap().starts_with("manifest:/"),
        "{report}"
    );
    let (code, report, out) =
        run_json(&env, &["ledger", "rebuild", "--manifest", csv, "--json"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["recorded"], 3, "{report}");
    assert_eq!(report["not_uploaded"], 0, "{report}");
    let after = env.ledger_rows();
    for (key, row) in &before {
        assert_eq!(after[key].image_id, row.image_id, "{key}");
        assert_eq!(after[key].sha256, row.sha256, "{key}");
    }

    let posts = env.upload_posts();
    let hits = origin.total_hits();
    for (file, n) in [("txt", 2), ("csv", 3)] {
        let (code, summary, out) = run_json(&env, &migrate(file)).await;
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            (summary["uploaded"].as_u64(), summary["skipped"].as_u64()),
            (Some(0), Some(n)),
            "{summary}"
        );
    }
    assert_eq!(env.upload_posts(), posts, "no upload after the rebuild");
    assert_eq!(origin.total_hits(), hits, "nor any download");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_needs_a_source_or_a_manifest_not_both() {
    let env = TestEnv::new().await;
    let out = env.run(&["ledger", "rebuild"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = env
        .run(&["ledger", "rebuild", "--source", "x", "--manifest", "y.txt"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
