//! A TOML error next to a secret names the line and the key, never the value (issue 18.3):
//! `cfimg validate` runs from systemd's `ExecReload`, so its stderr lands in the journal.

use crate::common::{TestEnv, text};

const SECRET: &str = "Zq9SECRETvalue7731xk";

#[tokio::test]
async fn a_syntax_error_next_to_a_secret_never_prints_the_secret() {
    let env = TestEnv::new().await;
    // (config text, line of the error, key named)
    let cases = [
        (format!("api_token = \"{SECRET}\n"), 1, Some("api_token")),
        (format!("api_token = {SECRET}\n"), 1, Some("api_token")),
        (
            format!("ledger = \"l.sqlite\"\n[serve]\nwebhook_secret = \"{SECRET}\" y\n"),
            3,
            Some("serve.webhook_secret"),
        ),
        (
            format!("[serve]\nlisten = \"127.0.0.1:1\"\n\n[serve.app_keys]\nweb = \"{SECRET}\n"),
            5,
            Some("serve.app_keys.web"),
        ),
        (
            format!("[serve]\napp_keys = {{ web = \"{SECRET}\", ios = }}\n"),
            2,
            Some("serve.app_keys"),
        ),
        // A wrong type: serde's message would quote the value.
        (
            format!("[serve]\nwebhook_secret = {}\n", 987654321987u64),
            2,
            Some("serve.webhook_secret"),
        ),
        (
            format!("[serve]\napp_keys = \"{SECRET}\"\n"),
            2,
            Some("serve.app_keys"),
        ),
        (
            format!("[bucket]\nsecret_access_key = \"{SECRET}\"\n"),
            2,
            Some("bucket.secret_access_key"),
        ),
        (
            format!("[bucket]\nsession_token = \"{SECRET}\"\n"),
            2,
            Some("bucket.session_token"),
        ),
        // A multi-line inline table (TOML 1.1): its lines belong to the key that opened it,
        // not to a made-up `serve.ios` whose wrong type would be quoted.
        (
            format!(
                "[serve] # it's here\napp_keys = {{\n  web = \"{SECRET}\",\n  ios = 987654321987,\n}}\n"
            ),
            4,
            Some("serve.app_keys"),
        ),
        // A secret pasted on a line of its own: nothing of the line is printed.
        (format!("[upload]\nrate = 2\n{SECRET}==\n"), 3, None),
        (format!("[upload]\nrate = 2\n\"{SECRET}\"\n"), 3, None),
    ];
    for (toml, line, key) in cases {
        let path = env.dir.path().join("bad.toml");
        std::fs::write(&path, &toml).unwrap();
        let out = env
            .cmd(&["validate"])
            .env_remove("CLOUDFLARE_API_TOKEN")
            .args(["--config", path.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        let all = text(&out);
        assert_ne!(out.status.code(), Some(0), "{toml}\n{all}");
        for leak in [SECRET, "987654321987", "SECRETvalue"] {
            assert!(!all.contains(leak), "the secret leaked for\n{toml}\n{all}");
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("line {line}, column")),
            "no line number for\n{toml}\n{all}"
        );
        if let Some(key) = key {
            assert!(
                stderr.contains(&format!("`{key}`")),
                "no key for\n{toml}\n{all}"
            );
        }
    }
}
