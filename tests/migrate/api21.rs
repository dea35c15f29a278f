//! The client follows what the Images API changed by 2026 (issue 21 item 2): pages of
//! 1,000, new ids from a PATCH of requireSignedURLs, routes custom ids cannot shadow,
//! the 10 MB boundary left to the service, AVIF refused by a plan, HEIC accepted.

use std::path::{Path, PathBuf};
use std::process::Output;

use cfimg::emulator::{EmulatorConfig, Switches};
use serde_json::Value;

use crate::common::origin::Origin;
use crate::common::{TestEnv, png, text};

fn env_config(switches: Switches) -> EmulatorConfig {
    EmulatorConfig {
        api_rate_limit: None,
        batch_rate_limit: None,
        switches,
        ..EmulatorConfig::default()
    }
}

fn manifest(env: &TestEnv, name: &str, content: &str) -> PathBuf {
    let p = env.dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}

async fn migrate_manifest(env: &TestEnv, file: &Path) -> (i32, Value, Output) {
    let out = env
        .run(&[
            "migrate",
            "--manifest",
            file.to_str().unwrap(),
            "--id-mode",
            "auto",
            "--json",
        ])
        .await;
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), summary, out)
}

/// The one ledger row's image id.
fn only_image_id(env: &TestEnv) -> String {
    let rows = env.ledger_rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.values()
        .next()
        .and_then(|r| r.image_id.clone())
        .expect("an image id")
}

