//! A `direct-upload create` refused for a mistyped account id leaves the ledger unbound
//! (issue 17.2): the destination is recorded with the first draft Cloudflare mints.

use crate::common::{TestEnv, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_refused_for_a_mistyped_account_does_not_bind_the_ledger() {
    let env = TestEnv::new().await;
    let good = std::fs::read_to_string(&env.config).unwrap();
    let wrong = env.dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        good.replace(env.emu.account_id(), "fedcba98765432100123456789abcdef"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .args([
            "--config",
            wrong.to_str().unwrap(),
            "direct-upload",
            "create",
        ])
        .env("CLOUDFLARE_API_TOKEN", crate::common::TOKEN)
        .env_remove("CLOUDFLARE_ACCOUNT_ID")
        .env_remove("CFIMG_API_BASE_URL")
        .env_remove("CFIMG_LEDGER")
        .current_dir(env.dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // The right account is not refused for the mistake, by the mint nor by a migration.
    let out = env.run(&["direct-upload", "create", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    env.write("a.png", &crate::common::png(1, 300));
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 1, "{summary}");
}
