//! A ledger path that names a folder is a mistake for a person to fix (exit 2), never
//! "try again later" (75): under systemd, 75 restarts a failure that never clears.

use crate::common::{TestEnv, png, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_at_the_ledger_path_exits_2_and_names_it() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 400));
    let folder = env.dir.path().join("ledger.sqlite");
    std::fs::create_dir(&folder).unwrap();
    let l = folder.to_str().expect("utf-8 path");
    let src = env.src.to_str().expect("utf-8 path");
    for args in [
        vec!["migrate", src, "--ledger", l],
        vec!["status", "--ledger", l],
        vec!["failures", "--ledger", l],
        vec!["export", "--ledger", l],
    ] {
        let out = env.run(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("ledger.sqlite"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert!(env.inspect().images.is_empty(), "nothing was uploaded");
}