fn stored_ids(env: &TestEnv) -> Vec<String> {
    env.inspect().images.into_iter().map(|i| i.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_asks_for_pages_of_1000() {
    // A service that holds the 2026 description to its word: more than 1000 is refused.
    let env = TestEnv::with(
        env_config(Switches {
            max_per_page: 1000,
            ..Switches::default()
        }),
        "",
    )
    .await;
    env.write_pngs(&["a.png", "b.png"], 200);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let out = env.run(&["verify", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_rows_privacy_change_records_the_new_id_the_patch_answers() {
    let env = TestEnv::with(
        env_config(Switches {
            new_id_on_signed_change: true,
            ..Switches::default()
        }),
        "",
    )
    .await;
    let origin = Origin::start().await;
    origin.put("p.png", png(3, 400));
    let rows = |private: bool| {
        format!(
            "url,require_signed_urls\n{},{private}\n",
            origin.img("p.png")
        )
    };
    let file = manifest(&env, "rows.csv", &rows(true));
    let (code, summary, out) = migrate_manifest(&env, &file).await;
    assert_eq!(code, 0, "{summary}\n{}", text(&out));
    let first = only_image_id(&env);
    assert_eq!(stored_ids(&env), vec![first.clone()]);

    std::fs::write(&file, rows(false)).unwrap();
    let (code, summary, out) = migrate_manifest(&env, &file).await;
    assert_eq!(code, 0, "{summary}\n{}", text(&out));
    assert_eq!(summary["updated"], 1, "{summary}");
    let now = stored_ids(&env);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], first, "the switch gave the image a new id");
    assert_eq!(only_image_id(&env), now[0], "the ledger records the new id");
    // And the next run finds nothing to do.
    let (code, summary, _) = migrate_manifest(&env, &file).await;
    assert_eq!(
        (code, summary["skipped"].as_u64()),
        (0, Some(1)),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_update_records_the_new_id_the_patch_answers() {
    let env = TestEnv::with(
        env_config(Switches {
            new_id_on_signed_change: true,
            ..Switches::default()
        }),
        "",
    )
    .await;
    let origin = Origin::start().await;
    origin.put("q.png", png(4, 400));
    let file = manifest(
        &env,
        "rows.csv",
        &format!("url,require_signed_urls\n{},true\n", origin.img("q.png")),
    );
    let (code, summary, out) = migrate_manifest(&env, &file).await;
    assert_eq!(code, 0, "{summary}\n{}", text(&out));
    let first = only_image_id(&env);

    let out = env
        .run(&["images", "update", &first, "--require-signed-urls", "false"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let now = stored_ids(&env);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], first);
    assert_eq!(
        only_image_id(&env),
        now[0],
        "the ledger follows: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(&now[0]),
        "the new id is said: {}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_ids_that_shadow_api_routes_are_refused_locally_naming_the_rule() {
    let env = TestEnv::new().await;
    env.write("stats", &png(1, 300));
    env.write("variants/thumb.png", &png(2, 300));
    env.write("a.png/blob", &png(3, 300));
    env.write("fine/stats.png", &png(4, 300));
    let (code, summary, out) = env.migrate(&[]).await;
    assert_ne!(code, 0, "{}", text(&out));
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["rejected"].as_u64()),
        (Some(1), Some(3)),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), 1, "nothing refused reached the service");
    let out = env.run(&["failures", "--all", "--json"]).await;
    let failures: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let reason = |key: &str| {
        failures
            .as_array()
            .and_then(|a| a.iter().find(|f| f["key"] == key))
            .and_then(|f| f["reason"].as_str())
            .unwrap_or_else(|| panic!("{key} not in {failures}"))
            .to_owned()
    };
    assert!(reason("stats").contains("API route"), "{}", reason("stats"));
    assert!(reason("variants/thumb.png").contains("API route"));
    assert!(
        reason("a.png/blob").contains("/blob"),
        "{}",
        reason("a.png/blob")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_between_10_mb_and_10_mib_go_to_the_service_and_its_refusal_is_recorded() {
    let env = TestEnv::new().await;
    // Over 10^7 bytes but not over 10 MiB: the emulator takes the strict reading.
    env.write("between.png", &png(1, 10_200_000));
    // Over 10 MiB: refused locally, as before.
    env.write("over.png", &png(2, 10 * 1024 * 1024 + 1));
    let (code, summary, out) = env.migrate(&[]).await;
    assert_ne!(code, 0, "{}", text(&out));
    assert_eq!(summary["rejected"], 2, "{summary}");
    assert_eq!(env.upload_posts(), 1, "only the file in between was sent");
    let out = env.run(&["failures", "--all", "--json"]).await;
    let failures: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let find = |key: &str| {
        failures
            .as_array()
            .and_then(|a| a.iter().find(|f| f["key"] == key))
            .cloned()
            .unwrap_or_else(|| panic!("{key} not in {failures}"))
    };
    let between = find("between.png");
    assert_eq!(between["state"], "rejected", "{between}");
    let reason = between["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("5413"),
        "Cloudflare's answer is recorded: {reason}"
    );
    assert_eq!(find("over.png")["state"], "rejected");
}

/// A minimal HEIC: the AVIF fixture with HEIC brands.
fn heic(n: u8) -> Vec<u8> {
    let mut v = crate::common::formats::avif(n, 64);
    v[8..12].copy_from_slice(b"heic");
    v[16..20].copy_from_slice(b"heic");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avif_refused_by_the_account_is_rejected_with_its_reason_and_heic_is_accepted() {
    let env = TestEnv::with(
        env_config(Switches {
            avif_input: false,
            ..Switches::default()
        }),
        "",
    )
    .await;
    env.write("photo.avif", &crate::common::formats::avif(1, 64));
    env.write("photo.heic", &heic(2));
    let (code, summary, out) = env.migrate(&[]).await;
    assert_ne!(code, 0, "{}", text(&out));
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
    let out = env.run(&["failures", "--all", "--json"]).await;
    let failures: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let avif = failures
        .as_array()
        .and_then(|a| a.iter().find(|f| f["key"] == "photo.avif"))
        .cloned()
        .unwrap_or_else(|| panic!("photo.avif not in {failures}"));
    assert_eq!(avif["state"], "rejected", "{avif}");
    assert!(
        avif["reason"]
            .as_str()
            .is_some_and(|r| r.contains("AVIF input is not enabled for this account")),
        "{avif}"
    );
    assert_eq!(env.upload_posts(), 2, "both went to the service, once each");
    let stored = env.inspect().images;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, "photo.heic");
}
