//! `export`, `verify` and `ledger rebuild` round trips on a migrated tree.

use serde_json::Value;

use crate::common::{TOKEN, TestEnv, png, sha256_bytes, text};

const TREE: &[&str] = &["a.png", "b/c.png", "b/d e.png", "ünï/f,g.png"];

async fn migrated() -> TestEnv {
    let env = TestEnv::new().await;
    env.write_pngs(TREE, 300);
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], TREE.len(), "{summary}");
    env
}

/// Uploads an image straight through the API with this metadata (as another client would).
/// Deletes an image the way the dashboard or another tool would: `cfimg images delete`
/// refuses an image the ledger maps (or, forced, tells the ledger).
async fn delete_behind_the_ledger(env: &TestEnv, id: &str) {
    let url = format!(
        "{}/accounts/{}/images/v1/{id}",
        env.emu.api_base(),
        env.emu.account_id()
    );
    let resp = reqwest::Client::new()
        .delete(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{id}");
}

async fn upload_with_meta(env: &TestEnv, bytes: Vec<u8>, meta: Value) -> String {
    let url = format!(
        "{}/accounts/{}/images/v1",
        env.emu.api_base(),
        env.emu.account_id()
    );
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name("x.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text("metadata", meta.to_string());
    let resp: Value = reqwest::Client::new()
        .post(url)
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["success"], true, "{resp}");
    resp["result"]["id"].as_str().unwrap().to_string()
}

async fn verify(env: &TestEnv, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let out = env.run(&args).await;
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("verify prints JSON: {}", text(&out)));
    (out.status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_every_row_as_csv_and_jsonl_with_its_url_and_variant() {
    let env = migrated().await;
    let csv_path = env.dir.path().join("out.csv");
    let out = env.run(&["export", "-o", csv_path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "source",
            "key",
            "state",
            "sha256",
            "image_id",
            "url",
            "uploaded_at",
            "variant",
            "variant_url_base",
            "size",
            "last_error"
        ]
    );
    let rows = env.ledger_rows();
    let mut seen = 0;
    for rec in reader.records() {
        let rec = rec.unwrap();
        let row = &rows[&rec[1]];
        assert_eq!(&rec[2], "uploaded");
        assert_eq!(Some(&rec[4]), row.image_id.as_deref());
        assert_eq!(Some(&rec[5]), row.url.as_deref());
        assert_eq!(&rec[7], "public");
        assert_eq!(format!("{}/{}", &rec[8], &rec[7]), rec[5]);
        assert_eq!(Some(&rec[3]), row.sha256.as_deref());
        seen += 1;
    }
    assert_eq!(seen, TREE.len());

    let out = env.run(&["export", "--format", "jsonl"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), TREE.len());
    assert!(lines.iter().any(|l| l["key"] == "ünï/f,g.png"));

    // A source filter that matches nothing known is an error; the folder itself matches.
    let src = env.src.to_str().unwrap();
    let out = env.run(&["export", "--source", src]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = env.run(&["export", "--source", "/nowhere"]).await;
    assert_ne!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_missing_duplicate_and_orphan_and_repair_plus_migrate_fixes_them() {
    let env = migrated().await;
    let (code, report) = verify(&env, &[]).await;
    assert_eq!(
        (code, report["clean"].as_bool()),
        (0, Some(true)),
        "{report}"
    );
    assert_eq!(report["pages"], 1);

    let rows = env.ledger_rows();
    // Missing: an image deleted behind the ledger's back.
    let gone = rows["a.png"].image_id.clone().unwrap();
    delete_behind_the_ledger(&env, &gone).await;
    // Duplicate: another image of the same version of b/c.png.
    let c = &rows["b/c.png"];
    let c_bytes = std::fs::read(env.src.join("b/c.png")).unwrap();
    let dup = upload_with_meta(
        &env,
        c_bytes.clone(),
        serde_json::json!({ "cfimg_src": c.stamp.clone().unwrap(), "cfimg_sha256": sha256_bytes(&c_bytes) }),
    )
    .await;
    // Orphan with an origin: an older version of b/d e.png; and one from elsewhere.
    let d = &rows["b/d e.png"];
    let old = png(77, 300);
    let orphan = upload_with_meta(
        &env,
        old.clone(),
        serde_json::json!({ "cfimg_src": d.stamp.clone().unwrap(), "cfimg_sha256": sha256_bytes(&old) }),
    )
    .await;
    let stranger = upload_with_meta(
        &env,
        png(78, 300),
        serde_json::json!({ "cfimg_src": "0".repeat(32) }),
    )
    .await;

    let (code, report) = verify(&env, &[]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["counts"]["missing"], 1, "{report}");
    assert_eq!(report["missing"][0]["key"], "a.png");
    assert_eq!(report["counts"]["duplicates"], 1, "{report}");
    assert_eq!(report["duplicates"][0]["image_id"], dup.as_str());
    assert_eq!(
        report["duplicates"][0]["kept"],
        c.image_id.as_deref().unwrap()
    );
    assert_eq!(report["counts"]["orphans"], 1, "{report}");
    let known = &report["orphans"][0];
    assert_eq!(known["image_id"], orphan.as_str(), "{report}");
    assert_eq!(known["key"], "b/d e.png", "{report}");
    // A stamp of a source this ledger never saw: counted, not judged (issue 17).
    assert_eq!(report["other_sources_or_shards"], 1, "{report}");
    assert_eq!(report["counts"]["mismatches"], 0);

    let (code, report) = verify(&env, &["--repair"]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["repaired"]["requeued"], 1, "{report}");
    assert_eq!(report["repaired"]["deleted"], 1, "{report}");
    assert!(env.inspect().images.iter().all(|i| i.id != dup));

    let posts = env.upload_posts();
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert_eq!(env.upload_posts(), posts + 1);

    // Only the orphan is left; once deleted, verify is clean.
    let (code, report) = verify(&env, &[]).await;
    assert_eq!(
        (code, report["counts"]["orphans"].as_u64()),
        (1, Some(1)),
        "{report}"
    );
    assert_eq!(report["counts"]["missing"], 0, "{report}");
    let out = env
        .run(&["images", "delete", &orphan, &stranger, "--yes"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, report) = verify(&env, &[]).await;
    assert_eq!(code, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ledger_is_rebuilt_from_the_stamps_and_the_next_run_uploads_nothing() {
    let env = migrated().await;
    let before = env.ledger_rows();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.ledger.display()));
    }
    // One file changed while the ledger was lost, one is new.
    env.write("b/c.png", &png(500, 400));
    env.write("new.png", &png(501, 400));
    let src = env.src.to_str().unwrap();
    let out = env
        .run(&["ledger", "rebuild", "--source", src, "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["matched"], TREE.len(), "{report}");
    assert_eq!(report["recorded"], TREE.len(), "{report}");
    assert_eq!(report["changed_since"], 1, "{report}");
    assert_eq!(report["not_uploaded"], 1, "{report}");
    let after = env.ledger_rows();
    for key in TREE {
        assert_eq!(after[*key].image_id, before[*key].image_id, "{key}");
        assert_eq!(after[*key].url, before[*key].url, "{key}");
    }

    let posts = env.upload_posts();
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    // The changed file is replaced and the new one uploaded; the rest are skipped.
    assert_eq!(summary["uploaded"], 2, "{summary}");
    assert_eq!(summary["skipped"], TREE.len() - 1, "{summary}");
    assert_eq!(env.upload_posts(), posts + 2);
    let (code, summary, _) = env.migrate(&[]).await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(0)),
        "{summary}"
    );
    let (code, report) = verify(&env, &[]).await;
    assert_eq!(code, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_tree_rebuilt_needs_zero_uploads() {
    let env = migrated().await;
    std::fs::remove_file(&env.ledger).unwrap();
    let _ = std::fs::remove_file(format!("{}-wal", env.ledger.display()));
    let src = env.src.to_str().unwrap();
    let out = env.run(&["ledger", "rebuild", "--source", src]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let posts = env.upload_posts();
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["skipped"].as_u64()),
        (Some(0), Some(TREE.len() as u64)),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), posts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_of_a_missing_image_is_adopted_instead_of_deleted() {
    let env = migrated().await;
    let a = env.ledger_rows()["a.png"].clone();
    let bytes = std::fs::read(env.src.join("a.png")).unwrap();
    let twin = upload_with_meta(
        &env,
        bytes.clone(),
        serde_json::json!({ "cfimg_src": a.stamp.clone().unwrap(), "cfimg_sha256": sha256_bytes(&bytes) }),
    )
    .await;
    let recorded = a.image_id.clone().unwrap();
    delete_behind_the_ledger(&env, &recorded).await;
    let (code, report) = verify(&env, &[]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["counts"]["missing"], 0, "{report}");
    assert_eq!(report["duplicates"][0]["stands_in"], true, "{report}");
    let (_, report) = verify(&env, &["--repair"]).await;
    assert_eq!(report["duplicates"][0]["adopted"], true, "{report}");
    assert_eq!(
        env.ledger_rows()["a.png"].image_id.as_deref(),
        Some(twin.as_str())
    );
    let (code, report) = verify(&env, &[]).await;
    assert_eq!(code, 0, "{report}");
    let posts = env.upload_posts();
    let (code, summary, _) = env.migrate(&[]).await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(0)),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), posts);
}
