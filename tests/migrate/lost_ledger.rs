//! A lost ledger never duplicates a library (issue 24): with Cloudflare-assigned ids, a run
//! on a ledger with no row for a source whose images are already in the account stops
//! before its first upload and names `ledger rebuild`; the look costs one request on a new
//! source and none on a rerun.

use std::process::Stdio;
use std::time::Duration;

use crate::common::{TestEnv, png, text};

fn forget_ledger(env: &TestEnv) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.ledger.display()));
    }
}

/// Listing requests (`GET /v2`) the emulator served.
fn listings(env: &TestEnv) -> u64 {
    env.api_requests("GET", "v2")
}

async fn migrated_in_auto_mode(n: u32) -> TestEnv {
    let env = TestEnv::new().await;
    for i in 0..n {
        env.write(&format!("a/{i}.png"), &png(i, 700));
    }
    let (code, summary, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(u64::from(n))),
        "{}",
        text(&out)
    );
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ledger_stops_an_auto_id_run_until_it_is_rebuilt() {
    let env = migrated_in_auto_mode(6).await;
    assert_eq!(listings(&env), 1, "a new source costs one listing request");
    let posts = env.upload_posts();

    // A no-op rerun: the ledger has the source's rows, so no look at all.
    let before = (env.total_requests(), listings(&env));
    let (code, summary, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(0)),
        "{}",
        text(&out)
    );
    assert_eq!(listings(&env), before.1, "a rerun sends no listing");
    assert_eq!(
        env.total_requests(),
        before.0 + 1,
        "a rerun sends only the start-up check"
    );

    forget_ledger(&env);
    let before = listings(&env);
    let (code, _, out) = env.migrate(&["--id-mode", "auto"]).await;
    let said = text(&out);
    assert_eq!(code, 2, "{said}");
    assert_eq!(env.upload_posts(), posts, "nothing uploaded: {said}");
    assert_eq!(env.inspect().images.len(), 6);
    assert_eq!(listings(&env), before + 1, "the look is one request");
    assert!(said.contains("6 images"), "{said}");
    let src = env.src.canonicalize().unwrap();
    let rebuild = format!("ledger rebuild --source {}", src.display());
    assert!(said.contains(&rebuild), "{said}");
    assert!(said.contains("--ignore-existing"), "{said}");

    let out = env
        .run(&["ledger", "rebuild", "--source", env.src.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, summary, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(0)),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.upload_posts(),
        posts,
        "the rebuilt ledger knows every image"
    );
    assert_eq!(env.inspect().images.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_existing_uploads_anyway() {
    let env = migrated_in_auto_mode(3).await;
    forget_ledger(&env);
    let (code, summary, out) = env
        .migrate(&["--id-mode", "auto", "--ignore-existing"])
        .await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(3)),
        "{}",
        text(&out)
    );
    assert_eq!(env.inspect().images.len(), 6, "asked for: every file again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_custom_ids_a_lost_ledger_is_named_but_the_run_goes_on_without_duplicates() {
    let env = TestEnv::new().await;
    for i in 0..4 {
        env.write(&format!("{i}.png"), &png(i, 700));
    }
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    forget_ledger(&env);
    let posts = env.upload_posts();
    let (code, _, out) = env.migrate(&[]).await;
    let said = text(&out);
    assert_eq!(code, 0, "{said}");
    assert_eq!(env.upload_posts(), posts + 4, "each met as a 5409: {said}");
    assert!(said.contains("ledger rebuild"), "{said}");
    assert_eq!(env.inspect().images.len(), 4, "no duplicate");
}

