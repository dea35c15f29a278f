//! `cfimg verify` tells the truth (issue 17.4) when rows share an image: with hash ids,
//! identical files map one image, and none of those rows is missing while it is listed.

use serde_json::Value;

use crate::common::{TestEnv, png, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_sharing_one_image_by_hash_ids_are_not_missing() {
    let env = TestEnv::new().await;
    let bytes = png(7, 300);
    for name in ["a.png", "b.png", "c.png"] {
        env.write(name, &bytes);
    }
    let (code, _, out) = env.migrate(&["--id-mode", "hash"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        env.inspect().images.len(),
        1,
        "one image for three identical files"
    );

    for extra in [&[][..], &["--repair"][..]] {
        let mut args = vec!["verify", "--json"];
        args.extend_from_slice(extra);
        let out = env.run(&args).await;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {v}\n{}", text(&out));
        assert_eq!(v["counts"]["missing"], 0, "{args:?}: {v}");
    }
    let rows = env.ledger_rows();
    assert!(
        rows.values()
            .all(|r| r.state == cfimg::ledger::State::Uploaded && r.image_id.is_some()),
        "--repair re-queued nothing: {rows:?}"
    );
}
