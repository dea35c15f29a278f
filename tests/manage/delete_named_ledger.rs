//! `images delete` protects the ledger the user names, not only the configured one: a ledger
//! given with `--ledger` (after `delete` or before `images`) is looked up like the default.

use crate::common::{TestEnv, png, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_delete_consults_the_ledger_given_with_the_ledger_flag() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 400));
    let other = env.dir.path().join("other.sqlite");
    let other_s = other.to_str().expect("utf-8 path");
    let src = env.src.to_str().expect("utf-8 path");
    let out = env.run(&["migrate", src, "--ledger", other_s]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let has = |id: &str| env.inspect().images.iter().any(|i| i.id == id);
    assert!(has("a.png"));

    for args in [
        vec!["images", "delete", "a.png", "--yes", "--ledger", other_s],
        vec!["--ledger", other_s, "images", "delete", "a.png", "--yes"],
    ] {
        let out = env.run(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("a.png is the image of a.png") && err.contains("other.sqlite"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(has("a.png"), "{args:?}: nothing deleted without --force");
    }

    // A ledger that is not there protects nothing: said, not silent.
    let out = env
        .run(&[
            "images",
            "delete",
            "a.png",
            "--yes",
            "--dry-run",
            "--ledger",
            "typo.sqlite",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no ledger at typo.sqlite: no mapping checked"),
        "{}",
        text(&out)
    );
    assert!(
        !env.dir.path().join("typo.sqlite").exists(),
        "none is created"
    );

    // The commands that read no ledger still refuse it.
    let out = env
        .run(&["--ledger", other_s, "images", "get", "a.png"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--ledger does nothing for `cfimg images get`"),
        "{}",
        text(&out)
    );
    assert!(has("a.png"));
}