async fn shard(env: &TestEnv, ledger: &std::path::Path, k: u32) -> std::process::Output {
    let src = env.src.to_str().unwrap();
    let shard = format!("{k}/2");
    env.run(&[
        "--ledger",
        ledger.to_str().unwrap(),
        "migrate",
        src,
        "--shard",
        &shard,
        "--id-mode",
        "auto",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_on_an_empty_ledger_does_not_mistake_other_shards_images_for_its_own() {
    let env = TestEnv::new().await;
    for i in 0..30 {
        env.write(&format!("{i}.png"), &png(i, 600));
    }
    let ledger = |k: u32| env.dir.path().join(format!("s{k}.sqlite"));
    let out = shard(&env, &ledger(0), 0).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after_first = env.inspect().images.len();
    let out = shard(&env, &ledger(1), 1).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "shard 1 has its own items: {}",
        text(&out)
    );
    assert_eq!(env.inspect().images.len(), 30);
    assert!(after_first < 30);

    // Shard 1's ledger lost: its own images are found.
    let rows1 = env_rows(&ledger(1));
    std::fs::remove_file(ledger(1)).unwrap();
    let out = shard(&env, &ledger(1), 1).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("shard 1/2"), "{}", text(&out));
    assert!(
        text(&out).contains("ledger rebuild --source"),
        "{}",
        text(&out)
    );
    assert_eq!(env.inspect().images.len(), 30);

    // The command it names takes only this shard's items; the rerun uploads nothing.
    let l1 = ledger(1);
    let src = env.src.to_str().unwrap();
    let out = env
        .run(&[
            "--ledger",
            l1.to_str().unwrap(),
            "ledger",
            "rebuild",
            "--source",
            src,
            "--shard",
            "1/2",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env_rows(&l1), rows1, "the other shard's items stay out");
    let posts = env.upload_posts();
    let out = shard(&env, &l1, 1).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.upload_posts(), posts);
    assert_eq!(env.inspect().images.len(), 30);
}

fn env_rows(ledger: &std::path::Path) -> usize {
    cfimg::ledger::Ledger::open_read_only(ledger)
        .unwrap()
        .unwrap()
        .all_rows()
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_an_empty_ledger_over_an_uploaded_folder_refuses_at_start() {
    let env = migrated_in_auto_mode(5).await;
    forget_ledger(&env);
    let posts = env.upload_posts();
    let src = env.src.to_str().unwrap().to_string();
    let child = env
        .cmd(&["watch", &src, "--id-mode", "auto", "--settle", "0.3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("watch stops by itself")
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("ledger rebuild --source"), "{said}");
    assert_eq!(env.upload_posts(), posts, "nothing uploaded: {said}");
    assert_eq!(env.inspect().images.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_id_library_rerun_without_id_mode_auto_on_a_lost_ledger_stops_before_uploading() {
    let env = migrated_in_auto_mode(4).await;
    forget_ledger(&env);
    let posts = env.upload_posts();
    // The path ids (the default) and hash ids would both be new ids: 4 duplicates each.
    for mode in ["path", "hash"] {
        let (code, _, out) = env.migrate(&["--id-mode", mode]).await;
        let said = text(&out);
        assert_eq!(code, 2, "{mode}: {said}");
        assert_eq!(
            env.upload_posts(),
            posts,
            "{mode}: nothing uploaded: {said}"
        );
        assert!(
            said.contains("4 have ids Cloudflare assigned"),
            "{mode}: {said}"
        );
        assert!(said.contains("ledger rebuild --source"), "{mode}: {said}");
        assert!(said.contains("--ignore-existing"), "{mode}: {said}");
        forget_ledger(&env);
    }
    assert_eq!(env.inspect().images.len(), 4);

    // After the rebuild the ledger maps every file to its image, whatever the id mode.
    let out = env
        .run(&["ledger", "rebuild", "--source", env.src.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(0)),
        "{}",
        text(&out)
    );
    assert_eq!(env.upload_posts(), posts);
    assert_eq!(env.inspect().images.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_id_library_on_a_lost_ledger_goes_on_without_duplicates() {
    let env = TestEnv::new().await;
    for i in 0..3 {
        env.write(&format!("{i}.png"), &png(i, 700));
    }
    let (code, _, out) = env.migrate(&["--id-mode", "hash"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    forget_ledger(&env);
    let (code, _, out) = env.migrate(&["--id-mode", "hash"]).await;
    let said = text(&out);
    assert_eq!(code, 0, "each met as a 5409: {said}");
    assert!(said.contains("ledger rebuild"), "{said}");
    assert_eq!(env.inspect().images.len(), 3, "no duplicate");
    // Rerun in path mode: the hash ids are not the ids it gives.
    forget_ledger(&env);
    let posts = env.upload_posts();
    let (code, _, out) = env.migrate(&[]).await;
    let said = text(&out);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("3 have content-hash ids"), "{said}");
    assert_eq!(env.upload_posts(), posts, "nothing uploaded: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ledger_stops_an_auto_id_manifest_run_and_names_the_manifest() {
    let env = TestEnv::new().await;
    let origin = crate::common::origin::Origin::start().await;
    let mut list = String::new();
    for i in 0..3 {
        let name = format!("{i}.png");
        origin.put(&name, png(i, 500));
        list.push_str(&origin.img(&name));
        list.push('\n');
    }
    let file = env.dir.path().join("urls.txt");
    std::fs::write(&file, list).unwrap();
    let file = file.to_str().unwrap();
    let args = ["migrate", "--manifest", file, "--id-mode", "auto"];
    let out = env.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    forget_ledger(&env);
    let posts = env.upload_posts();
    let lists = listings(&env);
    let out = env.run(&args).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert_eq!(env.upload_posts(), posts, "nothing uploaded: {said}");
    assert_eq!(listings(&env), lists + 1, "the look is one request");
    assert!(said.contains("3 images"), "{said}");
    assert!(
        said.contains(&format!("ledger rebuild --manifest {file}")),
        "{said}"
    );
    let out = env.run(&["ledger", "rebuild", "--manifest", file]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = env.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        env.upload_posts(),
        posts,
        "the rebuilt ledger knows every URL"
    );
    assert_eq!(env.inspect().images.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_emptied_to_zero_bytes_is_a_lost_ledger() {
    let env = migrated_in_auto_mode(3).await;
    forget_ledger(&env);
    std::fs::write(&env.ledger, b"").unwrap();
    let posts = env.upload_posts();
    let (code, _, out) = env.migrate(&["--id-mode", "auto"]).await;
    let said = text(&out);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("3 images"), "{said}");
    assert!(said.contains("ledger rebuild --source"), "{said}");
    assert_eq!(env.upload_posts(), posts, "nothing uploaded: {said}");
    assert_eq!(env.inspect().images.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_ignore_existing_starts_on_a_lost_ledger_and_uploads() {
    let env = migrated_in_auto_mode(2).await;
    forget_ledger(&env);
    let posts = env.upload_posts();
    let src = env.src.to_str().unwrap().to_string();
    let mut child = env
        .cmd(&[
            "watch",
            &src,
            "--id-mode",
            "auto",
            "--settle",
            "0.3",
            "--ignore-existing",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for(Duration::from_secs(60), |e| e.upload_posts() == posts + 2)
        .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    assert_eq!(env.inspect().images.len(), 4, "asked for: every file again");
}
