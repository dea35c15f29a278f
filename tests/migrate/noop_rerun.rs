//! A rerun over a tree whose folders hold files and subfolders side by side (the walk
//! settles unchanged files a folder at a time): only what changed is read or sent.

use crate::common::{TestEnv, png, text};

/// Names that sort around a subfolder's `/` ('.' and '0' are its neighbours), files of a
/// folder met before and after its subfolders, and a hidden folder.
const TREE: &[&str] = &[
    "top.png",
    "d.png",
    "d/a.png",
    "d/sub.png",
    "d/sub/x.png",
    "d/sub/deeper/y.png",
    "d/sub0.png",
    "d/z.png",
    "d0/e.png",
    "dd/f.png",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_settles_every_unchanged_file_and_only_changes_go_on() {
    let env = TestEnv::new().await;
    for (i, key) in TREE.iter().enumerate() {
        env.write(key, &png(i as u32, 1000 + i * 10));
    }
    env.write(".git/config", b"not an image");
    let (code, first, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(first["uploaded"], TREE.len(), "{first}");
    let posts = env.upload_posts();

    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        (
            summary["uploaded"].as_u64(),
            summary["skipped"].as_u64(),
            summary["discovered"].as_u64(),
            summary["ignored"].as_u64()
        ),
        (
            Some(0),
            Some(TREE.len() as u64),
            first["discovered"].as_u64(),
            Some(1)
        ),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), posts, "a rerun must not upload");

    // New content in a folder with a subfolder; the same bytes rewritten (a new mtime);
    // a new file deep down.
    env.write("d/sub.png", &png(100, 3000));
    let z = env.src.join("d/z.png");
    let bytes = std::fs::read(&z).unwrap();
    std::fs::remove_file(&z).unwrap();
    std::fs::write(&z, bytes).unwrap();
    env.write("d/sub/deeper/new.png", &png(101, 900));
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        (
            summary["uploaded"].as_u64(),
            summary["replaced"].as_u64(),
            summary["skipped"].as_u64()
        ),
        (Some(2), Some(1), Some(TREE.len() as u64 - 1)),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), posts + 2);
    let mut all = TREE.to_vec();
    all.push("d/sub/deeper/new.png");
    env.assert_exactly_once(&all).await;
}
