//! `cfimg emulator` as a process: it prints its base URLs, serves them, and keeps its state
//! in `--data` across restarts.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `cfimg emulator` with `args` and returns it with the settings it printed, read
/// the way a user reads them: `eval` in sh, then the variables every cfimg command reads.
async fn start(args: &[&str]) -> (Child, std::collections::HashMap<String, String>) {
    let (child, printed) = start_raw(args).await;
    (child, evaluated(&printed).await)
}

/// Starts `cfimg emulator` with `args` and returns it with the lines it printed.
async fn start_raw(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .args(["emulator", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cfimg emulator starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = String::new();
    for _ in 0..4 {
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("the emulator printed its four lines");
        printed.push_str(&line);
        printed.push('\n');
    }
    (child, printed)
}

/// The variables `printed` sets when a POSIX shell evaluates it.
async fn evaluated(printed: &str) -> std::collections::HashMap<String, String> {
    const NAMES: [&str; 4] = [
        "CFIMG_API_BASE_URL",
        "CFIMG_BATCH_BASE_URL",
        "CLOUDFLARE_ACCOUNT_ID",
        "CLOUDFLARE_API_TOKEN",
    ];
    let script = format!(
        "set -eu; eval \"$1\"; printf '%s\\0' {}",
        NAMES.map(|n| format!("\"${n}\"")).join(" ")
    );
    let out = Command::new("sh")
        .args(["-c", &script, "sh", printed])
        .env_clear()
        .output()
        .await
        .expect("sh runs");
    assert!(out.status.success(), "sh evaluates {printed:?}: {out:?}");
    let values = String::from_utf8(out.stdout).expect("utf-8");
    NAMES
        .iter()
        .map(|n| n.to_string())
        .zip(values.split('\0').map(str::to_string))
        .collect()
}

#[tokio::test]
async fn prints_its_urls_serves_them_and_keeps_state_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let data = data.to_str().unwrap();
    let (mut child, p) = start(&["--rate-limit", "off", "--token", "t0k", "--data", data]).await;
    assert_eq!(p["CLOUDFLARE_API_TOKEN"], "t0k");
    let images = format!(
        "{}/accounts/{}/images",
        p["CFIMG_API_BASE_URL"], p["CLOUDFLARE_ACCOUNT_ID"]
    );
    let http = reqwest::Client::new();
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(super::png(1)).file_name("a.png"),
        )
        .text("id", "kept.png");
    let resp = http
        .post(format!("{images}/v1"))
        .bearer_auth("t0k")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    child.kill().await.unwrap();

    let (_child, p) = start(&["--token", "t0k", "--data", data]).await;
    let images = format!(
        "{}/accounts/{}/images",
        p["CFIMG_API_BASE_URL"], p["CLOUDFLARE_ACCOUNT_ID"]
    );
    let blob = http
        .get(format!("{images}/v1/kept.png/blob"))
        .bearer_auth("t0k")
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 200);
    assert_eq!(
        blob.bytes().await.unwrap().as_ref(),
        super::png(1).as_slice()
    );
}

#[tokio::test]
async fn refuses_bad_flags_with_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .args(["emulator", "--rate-limit", "fast"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate-limit"));
}

#[tokio::test]
async fn its_output_is_shell_that_points_every_command_at_it() {
    // A token no shell would take unquoted.
    let token = "it's a $token; `x`";
    let (_child, printed) = start_raw(&["--token", token]).await;
    for line in printed.lines() {
        assert!(line.starts_with("export "), "{printed}");
    }
    let p = evaluated(&printed).await;
    assert_eq!(p["CLOUDFLARE_API_TOKEN"], token);
    assert!(p["CFIMG_API_BASE_URL"].ends_with("/client/v4"), "{p:?}");

    // A cfimg command in a shell that evaluated it talks to this emulator.
    let (_child, printed) = start_raw(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args([
            "-c",
            "eval \"$1\" && exec \"$2\" images stats --json",
            "sh",
            &printed,
            env!("CARGO_BIN_EXE_cfimg"),
        ])
        .env_remove("CLOUDFLARE_API_TOKEN")
        .env_remove("CLOUDFLARE_ACCOUNT_ID")
        .env_remove("CFIMG_API_BASE_URL")
        .env_remove("CFIMG_CONFIG")
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(stats["current"], 0, "{stats}");
}
