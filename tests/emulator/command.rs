//! `cfimg emulator` as a process: it prints its base URLs, serves them, and keeps its state
//! in `--data` across restarts.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `cfimg emulator` with `args` and returns it with the `key = value` lines it printed.
async fn start(args: &[&str]) -> (Child, std::collections::HashMap<String, String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .args(["emulator", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cfimg emulator starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = std::collections::HashMap::new();
    while printed.len() < 4 {
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("the emulator printed its four lines");
        if let Some((k, v)) = line.split_once(" = ") {
            printed.insert(k.to_string(), v.to_string());
        }
    }
    (child, printed)
}

#[tokio::test]
async fn prints_its_urls_serves_them_and_keeps_state_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let data = data.to_str().unwrap();
    let (mut child, p) = start(&["--rate-limit", "off", "--token", "t0k", "--data", data]).await;
    assert_eq!(p["api_token"], "t0k");
    let images = format!("{}/accounts/{}/images", p["api_base_url"], p["account_id"]);
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
    let images = format!("{}/accounts/{}/images", p["api_base_url"], p["account_id"]);
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
