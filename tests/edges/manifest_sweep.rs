//! The sweep of stale manifest-line records after a whole pass (issue 20.3): the keys of
//! the bad and repeated lines a pass met are held on disk, not in memory, and the sweep
//! still removes exactly the records of lines that were fixed or deleted.

use serde_json::Value;

use crate::common::origin::Origin;
use crate::common::{TestEnv, png, text};

/// The keys of `failures --all`, sorted.
async fn failure_keys(env: &TestEnv) -> Vec<String> {
    let out = env.run(&["failures", "--all", "--json"]).await;
    let v =
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let mut keys: Vec<String> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f["key"].as_str().map(str::to_string))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_drops_exactly_the_records_of_fixed_and_deleted_lines() {
    let env = TestEnv::new().await;
    let origin = Origin::start().await;
    for (i, name) in ["a.png", "b.png"].iter().enumerate() {
        origin.put(name, png(400 + i as u32, 2000));
    }
    let list = env.dir.path().join("urls.txt");
    let run = |content: String| {
        std::fs::write(&list, content).unwrap();
        let list = list.clone();
        let env = &env;
        async move {
            env.run(&["migrate", "--manifest", list.to_str().unwrap(), "--json"])
                .await
        }
    };
    let (a, b) = (origin.img("a.png"), origin.img("b.png"));
    let kept_bad = "htp:/kept/typo.png";
    let gone_bad = "htp:/fixed/typo.png";
    let other_bad = "{not a url";

    // Lines 1-2 good; 3-5 bad; 6 and 7 repeats of line 1, 8 a repeat of line 2, and
    // several hundred more repeats of line 1 after them.
    let repeats = format!("{a}\n").repeat(300);
    let first = format!("{a}\n{b}\n{kept_bad}\n{gone_bad}\n{other_bad}\n{a}\n{a}\n{b}\n{repeats}");
    let out = run(first).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let before = failure_keys(&env).await;
    let bad: Vec<&String> = before
        .iter()
        .filter(|k| k.starts_with("bad line #"))
        .collect();
    assert_eq!(bad.len(), 3, "{before:#?}");
    assert_eq!(before.len(), 3 + 3 + 300, "{before:#?}");

    // The same manifest again: every record stays.
    let out = run(format!(
        "{a}\n{b}\n{kept_bad}\n{gone_bad}\n{other_bad}\n{a}\n{a}\n{b}\n{}",
        format!("{a}\n").repeat(300)
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(failure_keys(&env).await, before);

    // Two bad lines deleted (blank lines keep the numbers), the repeats cut to
    // lines 6 and 8: only the kept bad line's and those two repeats' records remain.
    let out = run(format!("{a}\n{b}\n{kept_bad}\n\n\n{a}\n\n{b}\n")).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let after = failure_keys(&env).await;
    let kept: Vec<&String> = before.iter().filter(|k| after.contains(k)).collect();
    assert_eq!(after.len(), 3, "{after:#?}");
    assert!(after.contains(&"line 6".to_string()), "{after:#?}");
    assert!(after.contains(&"line 8".to_string()), "{after:#?}");
    assert_eq!(
        after.iter().filter(|k| k.starts_with("bad line #")).count(),
        1,
        "{after:#?}"
    );
    // All three are the records from before, not new ones.
    assert_eq!(kept.len(), 3, "{kept:#?} {after:#?}");
}
