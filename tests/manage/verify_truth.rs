//! `cfimg verify` tells the truth (issue 17, item 4): images of sources this ledger has never
//! seen and of other shards are counted, not judged, and an image a row still maps is never
//! an orphan.

use serde_json::Value;

use crate::common::{TestEnv, png, text, write_in};

async fn verify(env: &TestEnv, ledger: &std::path::Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["--ledger", ledger.to_str().unwrap(), "verify", "--json"];
    args.extend_from_slice(extra);
    let out = env.run(&args).await;
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v, text(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_ledger_counts_the_other_shards_images_and_exits_0() {
    let env = TestEnv::new().await;
    for i in 0..24 {
        env.write(&format!("{i}.png"), &png(i, 600));
    }
    let src = env.src.to_str().unwrap().to_string();
    let ledgers: Vec<_> = (0..2)
        .map(|k| env.dir.path().join(format!("cfimg-shard-{k}-of-2.sqlite")))
        .collect();
    for (k, l) in ledgers.iter().enumerate() {
        let out = env
            .run(&[
                "--ledger",
                l.to_str().unwrap(),
                "migrate",
                &src,
                "--shard",
                &format!("{k}/2"),
                "--id-mode",
                "auto",
            ])
            .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let rows0 = cfimg::ledger::Ledger::open_read_only(&ledgers[0])
        .unwrap()
        .unwrap()
        .all_rows()
        .unwrap()
        .len() as u64;
    assert!(rows0 > 0 && rows0 < 24);

    // Told by --shard, and by the name `migrate --shard` gives a shard's ledger.
    for extra in [&["--shard", "0/2"][..], &[][..]] {
        let (code, report, out) = verify(&env, &ledgers[0], extra).await;
        assert_eq!(code, 0, "{out}");
        assert_eq!(report["counts"]["orphans"], 0, "{report}");
        assert_eq!(report["counts"]["unrecorded"], 0, "{report}");
        assert_eq!(
            report["other_sources_or_shards"].as_u64(),
            Some(24 - rows0),
            "{report}"
        );
    }

    // Under another name and without --shard, they are not called orphans either.
    let renamed = env.dir.path().join("zero.sqlite");
    std::fs::copy(&ledgers[0], &renamed).unwrap();
    let out = env
        .run(&["--ledger", renamed.to_str().unwrap(), "verify"])
        .await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(!said.contains("orphan\t"), "{said}");
    assert!(said.contains("--shard K/N"), "{said}");
    assert!(said.contains("ledger rebuild --source"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_of_a_source_this_ledger_never_saw_are_counted_not_judged() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 600));
    let other = env.dir.path().join("other");
    for i in 0..3 {
        write_in(&other, &format!("{i}.png"), &png(10 + i, 600));
    }
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let other_ledger = env.dir.path().join("other.sqlite");
    let out = env
        .run(&[
            "--ledger",
            other_ledger.to_str().unwrap(),
            "migrate",
            other.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let (code, report, out) = verify(&env, &env.ledger, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["counts"]["orphans"], 0, "{report}");
    assert_eq!(report["other_sources_or_shards"], 3, "{report}");
    let out = env.run(&["verify"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("other sources or shards: 3"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_a_rejected_row_still_maps_is_not_an_orphan() {
    let env = TestEnv::new().await;
    env.write("cat.png", &png(1, 600));
    env.write("dog.png", &png(2, 600));
    let (code, _, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    // The file turns into something that is not an image: its row is rejected, and its
    // live image and URL stay (export still shows them).
    env.write("cat.png", b"this is not an image any more");
    let (code, _, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(code, 1, "{}", text(&out));
    let row = env.ledger_rows().remove("cat.png").unwrap();
    assert_eq!(row.state, cfimg::ledger::State::Rejected, "{row:?}");
    let mapped = row
        .image_id
        .clone()
        .expect("the rejected row keeps its image");

    let (code, report, out) = verify(&env, &env.ledger, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["counts"]["orphans"], 0, "{report}");
    let out = env.run(&["verify"]).await;
    let said = text(&out);
    assert!(!said.contains(&format!("orphan\t{mapped}")), "{said}");
    assert!(!said.contains("images delete"), "{said}");
}
