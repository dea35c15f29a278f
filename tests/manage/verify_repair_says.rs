//! `verify --repair` names each duplicate it deletes, and what stops working, before it
//! deletes it (issue 17.3: every destructive command says what it will break).

use serde_json::Value;

use crate::common::{TOKEN, TestEnv, png, sha256_bytes, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_repair_names_each_duplicate_before_deleting_it() {
    let env = TestEnv::new().await;
    let bytes = png(3, 300);
    env.write("a.png", &bytes);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let row = env.ledger_rows()["a.png"].clone();

    // Another image of the same version of a.png, as an ambiguous answer leaves one.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone())
                .file_name("x.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text(
            "metadata",
            serde_json::json!({
                "cfimg_src": row.stamp.clone().unwrap(),
                "cfimg_sha256": sha256_bytes(&bytes),
            })
            .to_string(),
        );
    let resp: Value = reqwest::Client::new()
        .post(format!(
            "{}/accounts/{}/images/v1",
            env.emu.api_base(),
            env.emu.account_id()
        ))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dup = resp["result"]["id"].as_str().unwrap().to_string();

    let out = env.run(&["verify", "--repair"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("deleting duplicate {dup} of"))
            && err.contains("stop working")
            && err.contains(row.image_id.as_deref().unwrap()),
        "{}",
        text(&out)
    );
    assert!(env.inspect().images.iter().all(|i| i.id != dup));
    assert!(
        env.inspect()
            .images
            .iter()
            .any(|i| Some(i.id.as_str()) == row.image_id.as_deref()),
        "the recorded image stays"
    );
}
