//! Exit codes mean this run (issue 17.5): rejects recorded by an earlier run are reminded,
//! not failed again; a reader that closes stdout early ends a command quietly.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use crate::common::{TestEnv, png, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_whose_only_problems_are_earlier_rejects_exits_0_and_reminds_them() {
    let env = TestEnv::new().await;
    env.write("good.png", &png(1, 400));
    env.write("empty1.png", b"");
    env.write("empty2.png", b"");
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 1, "this run rejected two files: {}", text(&out));

    let src = env.src.to_str().unwrap().to_string();
    let out = env.run(&["migrate", &src]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 items rejected earlier (cfimg failures)"),
        "{}",
        text(&out)
    );

    // A new reject is this run's: exit 1 again.
    env.write("empty3.png", b"");
    let out = env.run(&["migrate", &src]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_commands_into_a_closed_pipe_end_quietly() {
    let env = TestEnv::new().await;
    for i in 0..30 {
        env.write(&format!("img{i}.png"), &png(i, 300));
    }
    env.write("empty.png", b"");
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 1, "{}", text(&out));

    for args in [
        &["images", "list"][..],
        &["images", "list", "--jsonl"],
        &["export"],
        &["failures"],
        &["status"],
        &["variants", "list"],
        &["keys", "list"],
    ] {
        let mut cmd = env.cmd(args);
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cfimg starts");
        // The reader is gone before cfimg writes its first line, like `| head -0`.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.expect("cfimg ends");
        let status = out.status;
        assert!(
            status.code() == Some(0) || status.signal() == Some(13),
            "{args:?}: {status:?} {}",
            text(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_whose_reader_went_away_keeps_its_own_exit_code() {
    let env = TestEnv::new().await;
    env.write_pngs(&["a.png", "b.png"], 300);
    let mut cmd = env.cmd(&["migrate", env.src.to_str().unwrap()]);
    // Errors only: the test environment's high --rate draws a warning that is not the point.
    cmd.env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cfimg starts");
    drop(child.stdout.take());
    let out = child.wait_with_output().await.expect("cfimg ends");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.inspect().images.len(), 2);
}
