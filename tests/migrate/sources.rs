//! One ledger, many sources: items are keyed by (source, key), stamps name the source, and
//! a ledger belongs to one destination.

use cfimg::emulator::EmulatorConfig;

use crate::common::{TestEnv, png, sha256_file, text, write_in};

/// Folder A has 8 files; folder B has 6: two at A's paths with A's content, two at A's
/// paths with other content, two new.
fn two_folders(env: &TestEnv) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = env.dir.path().join("a");
    let b = env.dir.path().join("b");
    for i in 0..8u32 {
        write_in(&a, &format!("p/{i}.png"), &png(i, 1500));
    }
    write_in(&b, "p/0.png", &png(0, 1500));
    write_in(&b, "p/1.png", &png(1, 1500));
    write_in(&b, "p/2.png", &png(102, 1500));
    write_in(&b, "p/3.png", &png(103, 1500));
    write_in(&b, "p/new0.png", &png(200, 1500));
    write_in(&b, "p/new1.png", &png(201, 1500));
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_folder_with_the_same_paths_never_touches_the_first() {
    for mode in ["path", "hash", "auto"] {
        let env = TestEnv::new().await;
        let (a, b) = two_folders(&env);
        let (code, _, out) = env.migrate_dir(&a, &["--id-mode", mode]).await;
        assert_eq!(code, 0, "{mode}: {}", text(&out));
        let a_images: Vec<(String, String)> = env
            .all_rows()
            .into_iter()
            .map(|r| (r.key, r.image_id.expect("image id")))
            .collect();
        assert_eq!(a_images.len(), 8);

        let (code, summary, out) = env.migrate_dir(&b, &["--id-mode", mode]).await;
        let held = env.inspect().images;
        // Every image of A is still there, with A's bytes.
        for (key, id) in &a_images {
            let img = held
                .iter()
                .find(|i| &i.id == id)
                .unwrap_or_else(|| panic!("{mode}: A's image {id} for {key} is gone"));
            assert_eq!(img.sha256, sha256_file(&a.join(key)), "{mode}: {key}");
        }
        match mode {
            // Same content at the same id is shared; other content is refused with the fix.
            "path" => {
                assert_eq!(code, 1, "{mode}: {}", text(&out));
                assert_eq!(
                    (
                        summary["uploaded"].as_u64(),
                        summary["deduplicated"].as_u64(),
                        summary["rejected"].as_u64()
                    ),
                    (Some(2), Some(2), Some(2)),
                    "{mode}: {summary}"
                );
                let failures = env.run(&["failures", "--json"]).await;
                let listed = String::from_utf8_lossy(&failures.stdout);
                assert!(
                    listed.contains("--id-prefix")
                        && listed.contains(&format!(
                            "dir:{}",
                            std::fs::canonicalize(&a).unwrap().display()
                        )),
                    "{listed}"
                );
                assert_eq!(held.len(), 10);
            }
            "hash" => {
                assert_eq!(code, 0, "{mode}: {}", text(&out));
                assert_eq!(summary["deduplicated"].as_u64(), Some(2), "{summary}");
                assert_eq!(held.len(), 12);
            }
            _ => {
                assert_eq!(code, 0, "{mode}: {}", text(&out));
                assert_eq!(summary["uploaded"].as_u64(), Some(6), "{summary}");
                assert_eq!(held.len(), 14);
            }
        }
        // Reruns of either upload nothing and delete nothing.
        let posts = env.upload_posts();
        let deletes = env.api_requests("DELETE", "v1/{image_id}");
        let (_, summary, _) = env.migrate_dir(&a, &["--id-mode", mode]).await;
        assert_eq!(summary["skipped"].as_u64(), Some(8), "{mode}: {summary}");
        let (_, summary, _) = env.migrate_dir(&b, &["--id-mode", mode]).await;
        assert_eq!(summary["uploaded"].as_u64(), Some(0), "{mode}: {summary}");
        assert_eq!(env.upload_posts(), posts, "{mode}");
        assert_eq!(
            env.api_requests("DELETE", "v1/{image_id}"),
            deletes,
            "{mode}"
        );
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_folder_through_a_symlink_or_a_relative_path_is_the_same_source() {
    let env = TestEnv::new().await;
    let keys = env.write_pngs(&["x/1.png", "x/2.png", "3.png"], 1200);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let link = env.dir.path().join("link");
    std::os::unix::fs::symlink(&env.src, &link).unwrap();
    let (code, summary, _) = env.migrate_dir(&link, &[]).await;
    assert_eq!(
        (code, summary["skipped"].as_u64()),
        (0, Some(3)),
        "{summary}"
    );
    // `cmd` runs in the temp dir, so "src" is the same folder by a relative path.
    let (code, summary, _) = env.migrate_dir(std::path::Path::new("src"), &[]).await;
    assert_eq!(
        (code, summary["skipped"].as_u64()),
        (0, Some(3)),
        "{summary}"
    );
    assert_eq!(env.all_rows().len(), 3);
    env.assert_exactly_once(&keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_another_account_is_refused_before_any_request() {
    let env = TestEnv::new().await;
    env.write_pngs(&["a.png"], 1200);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));

    let other = TestEnv::with(
        EmulatorConfig {
            account_id: "fedcba9876543210fedcba9876543210".into(),
            api_rate_limit: None,
            ..EmulatorConfig::default()
        },
        "",
    )
    .await;
    other.write_pngs(&["a.png"], 1200);
    let ledger = env.ledger.to_str().unwrap();
    let out = other
        .run(&["--ledger", ledger, "migrate", other.src.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to account") && err.contains("--ledger"),
        "{err}"
    );
    assert_eq!(other.total_requests(), 0);

    // Nor does the built-in emulator ever write into a real account's ledger.
    let out = env
        .run(&[
            "--ledger",
            ledger,
            "migrate",
            env.src.to_str().unwrap(),
            "--emulator",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
