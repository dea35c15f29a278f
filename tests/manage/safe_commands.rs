//! Management commands change only what was asked (issue 17.3): a variant update keeps the
//! options it was not given, `keys add` does not rotate an existing key by surprise, and
//! `images delete` of an image the ledger maps is refused unless forced, then re-uploaded.

use serde_json::Value;

use crate::common::{TestEnv, png, text};

async fn json_of(env: &TestEnv, args: &[&str]) -> Value {
    let out = env.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{args:?}: {}", text(&out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_update_keeps_the_options_it_was_not_given() {
    let env = TestEnv::new().await;
    json_of(
        &env,
        &[
            "variants",
            "create",
            "thumb",
            "--fit",
            "cover",
            "--metadata",
            "keep",
            "--width",
            "100",
            "--height",
            "80",
            "--never-require-signed-urls",
            "true",
            "--json",
        ],
    )
    .await;
    let updated = json_of(
        &env,
        &["variants", "update", "thumb", "--width", "300", "--json"],
    )
    .await;
    let stored = json_of(&env, &["variants", "get", "thumb", "--json"]).await;
    for v in [&updated, &stored] {
        assert_eq!(v["options"]["width"], 300, "{v}");
        assert_eq!(v["options"]["fit"], "cover", "{v}");
        assert_eq!(v["options"]["height"], 80, "{v}");
        assert_eq!(v["options"]["metadata"], "keep", "{v}");
        assert_eq!(v["neverRequireSignedURLs"], true, "{v}");
    }

    let out = env.run(&["variants", "update", "thumb"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to change"),
        "{}",
        text(&out)
    );

    // Whatever breaks URLs says so before it acts.
    let out = env.run(&["flexible-variants", "off"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop working"),
        "{}",
        text(&out)
    );
    let out = env.run(&["variants", "delete", "thumb"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ending in /thumb stops working"),
        "{}",
        text(&out)
    );
}

fn key_value(keys: &Value, name: &str) -> String {
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .and_then(|k| k["value"].as_str())
        .unwrap_or_else(|| panic!("{name} not in {keys}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_add_on_an_existing_name_is_refused_unless_rotate_is_given() {
    let env = TestEnv::new().await;
    let list = ["keys", "list", "--show-values", "--json"];
    let before = key_value(&json_of(&env, &list).await, "default");

    let out = env.run(&["keys", "add", "default"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--rotate") && err.contains("stop working"),
        "{}",
        text(&out)
    );
    assert_eq!(key_value(&json_of(&env, &list).await, "default"), before);

    let out = env.run(&["keys", "add", "default", "--rotate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stops working"),
        "{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rotated"));
    assert_ne!(key_value(&json_of(&env, &list).await, "default"), before);

    // A new name needs no flag, and a delete names what breaks before it acts.
    let out = env.run(&["keys", "add", "spare"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = env.run(&["keys", "delete", "spare"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deleting key spare"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_image_the_ledger_maps_needs_force_and_the_next_migrate_uploads_it_again() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 400));
    env.write("b.png", &png(2, 400));
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let has = |env: &TestEnv, id: &str| env.inspect().images.iter().any(|i| i.id == id);

    let out = env.run(&["images", "delete", "a.png", "--yes"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.png is the image of a.png") && err.contains("--force"),
        "{}",
        text(&out)
    );
    assert!(has(&env, "a.png"), "nothing deleted without --force");

    let out = env
        .run(&["images", "delete", "a.png", "--yes", "--force", "--dry-run"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(has(&env, "a.png"), "nothing deleted by a dry run");

    let out = env
        .run(&["images", "delete", "a.png", "--yes", "--force"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop working"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("marked for upload by the next migrate"),
        "{}",
        text(&out)
    );
    assert!(!has(&env, "a.png"));
    let row = env.ledger_rows()["a.png"].clone();
    assert_eq!(row.image_id, None, "the ledger no longer points at it");
    assert_eq!(row.url, None);

    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert!(has(&env, "a.png"), "uploaded again");
    let row = env.ledger_rows()["a.png"].clone();
    assert_eq!(row.image_id.as_deref(), Some("a.png"));
    assert_eq!(row.state, cfimg::ledger::State::Uploaded);
}
