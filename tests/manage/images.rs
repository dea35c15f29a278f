//! `images`, `variants`, `flexible-variants`, `keys` and `sign-url`, and their error paths.

use serde_json::Value;

use crate::common::{TestEnv, png, text};

async fn json_of(env: &TestEnv, args: &[&str]) -> Value {
    let out = env.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{args:?}: {}", text(&out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_list_get_update_blob_stats_and_delete() {
    let env = TestEnv::new().await;
    env.write_pngs(&["x.png", "y/z.png"], 400);
    assert_eq!(env.migrate(&[]).await.0, 0);

    let out = env.run(&["images", "list", "--jsonl"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    let stamp = env.stamp_of("x.png");
    let filtered = json_of(
        &env,
        &[
            "images",
            "list",
            "--json",
            "--meta",
            &format!("cfimg_src={stamp}"),
        ],
    )
    .await;
    assert_eq!(filtered.as_array().unwrap().len(), 1, "{filtered}");
    assert_eq!(filtered[0]["id"], "x.png");

    let image = json_of(&env, &["images", "get", "x.png", "--json"]).await;
    assert_eq!(image["meta"]["cfimg_src"], stamp.as_str());
    let updated = json_of(
        &env,
        &[
            "images",
            "update",
            "x.png",
            "--metadata",
            r#"{"team":"web"}"#,
            "--creator",
            "me",
            "--json",
        ],
    )
    .await;
    assert_eq!(updated["meta"]["team"], "web");
    // cfimg's stamp survives a metadata change.
    assert_eq!(updated["meta"]["cfimg_src"], stamp.as_str());
    assert_eq!(updated["creator"], "me");
    let mine = json_of(&env, &["images", "list", "--json", "--creator", "me"]).await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");

    let blob = env.dir.path().join("blob.png");
    let out = env
        .run(&["images", "blob", "y/z.png", "-o", blob.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        std::fs::read(env.src.join("y/z.png")).unwrap()
    );

    let stats = json_of(&env, &["images", "stats", "--json"]).await;
    assert_eq!(stats["current"], 2, "{stats}");

    // Without a terminal, delete needs --yes; --dry-run deletes nothing.
    let out = env.run(&["images", "delete", "x.png"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = env.run(&["images", "delete", "x.png", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.inspect().images.len(), 2);
    // x.png is mapped by the ledger: deleting it takes --force (tests/manage/safe_commands.rs).
    let out = env
        .run(&["images", "delete", "x.png", "--yes", "--force"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.inspect().images.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_invalid_and_duplicate_variants_and_the_last_key_are_refused_with_the_code() {
    let env = TestEnv::new().await;
    for args in [
        &["images", "get", "nope.png"][..],
        &["images", "delete", "nope.png", "--yes"],
        &["variants", "get", "nope"],
    ] {
        let out = env.run(args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("5404"), "{args:?}: {}", text(&out));
        assert!(
            err.contains("cfimg images list") || err.contains("check the id"),
            "{}",
            text(&out)
        );
    }

    let out = env
        .run(&[
            "variants", "create", "thumb", "--fit", "squash", "--width", "100",
        ])
        .await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5400"),
        "{}",
        text(&out)
    );

    let v = json_of(
        &env,
        &[
            "variants", "create", "thumb", "--fit", "cover", "--width", "100", "--height", "80",
            "--json",
        ],
    )
    .await;
    assert_eq!(v["options"]["width"], 100);
    let out = env
        .run(&[
            "variants", "create", "thumb", "--fit", "cover", "--width", "100",
        ])
        .await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5409"),
        "{}",
        text(&out)
    );
    let v = json_of(
        &env,
        &[
            "variants", "update", "thumb", "--fit", "contain", "--width", "50", "--json",
        ],
    )
    .await;
    assert_eq!(v["options"]["fit"], "contain");
    let all = json_of(&env, &["variants", "list", "--json"]).await;
    assert!(
        all.get("thumb").is_some() && all.get("public").is_some(),
        "{all}"
    );
    let out = env.run(&["variants", "delete", "thumb"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = env.run(&["flexible-variants", "on"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("on"));

    let keys = json_of(&env, &["keys", "list", "--json"]).await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert!(
        keys[0].get("value").is_none(),
        "values stay hidden by default"
    );
    let out = env.run(&["keys", "delete", "default"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last signing key"),
        "{}",
        text(&out)
    );
    let out = env.run(&["keys", "add", "k2"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = env.run(&["keys", "delete", "k2"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_url_is_served_and_a_tampered_or_expired_one_is_refused() {
    let env = TestEnv::new().await;
    env.write("private.png", &png(1, 300));
    let (code, _, out) = env
        .migrate(&["--id-mode", "auto", "--require-signed-urls"])
        .await;
    assert_eq!(code, 0, "{}", text(&out));
    let url = env.ledger_rows()["private.png"].url.clone().unwrap();
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 403);

    let out = env.run(&["sign-url", &url, "--expires-in", "1h"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let signed = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let resp = http.get(&signed).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{signed}");
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        std::fs::read(env.src.join("private.png")).unwrap()
    );

    // One hex digit of the signature changed.
    let last = signed.chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    let tampered = format!("{}{flipped}", &signed[..signed.len() - 1]);
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);

    let past = (chrono::Utc::now().timestamp() - 60).to_string();
    let out = env.run(&["sign-url", &url, "--expires-at", &past]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
    let expired = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(http.get(&expired).send().await.unwrap().status(), 403);

    // A second key signs too; an unknown key name is refused.
    assert_eq!(env.run(&["keys", "add", "k2"]).await.status.code(), Some(0));
    let out = env
        .run(&["sign-url", &url, "--expires-in", "10m", "--key", "k2"])
        .await;
    let signed = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(http.get(&signed).send().await.unwrap().status(), 200);
    let out = env
        .run(&["sign-url", &url, "--expires-in", "10m", "--key", "nope"])
        .await;
    assert_ne!(out.status.code(), Some(0));
}
