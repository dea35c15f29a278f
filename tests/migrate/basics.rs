//! The happy paths: a tree goes up byte for byte, reruns are no-ops, changes are replaced.

use crate::common::{TestEnv, jpeg, png, sha256_file, text};

const TREE: &[&str] = &[
    "a.png",
    "photos/2024/cat.jpg",
    "photos/2024/dog.jpg",
    "ünïcødé/ファイル.png",
    "deep/er/still/x y.png",
];

fn write_tree(env: &TestEnv) {
    for (i, key) in TREE.iter().enumerate() {
        let bytes = if key.ends_with(".jpg") {
            jpeg(i as u32, 3000 + i * 100)
        } else {
            png(i as u32, 2000 + i * 100)
        };
        env.write(key, &bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_a_nested_tree_byte_for_byte_under_path_ids() {
    let env = TestEnv::new().await;
    write_tree(&env);
    let (code, summary, out) = env.migrate(&["--id-prefix", "legacy/"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], TREE.len(), "{summary}");
    env.assert_exactly_once(TREE).await;

    let http = reqwest::Client::new();
    let rows = env.ledger_rows();
    for key in TREE {
        let row = &rows[*key];
        assert_eq!(
            row.image_id.as_deref(),
            Some(format!("legacy/{key}").as_str())
        );
        // The delivery URL recorded in the ledger serves exactly the file's bytes.
        let url = row.url.as_deref().expect("delivery url");
        let body = http.get(url).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(
            body.as_ref(),
            std::fs::read(env.src.join(key)).unwrap(),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_sends_no_upload_and_a_new_file_alone_is_uploaded() {
    let env = TestEnv::new().await;
    write_tree(&env);
    assert_eq!(env.migrate(&[]).await.0, 0);
    let posts = env.upload_posts();

    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["skipped"].as_u64()),
        (Some(0), Some(TREE.len() as u64)),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), posts, "a rerun must not upload");

    env.write("new/one.png", &png(99, 500));
    let (code, summary, _) = env.migrate(&[]).await;
    assert_eq!(code, 0);
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert_eq!(env.upload_posts(), posts + 1);
    let mut all = TREE.to_vec();
    all.push("new/one.png");
    env.assert_exactly_once(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_replaces_its_image_and_a_touched_one_does_not() {
    for mode in ["path", "hash", "auto"] {
        let env = TestEnv::new().await;
        write_tree(&env);
        assert_eq!(env.migrate(&["--id-mode", mode]).await.0, 0, "{mode}");
        let before = env.ledger_rows();

        // New content at a known source.
        env.write("photos/2024/cat.jpg", &jpeg(1234, 5000));
        // Same content, new mtime: hashed again, not uploaded.
        let dog = env.src.join("photos/2024/dog.jpg");
        let bytes = std::fs::read(&dog).unwrap();
        std::fs::remove_file(&dog).unwrap();
        std::fs::write(&dog, bytes).unwrap();
        let posts = env.upload_posts();

        let (code, summary, out) = env.migrate(&["--id-mode", mode]).await;
        assert_eq!(code, 0, "{mode}: {}", text(&out));
        assert_eq!(
            (summary["uploaded"].as_u64(), summary["replaced"].as_u64()),
            (Some(1), Some(1)),
            "{mode}: {summary}"
        );
        assert_eq!(env.upload_posts(), posts + 1, "{mode}");
        env.assert_exactly_once(TREE).await;
        let after = env.ledger_rows();
        let cat = &after["photos/2024/cat.jpg"];
        assert!(cat.replaced_at.is_some(), "{mode}: replaced_at is recorded");
        assert_eq!(
            cat.sha256.as_deref(),
            Some(sha256_file(&env.src.join("photos/2024/cat.jpg")).as_str())
        );
        if mode == "path" {
            assert_eq!(
                cat.image_id, before["photos/2024/cat.jpg"].image_id,
                "path ids stay"
            );
        } else {
            assert_ne!(
                cat.image_id, before["photos/2024/cat.jpg"].image_id,
                "{mode}: new content, new id"
            );
        }
        assert_eq!(
            after["photos/2024/dog.jpg"].image_id,
            before["photos/2024/dog.jpg"].image_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_ids_store_identical_content_once() {
    let env = TestEnv::new().await;
    let same = png(7, 4000);
    env.write("a/one.png", &same);
    env.write("b/two.png", &same);
    env.write("c/other.png", &png(8, 4000));
    let (code, summary, out) = env.migrate(&["--id-mode", "hash"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let rows = env.ledger_rows();
    assert_eq!(rows["a/one.png"].image_id, rows["b/two.png"].image_id);
    assert_eq!(env.inspect().images.len(), 2, "{summary}");

    // A third copy added later points at the existing image without any request.
    env.write("d/three.png", &same);
    let posts = env.upload_posts();
    let (_, summary, _) = env.migrate(&["--id-mode", "hash"]).await;
    assert_eq!(summary["deduplicated"], 1, "{summary}");
    assert_eq!(env.upload_posts(), posts);
    assert_eq!(
        env.ledger_rows()["d/three.png"].image_id,
        rows["a/one.png"].image_id
    );

    // A file whose new content equals another's joins that image; its old one goes away.
    env.write("c/other.png", &same);
    let (code, summary, out) = env.migrate(&["--id-mode", "hash"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["replaced"], 1, "{summary}");
    // Nothing was uploaded for it: it now shares the image another file stored.
    assert_eq!(summary["uploaded"], 0, "{summary}");
    assert_eq!(summary["deduplicated"], 1, "{summary}");
    assert_eq!(
        env.inspect().images.len(),
        1,
        "the image nobody holds any more is deleted"
    );
    assert_eq!(
        env.ledger_rows()["c/other.png"].image_id,
        rows["a/one.png"].image_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_and_estimates_the_time() {
    let env = TestEnv::with(cfimg::emulator::EmulatorConfig::default(), "rate = 2").await;
    write_tree(&env);
    env.write("notes.txt", b"not an image");
    let (code, summary, out) = env.migrate(&["--dry-run"]).await;
    assert_eq!(
        code,
        1,
        "a rejected file makes the run incomplete: {}",
        text(&out)
    );
    assert_eq!(summary["would_upload"], TREE.len(), "{summary}");
    assert_eq!(summary["rejected"], 1);
    assert_eq!(
        summary["estimated_secs"].as_f64(),
        Some(TREE.len() as f64 / 2.0)
    );
    assert_eq!(env.total_requests(), 0, "a dry run sends no request at all");
    assert!(!env.ledger.exists(), "a dry run creates no ledger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_images_get_cloudflare_ids_and_status_reports_the_ledger() {
    let env = TestEnv::new().await;
    write_tree(&env);
    let (code, _, out) = env
        .migrate(&[
            "--require-signed-urls",
            "--id-mode",
            "auto",
            "--metadata",
            r#"{"team":"web"}"#,
        ])
        .await;
    assert_eq!(code, 0, "{}", text(&out));
    env.assert_exactly_once(TREE).await;
    for img in env.inspect().images {
        assert!(img.require_signed_urls);
        assert!(cfimg::rules::is_uuid(&img.id), "{}", img.id);
        assert_eq!(img.meta["team"], "web");
    }
    let out = env.run(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["items"]["uploaded"], TREE.len(), "{status}");
    assert_eq!(status["last_run"]["outcome"], "done");
}
