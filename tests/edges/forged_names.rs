//! File names cannot forge log lines (issue 18.4): a newline, ESC or a bidi override in a
//! name is escaped in the text log and in `failures`, and no output line starts like a
//! record the name tried to fake.

use crate::common::{TestEnv, corrupt_png, png, text};

const FAKE: &str = "2026-12-05T21:00:00.000000Z  INFO cfimg: uploaded key=\"forged.png\"";

fn assert_unforged(what: &str, out: &str) {
    for line in out.lines() {
        assert!(
            !line.starts_with("2026-12-05T21:00:00"),
            "{what}: a forged line:\n{line}\n---\n{out}"
        );
    }
    for raw in ['\u{1b}', '\u{202e}', '\r'] {
        assert!(!out.contains(raw), "{what}: a raw {raw:?} in\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_in_file_names_are_escaped_in_logs_and_failures() {
    let env = TestEnv::new().await;
    env.write(&format!("ok.png\n{FAKE}"), &png(1, 2000));
    env.write(&format!("bad.png\n{FAKE}"), &corrupt_png(2));
    env.write("esc\u{1b}[2K\rx\u{202e}gnp.png", &png(3, 2000));
    // The valid one above uploads; this one is rejected, so its name reaches the log.
    env.write("bad\u{1b}[2K\rx\u{202e}gnp.png", &corrupt_png(4));
    let (code, summary, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(code, 1, "{}", text(&out));
    // The two valid images upload whatever their names hold (edges::control_names).
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let rejected = summary["rejected"].as_u64().unwrap_or(0) as usize;
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_unforged("the log", &log);
    assert!(
        log.contains("bad.png\\n2026-12-05T21:00:00"),
        "the rejected name is not in the log, escaped:\n{log}"
    );
    assert!(log.contains("\\u{1b}[2K\\rx\\u{202e}gnp.png"), "{log}");

    let failures = env.run(&["failures"]).await;
    let listed = String::from_utf8_lossy(&failures.stdout).to_string();
    assert_unforged("failures", &listed);
    assert!(
        listed.contains("bad.png\\n2026-12-05T21:00:00"),
        "the rejected name is not listed, escaped:\n{}",
        text(&failures)
    );
    assert_eq!(listed.lines().count(), rejected, "{listed}");

    // JSON stays raw: it is JSON's own escaping that keeps it on one line.
    let json = env.run(&["failures", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let keys: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["key"].as_str())
        .collect();
    assert!(
        keys.contains(&format!("bad.png\n{FAKE}").as_str()),
        "{keys:?}"
    );
}

/// A custom id is a file's path (`--id-mode path`): control characters are refused as ids,
/// but a bidi override is not, so the id itself must be escaped wherever text shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_with_a_bidi_override_is_escaped_in_images_output() {
    let env = TestEnv::new().await;
    let name = "report\u{202e}fdp.png";
    env.write(name, &png(4, 2000));
    // Metadata shown by `images get` is JSON, which escapes a newline but not an override.
    let (code, summary, out) = env
        .migrate(&[
            "--id-mode",
            "path",
            "--metadata",
            "{\"note\":\"x\u{202e}y\"}",
        ])
        .await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 1, "{summary}");
    let escaped = "report\\u{202e}fdp.png";
    let shown = |out: &std::process::Output, what: &str| {
        let all = text(out);
        assert!(
            !all.contains('\u{202e}'),
            "{what}: a raw override in\n{all}"
        );
        assert!(
            all.contains(escaped),
            "{what}: the id is not shown escaped\n{all}"
        );
    };
    shown(&env.run(&["images", "list"]).await, "images list");
    shown(&env.run(&["images", "get", name]).await, "images get");
    // The ledger maps it: the refusal, the dry run and the delete all name it.
    shown(
        &env.run(&["images", "delete", "--yes", name]).await,
        "refused delete",
    );
    shown(
        &env.run(&["images", "delete", "--dry-run", name]).await,
        "dry run",
    );
    let deleted = env
        .run(&["images", "delete", "--yes", "--force", name])
        .await;
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted));
    shown(&deleted, "delete");
}
