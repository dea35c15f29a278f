//! `ledger backup FILE --force` onto the ledger itself (any spelling of its path) is
//! refused (issue 17.2): renamed over the ledger, the copy would take its name while a
//! running writer goes on writing the old file, and everything recorded after is lost.

use std::os::unix::fs::MetadataExt;

use crate::common::{TestEnv, png, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_onto_the_ledger_itself_is_refused_whatever_the_spelling() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 300));
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let inode = std::fs::metadata(&env.ledger).unwrap().ino();

    let link = env.dir.path().join("link.sqlite");
    std::os::unix::fs::symlink(&env.ledger, &link).unwrap();
    let hard = env.dir.path().join("hard.sqlite");
    std::fs::hard_link(&env.ledger, &hard).unwrap();
    for to in [env.ledger.clone(), link, hard] {
        let out = env
            .run(&["ledger", "backup", to.to_str().unwrap(), "--force"])
            .await;
        assert_eq!(out.status.code(), Some(2), "{to:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is the ledger itself"),
            "{to:?}: {}",
            text(&out)
        );
        assert_eq!(
            std::fs::metadata(&env.ledger).unwrap().ino(),
            inode,
            "{to:?}: the ledger was replaced"
        );
    }
    // A folder that is not there is named, not a temporary file's name.
    let out = env.run(&["ledger", "backup", "/nowhere/copy.sqlite"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no folder /nowhere") && !err.contains("partial"),
        "{}",
        text(&out)
    );
    // Another file is still fine.
    let copy = env.dir.path().join("copy.sqlite");
    let out = env.run(&["ledger", "backup", copy.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
