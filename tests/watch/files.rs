//! What happens to files in a watched folder: created, changed, renamed, deleted, written
//! slowly, never finished, failing.

use std::io::Write;
use std::time::Duration;

use cfimg::emulator::Faults;

use super::{Daemon, row, sql, stored, until, uploaded_as};
use crate::common::{TestEnv, png, sha256_bytes};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_changed_renamed_and_deleted_files_follow_the_folder() {
    let env = TestEnv::new().await;
    env.write("old/before.png", &png(1, 900));
    let d = Daemon::start(&env, &["--id-mode", "auto"]).await;
    // Present at start: the start-up scan uploads it.
    until("the start-up scan's upload", WAIT, || {
        uploaded_as(&env, "old/before.png", &env.src.join("old/before.png"))
    })
    .await;

    // A new file in a new folder (the folder gets its own watch).
    let a = env.write("new/a.png", &png(2, 1200));
    until("a.png uploaded", WAIT, || {
        uploaded_as(&env, "new/a.png", &a)
    })
    .await;
    let first_id = row(&env, "new/a.png")
        .and_then(|r| r.image_id)
        .expect("image id");

    // Changed: the new version replaces the old image.
    let changed = png(3, 1300);
    env.write("new/a.png", &changed);
    until("a.png's new version", WAIT, || {
        uploaded_as(&env, "new/a.png", &a)
    })
    .await;
    until("the old version deleted", WAIT, || {
        !env.inspect().images.iter().any(|i| i.id == first_id)
    })
    .await;
    assert!(stored(&env, &changed));

    // Renamed: the ledger follows the content; the bytes are not sent again.
    let posts = env.upload_posts();
    std::fs::rename(&a, env.src.join("new/renamed.png")).unwrap();
    until("the renamed file recorded", WAIT, || {
        uploaded_as(&env, "new/renamed.png", &env.src.join("new/renamed.png"))
    })
    .await;
    assert_eq!(
        env.upload_posts(),
        posts,
        "a rename uploaded the bytes again"
    );
    assert_eq!(
        row(&env, "new/renamed.png").and_then(|r| r.image_id),
        row(&env, "new/a.png").and_then(|r| r.image_id),
        "the renamed file shares the image"
    );

    // Deleted under the default policy: the image stays.
    let images = env.inspect().images.len();
    std::fs::remove_file(env.src.join("old/before.png")).unwrap();
    // A later file proves the daemon went past the delete event.
    let later = env.write("later.png", &png(4, 700));
    until("later.png uploaded", WAIT, || {
        uploaded_as(&env, "later.png", &later)
    })
    .await;
    assert_eq!(
        env.inspect().images.len(),
        images + 1,
        "a delete under `keep` removed an image"
    );
    assert!(
        row(&env, "old/before.png").is_some(),
        "the row of a kept image stays"
    );
    assert_eq!(d.stop().await, 0, "a SIGTERM stop is a clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_slowly_in_chunks_is_uploaded_once_complete() {
    let env = TestEnv::new().await;
    let d = Daemon::start(&env, &["--settle", "1.5"]).await;
    let bytes = png(7, 40_000);
    let path = env.src.join("slow.png");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in bytes.chunks(2000) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(f);
    until("slow.png uploaded", WAIT, || {
        uploaded_as(&env, "slow.png", &path)
    })
    .await;
    assert_eq!(env.upload_posts(), 1, "only the complete file was sent");
    assert!(stored(&env, &bytes), "the stored bytes are the whole file");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_never_stops_growing_is_uploaded_after_the_maximum_wait() {
    let env = TestEnv::new().await;
    let d = Daemon::start(&env, &["--settle", "1", "--max-settle", "2"]).await;
    let path = env.src.join("growing.png");
    let head = png(9, 3000);
    std::fs::write(&path, &head).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    // Appends every 100 ms, never quiet for the settle time.
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(&[0u8; 64]).unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    until("an image of the growing file", WAIT, || {
        !env.inspect().images.is_empty()
    })
    .await;
    stop.cancel();
    writer.await.unwrap();
    // What was sent is exactly a version the file had: its first N bytes.
    let img = env.inspect().images.remove(0);
    let now = std::fs::read(&path).unwrap();
    let a_version = (head.len()..=now.len()).any(|n| sha256_bytes(&now[..n]) == img.sha256);
    assert!(a_version, "the stored bytes are not a version the file had");
    assert!(
        d.log_text().contains("has not stopped changing"),
        "{}",
        d.log_text()
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_follow_the_policy_and_the_cap() {
    let env = TestEnv::new().await;
    let keys: Vec<String> = (0..10).map(|i| format!("d/f{i}.png")).collect();
    env.write_pngs(&keys, 800);
    let d = Daemon::start(&env, &["--on-delete", "delete", "--max-delete", "3"]).await;
    until("all uploaded", WAIT, || env.inspect().images.len() == 10).await;
    until("all recorded", WAIT, || {
        keys.iter().all(|k| uploaded_as(&env, k, &env.src.join(k)))
    })
    .await;

    // Two deletes in one pass: under the cap, their images go and tombstones stay.
    for k in &keys[..2] {
        std::fs::remove_file(env.src.join(k)).unwrap();
    }
    until("two images deleted", WAIT, || {
        env.inspect().images.len() == 8
    })
    .await;
    until("their rows gone", WAIT, || {
        row(&env, &keys[0]).is_none() && row(&env, &keys[1]).is_none()
    })
    .await;
    let tombstones = sql(
        &env,
        "SELECT COUNT(*) FROM tombstones WHERE outcome LIKE '%deleted'",
    );
    assert_eq!(tombstones, 2);

    // Five at once: over the cap, refused as a whole, loudly; the images stay.
    for k in &keys[2..7] {
        std::fs::remove_file(env.src.join(k)).unwrap();
    }
    d.wait_log("REFUSED to delete", WAIT).await;
    assert_eq!(
        env.inspect().images.len(),
        8,
        "a pass over the cap deleted images"
    );
    assert!(row(&env, &keys[2]).is_some());
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_files_are_retried_with_growing_delays_that_survive_a_restart() {
    let env = TestEnv::with_faults(Faults::default(), "max_attempts = 2").await;
    let d = Daemon::start(&env, &["--retry-base", "1"]).await;
    env.emu.set_faults(Faults {
        p_500: 1.0,
        ..Faults::default()
    });
    let path = env.write("flaky.png", &png(5, 900));
    until("the first failure recorded", WAIT, || {
        row(&env, "flaky.png").is_some_and(|r| r.state == cfimg::ledger::State::Failed)
    })
    .await;
    // Retried after 1 s, then 2 s, 4 s...: never forgotten, never hammered.
    let failures = |env: &TestEnv| sql(env, "SELECT failures FROM items WHERE key = 'flaky.png'");
    until("a second failed pass", WAIT, || failures(&env) >= 2).await;
    let posts = env.upload_posts();
    assert!(
        posts <= 2 * 3,
        "{posts} POSTs for two passes of two attempts each"
    );
    assert_eq!(d.stop().await, 0);

    // After a restart the delay and the count continue; once the service is back, it goes.
    let before = failures(&env);
    env.emu.set_faults(Faults::default());
    let d = Daemon::start(&env, &["--retry-base", "1"]).await;
    until("uploaded after the outage", WAIT, || {
        uploaded_as(&env, "flaky.png", &path)
    })
    .await;
    assert!(before >= 2);
    assert_eq!(failures(&env), 0, "a success resets the failure count");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_under_delete_keeps_the_image_the_new_path_shares() {
    let env = TestEnv::new().await;
    let d = Daemon::start(
        &env,
        &[
            "--id-mode",
            "auto",
            "--on-delete",
            "delete",
            "--max-delete",
            "10",
        ],
    )
    .await;
    let a = env.write("a.png", &png(1, 900));
    until("a.png uploaded", WAIT, || uploaded_as(&env, "a.png", &a)).await;
    let posts = env.upload_posts();
    std::fs::rename(&a, env.src.join("b.png")).unwrap();
    until("the old path removed", WAIT, || {
        row(&env, "a.png").is_none()
    })
    .await;
    until("the new path recorded", WAIT, || {
        uploaded_as(&env, "b.png", &env.src.join("b.png"))
    })
    .await;
    assert_eq!(env.upload_posts(), posts, "the rename sent the bytes again");
    let held = row(&env, "b.png")
        .and_then(|r| r.image_id)
        .expect("image id");
    assert!(
        env.inspect().images.iter().any(|i| i.id == held),
        "the image the new path holds was deleted with the old path"
    );
    assert_eq!(
        sql(
            &env,
            "SELECT COUNT(*) FROM tombstones WHERE outcome LIKE '%kept%'"
        ),
        1
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_migrated_first_is_not_uploaded_again_by_watch() {
    let env = TestEnv::new().await;
    let keys: Vec<String> = (0..20).map(|i| format!("m/f{i}.png")).collect();
    env.write_pngs(&keys, 600);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", crate::common::text(&out));
    let posts = env.upload_posts();
    let d = Daemon::start(&env, &[]).await;
    let new = env.write("m/new.png", &png(99, 600));
    until("the new file uploaded", WAIT, || {
        uploaded_as(&env, "m/new.png", &new)
    })
    .await;
    assert_eq!(
        env.upload_posts(),
        posts + 1,
        "the start-up scan uploaded migrated files again"
    );
    assert_eq!(d.stop().await, 0);
}
